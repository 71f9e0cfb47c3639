//! The operator's egress policy over the API (`/v1/egress`): the config file's
//! `[egress]` as it stands (read-only here), and the layer below it the API sets, for
//! every partner or per partner — egress off, or hosts denied. Only narrowing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, Caller, Json, Path, Problem, Shared};
use kiosk_core::records::EgressPolicyRow;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, put_every_partner, delete_every_partner))
        .routes(routes!(put_partner, delete_partner))
}

/// A host rule of the config file.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct FileHostRule {
    host: String,
    /// Only these partners' apps (absent: any that declares it).
    partners: Option<Vec<String>>,
    private_addresses: bool,
    http: bool,
    /// Whether a CA file is trusted for it besides the web's roots.
    extra_ca: bool,
}

/// The config file's `[egress]` (changed by editing the file and restarting).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct FilePolicy {
    enabled: bool,
    only_listed: bool,
    deny: Vec<String>,
    hosts: Vec<FileHostRule>,
}

/// A policy set over the API.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PolicyView {
    /// The partner whose apps it governs; absent: every partner's.
    #[serde(skip_serializing_if = "Option::is_none")]
    partner: Option<String>,
    /// `false`: no app it governs sends any request.
    enabled: bool,
    /// Hosts (`api.example.com`, `*.example.com`) no app it governs reaches.
    deny: Vec<String>,
    updated_ms: i64,
}

fn view(row: EgressPolicyRow) -> PolicyView {
    PolicyView {
        partner: (!row.scope.is_empty()).then_some(row.scope),
        enabled: row.enabled,
        deny: row.deny,
        updated_ms: row.updated_ms,
    }
}

/// The operator's whole egress policy: the file's and the API's layers.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EgressPolicy {
    config: FilePolicy,
    /// The API's policy for every partner, if set.
    every_partner: Option<PolicyView>,
    /// The API's policies per partner, by partner.
    partners: Vec<PolicyView>,
}

/// A policy to set: egress on or off, and the hosts denied.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    enabled: bool,
    /// Host names, `*.` at most as the first label (never an address).
    #[serde(default)]
    #[schema(max_items = 256)]
    deny: Vec<String>,
}

#[utoipa::path(get, path = "/v1/egress", tag = "operator",
    responses((status = 200, description = "the config file's [egress] and the policies set over the API", body = EgressPolicy)))]
async fn get_policy(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let file = &s.config().egress;
    let config = FilePolicy {
        enabled: file.enabled,
        only_listed: file.only_listed,
        deny: file.deny.iter().map(ToString::to_string).collect(),
        hosts: file
            .hosts
            .iter()
            .map(|r| FileHostRule {
                host: r.host.to_string(),
                partners: r.partners.clone(),
                private_addresses: r.private_addresses,
                http: r.http,
                extra_ca: r.ca_file.is_some(),
            })
            .collect(),
    };
    let mut every_partner = None;
    let mut partners = Vec::new();
    for row in s.egress_policies().await? {
        if row.scope.is_empty() {
            every_partner = Some(view(row));
        } else {
            partners.push(view(row));
        }
    }
    Ok(axum::Json(EgressPolicy { config, every_partner, partners }))
}

#[utoipa::path(put, path = "/v1/egress", tag = "operator", request_body = PolicyBody,
    responses((status = 200, description = "set for every partner's apps; applies from their next call", body = PolicyView),
              (status = 422, description = "`invalid-host`: a denied host is not a host name (field `deny/i` names it)", body = Problem)))]
async fn put_every_partner(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<PolicyBody>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let row = s.set_egress_policy(None, body.enabled, body.deny, &caller.0.actor()).await?;
    Ok(axum::Json(view(row)))
}

#[utoipa::path(delete, path = "/v1/egress", tag = "operator",
    responses((status = 204, description = "removed: the config file's [egress] alone governs"),
              (status = 404, description = "`not-found`: none was set", body = Problem)))]
async fn delete_every_partner(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_egress_policy(None, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/egress/partners/{partner}", tag = "operator", request_body = PolicyBody,
    responses((status = 200, description = "set for the partner's apps (under the every-partner policy); applies from their next call", body = PolicyView),
              (status = 404, description = "`not-found`: no such partner", body = Problem),
              (status = 422, description = "`invalid-host`: a denied host is not a host name (field `deny/i` names it)", body = Problem)))]
async fn put_partner(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(body): Json<PolicyBody>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let row = s.set_egress_policy(Some(&partner), body.enabled, body.deny, &caller.0.actor()).await?;
    Ok(axum::Json(view(row)))
}

#[utoipa::path(delete, path = "/v1/egress/partners/{partner}", tag = "operator",
    responses((status = 204, description = "removed"),
              (status = 404, description = "`not-found`: none was set for the partner", body = Problem)))]
async fn delete_partner(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_egress_policy(Some(&partner), &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
