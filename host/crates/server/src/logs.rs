//! Installation logs: the lines an installation's calls wrote (the WIT `log` import and
//! the guest's stderr, a last line naming a trap or a limit), kept in the database by
//! the core, so every replica serves them. Read by the installation's tenant and the
//! operator, and by the app's partner for installations of its own apps only.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, Caller, Page, Path, Problem, Query, Shared};
use kiosk_core::records::{LogLineRow, Principal};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(tenant_logs)).routes(routes!(partner_logs))
}

/// `?since=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Only lines after this cursor (exclusive): an item's `cursor`, or the `next` of
    /// the previous page. Absent: from the oldest line kept.
    #[param(pattern = "^[0-9]{1,18}$")]
    since: Option<String>,
    /// Most lines on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl LogQuery {
    /// The cursor (`admin::cursor`); absent: from the oldest line kept.
    fn since(&self) -> ApiResult<i64> {
        match self.since.as_deref() {
            Some(since) => super::admin::cursor("since", since, "a cursor from this log"),
            None => Ok(0),
        }
    }
}

/// One log line.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LogLineView {
    /// This line's cursor: pass it as `since` to read the lines after it.
    cursor: String,
    /// ms since the Unix epoch.
    at_ms: i64,
    /// The call that wrote it (the `callId` of its invoke answer or problem).
    call_id: String,
    /// `validate-config`, `install`, `configure`, `upgrade`, `uninstall`,
    /// `invoke:<operation>` or `report`.
    operation: String,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    level: String,
    /// Sanitised text (control and bidi-override characters stripped); stderr lines start
    /// with `stderr: `.
    message: String,
}

fn view(l: LogLineRow) -> LogLineView {
    LogLineView {
        cursor: l.seq.to_string(),
        at_ms: l.at_ms,
        call_id: l.call_id,
        operation: l.operation,
        level: l.level,
        message: l.message,
    }
}

async fn page(s: &Shared, row: &kiosk_core::records::InstallationRow, q: &LogQuery) -> ApiResult<Page<LogLineView>> {
    let since = q.since()?;
    let limit = super::admin::page_limit(q.limit)?;
    let lines = s.logs(row, since, limit + 1).await?;
    Ok(Page::of(lines.into_iter().map(view).collect(), limit, |l: &LogLineView| l.cursor.clone()))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}/logs", tag = "tenant", params(LogQuery),
    responses((status = 200, description = "the installation's log lines after `since`, oldest first; `next` is set while more lines follow", body = Page<LogLineView>),
              (status = 400, description = "`invalid-query`: a `since` that is not a cursor, a `limit` out of 1-1000", body = Problem),
              (status = 404, description = "`not-found`: no such installation of this tenant", body = Problem)))]
async fn tenant_logs(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<impl IntoResponse> {
    // The installation's tenant, or the operator.
    match &caller.0 {
        Principal::Operator => {}
        _ => caller.tenant(&tenant)?,
    }
    let row = s.installation(&tenant, &id).await?;
    Ok(axum::Json(page(&s, &row, &q).await?))
}

#[utoipa::path(get, path = "/v1/partners/{partner}/apps/{name}/installations/{id}/logs", tag = "partner", params(LogQuery),
    responses((status = 200, description = "the log lines of an installation of the partner's app, after `since`, oldest first; `next` is set while more lines follow", body = Page<LogLineView>),
              (status = 400, description = "`invalid-query`: a `since` that is not a cursor, a `limit` out of 1-1000", body = Problem),
              (status = 404, description = "`not-found`: no such installation of this app (another partner's app, or none)", body = Problem)))]
async fn partner_logs(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name, id)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let row = s.installation_of_app(&partner, &name, &id).await?;
    Ok(axum::Json(page(&s, &row, &q).await?))
}
