//! The operator's registry watches: create, list, read (with the most recent tag
//! outcomes), delete. The core polls them (`kiosk_core::watch`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::PageQuery;
use super::{ApiError, ApiResult, Caller, Json, Page, Path, Problem, Query, Shared};
use kiosk_core::records::{TagOutcome, TagOutcomeRow, WatchRow};
use kiosk_core::watch::{RECENT_OUTCOMES, WatchRequest};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(create_watch, list_watches)).routes(routes!(get_watch, delete_watch))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewWatch {
    /// `host/repository` (no tag), on a registry the operator configured, under a
    /// repository prefix assigned there to the app's partner.
    reference: String,
    /// `partner/name`: the app the repository's tags are versions of (never inferred
    /// from the repository: a repository's path need not be the app's id).
    app: String,
    /// Seconds between polls: at least the operator's `watch.min-interval-seconds`
    /// (default 60), at most 86400; default 300.
    #[serde(default, deserialize_with = "super::optional_integer")]
    #[schema(value_type = Option<i64>)]
    interval_seconds: Option<i64>,
}

/// What a poll found when it last ran.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LastPoll {
    at_ms: i64,
    /// Tags the registry listed.
    tags: i64,
    /// Of which not semantic versions (ignored, not recorded).
    ignored: i64,
    /// Why the tags could not be listed (Kiosk's words), or that the repository does not
    /// exist yet.
    error: Option<String>,
    /// Consecutive polls that could not list the tags (the next poll backs off).
    failures: i64,
}

/// What became of a tag the watch took.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum Outcome {
    /// Registered as a version of the app.
    Registered,
    /// Refused (bad signature, manifest, …): never retried.
    Refused,
    /// Failed transiently (registry unreachable): retried at a later poll.
    Retrying,
}

/// A tag's outcome.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TagOutcomeView {
    tag: String,
    outcome: Outcome,
    /// The problem `type` an API registration of the tag answered (refused or retrying).
    problem: Option<String>,
    /// The registration, or why it failed, in the words an API registration gives.
    detail: String,
    attempts: i64,
    at_ms: i64,
    /// When a retrying tag is tried again (not before).
    retry_at_ms: Option<i64>,
}

/// A watched repository.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct WatchView {
    id: String,
    /// `host/repository`.
    reference: String,
    /// `partner/name`.
    app: String,
    interval_seconds: i64,
    created_ms: i64,
    /// When the watch is next due.
    next_poll_ms: i64,
    last_poll: Option<LastPoll>,
    /// The most recent tag outcomes, newest first (at most 50; `GET /v1/watches/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<TagOutcomeView>>,
}

fn view(w: WatchRow, tags: Option<Vec<TagOutcomeRow>>) -> WatchView {
    WatchView {
        reference: format!("{}/{}", w.host, w.repository),
        last_poll: w.polled_ms.map(|at_ms| LastPoll {
            at_ms,
            tags: w.last_tags,
            ignored: w.last_ignored,
            error: w.last_error.clone(),
            failures: w.failures,
        }),
        id: w.id,
        app: w.app,
        interval_seconds: w.interval_ms / 1000,
        created_ms: w.created_ms,
        next_poll_ms: w.next_poll_ms,
        tags: tags.map(|rows| {
            rows.into_iter()
                .map(|t| TagOutcomeView {
                    outcome: match t.outcome {
                        TagOutcome::Registered => Outcome::Registered,
                        TagOutcome::Refused => Outcome::Refused,
                        TagOutcome::Retrying => Outcome::Retrying,
                    },
                    retry_at_ms: (t.outcome == TagOutcome::Retrying).then_some(t.retry_ms),
                    problem: t.problem.map(|p| format!("urn:kiosk:problem:{p}")),
                    tag: t.tag,
                    detail: t.detail,
                    attempts: t.attempts,
                    at_ms: t.at_ms,
                })
                .collect()
        }),
    }
}

#[utoipa::path(post, path = "/v1/watches", tag = "operator", request_body = NewWatch,
    responses((status = 201, description = "watching; the first poll is due at once", body = WatchView),
              (status = 404, description = "`not-found`: no such partner", body = Problem),
              (status = 409, description = "`watch-exists` (the repository is watched for the app) or `too-many-watches`", body = Problem),
              (status = 422, description = "`invalid-reference`, `invalid-app`, `invalid-interval`, `layout-not-allowed`, or `registry-not-allowed` (a registry the operator did not configure, or a repository outside the partner's prefixes there)", body = Problem)))]
async fn create_watch(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<NewWatch>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let interval_seconds = match body.interval_seconds {
        None => None,
        Some(n) => Some(u64::try_from(n).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-interval",
                format!("intervalSeconds {n} is out of range: it must be positive"),
            )
            .field("intervalSeconds")
        })?),
    };
    let request = WatchRequest { reference: body.reference, app: body.app, interval_seconds };
    let row = s.create_watch(request, &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(view(row, None))))
}

#[utoipa::path(get, path = "/v1/watches", tag = "operator", params(PageQuery),
    responses((status = 200, description = "the watches, by id", body = Page<WatchView>)))]
async fn list_watches(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let rows = s.watches(q.after.as_deref().unwrap_or(""), limit + 1).await?;
    let page = Page::of(rows, limit, |w| w.id.clone());
    Ok(axum::Json(Page { items: page.items.into_iter().map(|w| view(w, None)).collect(), next: page.next }))
}

#[utoipa::path(get, path = "/v1/watches/{id}", tag = "operator",
    responses((status = 200, description = "the watch with its most recent tag outcomes", body = WatchView),
              (status = 404, description = "`not-found`: no such watch", body = Problem)))]
async fn get_watch(State(s): State<Shared>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let row = s.watch(&id).await?;
    let tags = s.tag_outcomes(&id, RECENT_OUTCOMES).await?;
    Ok(axum::Json(view(row, Some(tags))))
}

#[utoipa::path(delete, path = "/v1/watches/{id}", tag = "operator",
    responses((status = 204, description = "no longer watched (the versions it registered stay)"),
              (status = 404, description = "`not-found`: no such watch", body = Problem)))]
async fn delete_watch(State(s): State<Shared>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_watch(&id, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
