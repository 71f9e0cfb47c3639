//! The tenant API: installations (install, read, configure, upgrade, uninstall, invoke).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::PageQuery;
use super::{AnyJson, ApiResult, AppState, Caller, Json, JsonObject, Page, Path, Problem, Query, Shared};
use kiosk_core::lifecycle::{InstallRequest, UpgradeRequest};
use kiosk_core::records::InstallationRow;
use kiosk_domain::metering::UsageEvent;
use kiosk_domain::upgrade::UpgradePolicy;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(install))
        .routes(routes!(list_installations))
        .routes(routes!(get_installation))
        .routes(routes!(configure))
        .routes(routes!(upgrade))
        .routes(routes!(set_upgrade_policy))
        .routes(routes!(uninstall))
        .routes(routes!(invoke))
        .routes(routes!(usage_windows))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    /// `partner/name`.
    app: String,
    /// An exact version, or a semver range such as `^1.4`.
    #[serde(default)]
    version: Option<String>,
    /// A track such as `1.4`: the highest version in it.
    #[serde(default)]
    track: Option<String>,
    /// Let a range, a track or no version pick a prerelease (an exact one needs no flag).
    #[serde(default, rename = "includePrerelease")]
    include_prerelease: bool,
    /// The configuration, valid against the version's config schema.
    #[serde(default)]
    #[schema(value_type = Option<JsonObject>)]
    config: Option<Value>,
    /// How far Kiosk upgrades the installation by itself (default `none`).
    #[serde(default, rename = "upgradePolicy")]
    upgrade_policy: Policy,
}

/// How far Kiosk upgrades an installation by itself when a newer version is registered:
/// `none` (never; the default), `patch` (releases of the same major.minor), `minor`
/// (releases of the same major version; for 0.x, of the same minor). Never to a
/// prerelease, a yanked or quarantined version, or down. The upgrade runs the new
/// version's upgrade hook; if it fails, the installation stays on its version and that
/// version is not tried again.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Policy {
    #[default]
    None,
    Patch,
    Minor,
}

impl From<Policy> for UpgradePolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::None => UpgradePolicy::None,
            Policy::Patch => UpgradePolicy::Patch,
            Policy::Minor => UpgradePolicy::Minor,
        }
    }
}

impl From<UpgradePolicy> for Policy {
    fn from(p: UpgradePolicy) -> Self {
        match p {
            UpgradePolicy::None => Policy::None,
            UpgradePolicy::Patch => Policy::Patch,
            UpgradePolicy::Minor => Policy::Minor,
        }
    }
}

/// An installation: its app version and configuration (secret values are never
/// returned, only which are set).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct InstallationView {
    id: String,
    tenant: String,
    app: String,
    version: String,
    config: Value,
    /// JSON pointers of the secret values that are set (their values are never returned).
    secrets_set: Vec<String>,
    created_ms: i64,
    updated_ms: i64,
    /// Bumped by every configure and upgrade; a request that lost a race with another
    /// writer of the installation is a 409 `installation-changed`.
    row_version: i64,
    /// The limits its next call runs under, each with the layer it comes from.
    limits: super::limits::EffectiveLimits,
    upgrade_policy: Policy,
}

async fn view(s: &AppState, row: &InstallationRow) -> ApiResult<InstallationView> {
    let limits = super::limits::effective_view(&s.installation_limits(row).await?);
    Ok(InstallationView {
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        app: row.app.clone(),
        version: row.version.clone(),
        config: serde_json::from_str(&row.config).unwrap_or_default(),
        secrets_set: s.secrets_set(row),
        created_ms: row.created_ms,
        row_version: row.row_version,
        updated_ms: row.updated_ms,
        limits,
        upgrade_policy: row.upgrade_policy.into(),
    })
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations", tag = "tenant", request_body = InstallBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-255 visible ASCII characters, the tenant's own: the same request sent again with the key within \
                       24 h (on any replica) gets the installation the first one created, as it is now \
                       (`Idempotent-Replayed: true`), and installs nothing; the key with another request is 422 \
                       `idempotency-key-reused`.")),
    responses((status = 201, description = "installed (or, with `Idempotent-Replayed: true`, installed by an earlier request with the same key)", body = InstallationView),
              (status = 403, description = "`forbidden`, or the tenant is not entitled to the app", body = Problem),
              (status = 404, description = "`not-found`: no such tenant, app or version", body = Problem),
              (status = 422, description = "`config-invalid` (the configuration against the schema: `errors` name the properties), a version or track that resolves to nothing installable", body = Problem),
              (status = 502, description = "`app-failed`: the app's install hook failed", body = Problem),
              (status = 503, description = "no sandbox slot, or shutting down", body = Problem)))]
async fn install(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<InstallBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let request = InstallRequest {
        app: body.app,
        version: body.version,
        track: body.track,
        include_prerelease: body.include_prerelease,
        config: body.config,
        id: None,
        upgrade_policy: body.upgrade_policy.into(),
    };
    let (row, replayed) = match idempotency_key(&headers)? {
        Some(key) => {
            let keyed = s.install_keyed(&tenant, request, key, &caller.0.actor()).await?;
            (keyed.row, keyed.replayed)
        }
        None => (s.install(&tenant, request, &caller.0.actor()).await?, false),
    };
    Ok(marked_replayed((StatusCode::CREATED, axum::Json(view(&s, &row).await?)).into_response(), replayed))
}

/// `after` is the `id` of the last item of the previous page.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations", tag = "tenant", params(PageQuery),
    responses((status = 200, description = "the tenant's installations by id", body = Page<InstallationView>)))]
async fn list_installations(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    let limit = q.limit()?;
    let after = (tenant.as_str(), q.after.as_deref().unwrap_or(""));
    let rows = s.installations_page(Some(&tenant), None, after, limit + 1).await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in &rows {
        views.push(view(&s, row).await?);
    }
    Ok(axum::Json(Page::of(views, limit, |v: &InstallationView| v.id.clone())))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}", tag = "tenant",
    responses((status = 200, description = "the installation", body = InstallationView),
              (status = 404, description = "`not-found`: no such installation", body = Problem)))]
async fn get_installation(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    Ok(axum::Json(view(&s, &s.installation(&tenant, &id).await?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigureBody {
    /// The new configuration; secret values left out keep their current value.
    #[schema(value_type = JsonObject)]
    config: Value,
}

#[utoipa::path(patch, path = "/v1/tenants/{tenant}/installations/{id}", tag = "tenant", request_body = ConfigureBody,
    responses((status = 200, description = "reconfigured", body = InstallationView),
              (status = 404, description = "`not-found`: no such installation", body = Problem),
              (status = 409, description = "the installation changed meanwhile", body = Problem),
              (status = 422, description = "`config-invalid`: `errors` name the properties", body = Problem),
              (status = 502, description = "`app-failed`: the app's configure hook failed", body = Problem),
              (status = 503, description = "no sandbox slot, or shutting down", body = Problem)))]
async fn configure(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(body): Json<ConfigureBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let row = s.configure(&tenant, &id, body.config, &caller.0.actor()).await?;
    Ok(axum::Json(view(&s, &row).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpgradeBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    track: Option<String>,
    /// Allow moving to a lower version.
    #[serde(default)]
    allow_downgrade: bool,
    /// Allow moving to another major version (for 0.x, another minor).
    #[serde(default)]
    allow_major: bool,
    /// Let a range, a track or no version pick a prerelease.
    #[serde(default)]
    include_prerelease: bool,
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations/{id}/upgrade", tag = "tenant", request_body = UpgradeBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "as for install: the same request sent again with the key within 24 h gets the installation as it \
                       is now (`Idempotent-Replayed: true`) and moves nothing again; the key with another request is \
                       422 `idempotency-key-reused`.")),
    responses((status = 200, description = "upgraded (or downgraded), or, with `Idempotent-Replayed: true`, by an earlier request with the same key", body = InstallationView),
              (status = 403, description = "`forbidden`, or the tenant is no longer entitled to the app", body = Problem),
              (status = 404, description = "`not-found`: no such installation or version", body = Problem),
              (status = 409, description = "`same-version`, or the installation changed meanwhile", body = Problem),
              (status = 422, description = "no installable version matches, a downgrade without `allowDowngrade`, a configuration the new version's schema refuses, or an upgrade the policy refuses", body = Problem),
              (status = 502, description = "`app-failed`: the app's upgrade hook failed", body = Problem),
              (status = 503, description = "no sandbox slot, or shutting down", body = Problem)))]
async fn upgrade(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    Json(body): Json<UpgradeBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let request = UpgradeRequest {
        version: body.version,
        track: body.track,
        allow_downgrade: body.allow_downgrade,
        allow_major: body.allow_major,
        include_prerelease: body.include_prerelease,
    };
    let (row, replayed) = match idempotency_key(&headers)? {
        Some(key) => {
            let keyed = s.upgrade_keyed(&tenant, &id, request, key, &caller.0.actor()).await?;
            (keyed.row, keyed.replayed)
        }
        None => (s.upgrade(&tenant, &id, request, &caller.0.actor()).await?, false),
    };
    Ok(marked_replayed(axum::Json(view(&s, &row).await?).into_response(), replayed))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpgradePolicyBody {
    policy: Policy,
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/installations/{id}/upgrade-policy", tag = "tenant",
    request_body = UpgradePolicyBody,
    responses((status = 200, description = "the policy is set; the next automatic-upgrade pass applies it", body = InstallationView),
              (status = 404, description = "`not-found`: no such installation", body = Problem)))]
async fn set_upgrade_policy(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(body): Json<UpgradePolicyBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let row = s.set_upgrade_policy(&tenant, &id, body.policy.into(), &caller.0.actor()).await?;
    Ok(axum::Json(view(&s, &row).await?))
}

/// The app's uninstall hook, when it refused or failed.
#[derive(Serialize, utoipa::ToSchema)]
struct HookOutcome {
    succeeded: bool,
    detail: String,
}

/// An uninstall whose hook refused or failed (the installation is gone all the same).
#[derive(Serialize, utoipa::ToSchema)]
struct Uninstalled {
    uninstalled: bool,
    hook: HookOutcome,
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/installations/{id}", tag = "tenant",
    responses((status = 204, description = "uninstalled; the app's hook succeeded"),
              (status = 200, description = "uninstalled; the app's hook refused or failed, which is reported here and audited", body = Uninstalled),
              (status = 404, description = "`not-found`: no such installation", body = Problem),
              (status = 409, description = "the installation changed meanwhile", body = Problem)))]
async fn uninstall(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    match s.uninstall(&tenant, &id, &caller.0.actor()).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(detail) => Ok((
            StatusCode::OK,
            axum::Json(Uninstalled { uninstalled: true, hook: HookOutcome { succeeded: false, detail } }),
        )
            .into_response()),
    }
}

/// Where metered usage came from: `host` (one unit per call of an operation a SKU
/// lists), `guest` (the app's `record-usage`), `report` (the app's usage report) or
/// `partner` (the partner usage API).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum Source {
    Host,
    Guest,
    Report,
    Partner,
}

/// Usage one call metered.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MeteredUsage {
    sku: String,
    quantity: u64,
    source: Source,
    /// ms since the Unix epoch.
    at_ms: u64,
}

/// What an operation gave, and the usage the call metered.
#[derive(Serialize, utoipa::ToSchema)]
struct InvokeResult {
    /// The call's id: its lines in the installation's log carry it.
    #[serde(rename = "callId")]
    call_id: String,
    output: AnyJson,
    usage: Vec<MeteredUsage>,
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations/{id}/invoke/{operation}", tag = "tenant",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-255 visible ASCII characters, the tenant's own: a request sent again with the key within 24 h \
                       (on any replica) gets the first answer (same call id and usage) and runs and meters nothing; \
                       the key with another installation, operation or input is 422 `idempotency-key-reused`. A \
                       failed call keeps no answer: retrying it runs it.")),
    request_body(content = AnyJson, description = "the operation's input: any JSON value"),
    responses((status = 200, description = "the operation's output and metered usage; `Idempotent-Replayed: true` when \
                                           it is the answer to an earlier request with the same `Idempotency-Key`",
               body = InvokeResult),
              (status = 404, description = "`not-found`: no such installation or operation", body = Problem),
              (status = 413, description = "`body-too-large`, or `input-too-large` for the app's limits", body = Problem),
              (status = 422, body = Problem, description = "the app refused the input, or the installation cannot run (e.g. quarantined version, entitlement ended)"),
              (status = 429, body = Problem, description = "the tenant's rate or concurrency limit (`Retry-After`)"),
              (status = 502, body = Problem, description = "`app-failed`: the app trapped, ran out of time or memory, or broke its contract"),
              (status = 503, body = Problem, description = "no sandbox slot, or shutting down (`Retry-After`)")))]
async fn invoke(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id, operation)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    Json(input): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let (invoked, replayed) = match idempotency_key(&headers)? {
        Some(key) => {
            let keyed = s.invoke_keyed(&tenant, &id, &operation, &input, key).await?;
            (keyed.invoked, keyed.replayed)
        }
        None => (s.invoke(&tenant, &id, &operation, &input).await?, false),
    };
    let usage = invoked.usage.iter().map(usage_view).collect();
    let body = axum::Json(InvokeResult { call_id: invoked.call_id, output: AnyJson(invoked.output), usage });
    Ok(marked_replayed(body.into_response(), replayed))
}

/// `response` with `Idempotent-Replayed: true` when it answers an earlier request with
/// the same `Idempotency-Key`.
fn marked_replayed(mut response: axum::response::Response, replayed: bool) -> axum::response::Response {
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    response
}

/// The request's `Idempotency-Key`, if it sent one (one only, as text).
fn idempotency_key(headers: &axum::http::HeaderMap) -> ApiResult<Option<&str>> {
    use kiosk_core::idempotency::HEADER;
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let invalid = |why: &str| {
        kiosk_core::error::Failure::unprocessable(kiosk_core::kind::Kind::IdempotencyKeyInvalid, why.to_string())
            .field(HEADER)
    };
    if values.next().is_some() {
        return Err(invalid("Idempotency-Key was sent more than once: send one key").into());
    }
    let key = value.to_str().map_err(|_| invalid("Idempotency-Key must be visible ASCII characters"))?;
    Ok(Some(kiosk_core::idempotency::check_key(key)?))
}

fn usage_view(e: &UsageEvent) -> MeteredUsage {
    use kiosk_domain::metering::UsageSource;
    let source = match e.source {
        UsageSource::Host => Source::Host,
        UsageSource::Guest => Source::Guest,
        UsageSource::Report => Source::Report,
        UsageSource::Partner => Source::Partner,
    };
    MeteredUsage { sku: e.sku.clone(), quantity: e.quantity, source, at_ms: e.at_ms }
}

// --- usage windows ---------------------------------------------------------------------

/// `?before=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    /// Only windows that start before this cursor: the `next` of the previous page (a
    /// window's `startMs`). Absent: from the newest window.
    #[param(pattern = "^[0-9]{1,18}$")]
    before: Option<String>,
    /// Most windows on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl WindowQuery {
    /// The cursor (`admin::cursor`: window starts are ms since the Unix epoch, below
    /// 10^18); absent: from the newest window.
    fn before(&self) -> ApiResult<i64> {
        match self.before.as_deref() {
            Some(before) => super::admin::cursor("before", before, "a window start from this list"),
            None => Ok(i64::MAX),
        }
    }
}

/// One usage window of an installation and how its collection went.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsageWindowView {
    /// The window's start, ms since the Unix epoch (the window is `[usage] window-seconds` long).
    start_ms: i64,
    /// `open` (not collected yet, or waiting for a retry), `collected` or `given-up`.
    state: &'static str,
    /// Failed attempts so far.
    attempts: i64,
    /// What the collection found (records accepted and refused, or why it gave up).
    detail: Option<String>,
    /// The last failed attempt's error.
    last_error: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}/usage-windows", tag = "tenant", params(WindowQuery),
    responses((status = 200, description = "the installation's usage windows newest first, with how each was collected; `next` is set while older windows follow", body = Page<UsageWindowView>),
              (status = 400, description = "`invalid-query`: a `before` that is not a window start, a `limit` out of 1-1000", body = Problem),
              (status = 404, description = "`not-found`: no such installation of this tenant", body = Problem)))]
async fn usage_windows(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    let before = q.before()?;
    let limit = super::admin::page_limit(q.limit)?;
    let row = s.installation(&tenant, &id).await?;
    let windows = s.usage_windows(&row.id, before, limit + 1).await?;
    let views = windows
        .into_iter()
        .map(|w| UsageWindowView {
            start_ms: w.window_start,
            state: match w.done {
                1 => "collected",
                2 => "given-up",
                _ => "open",
            },
            attempts: w.attempts,
            detail: w.detail,
            last_error: w.last_error,
        })
        .collect();
    Ok(axum::Json(Page::of(views, limit, |w: &UsageWindowView| w.start_ms.to_string())))
}
