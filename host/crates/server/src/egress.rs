//! The tenant's layer of an installation's outbound HTTP: what its app will contact,
//! what it receives there, and the tenant's switch (`GET`/`PUT
//! /v1/tenants/{tenant}/installations/{id}/egress`). Before installing, the catalog's
//! version (`capabilities.outbound`) shows the same destinations.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, Caller, Json, Path, Problem, Shared};
use kiosk_core::egress::EgressView;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(get_egress, set_egress))
}

/// One destination the app declares.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DestinationView {
    /// `https://host[:port]` as declared, or `config:<pointer>` for a URL the tenant sets.
    destination: String,
    /// Secrets (JSON pointers of the configuration) the app's requests there receive.
    receives: Vec<String>,
    /// Whether the tenant keeps it (not narrowed away).
    kept: bool,
}

/// An installation's outbound HTTP.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EgressBody {
    /// `false`: the tenant switched the installation's outbound HTTP off.
    enabled: bool,
    destinations: Vec<DestinationView>,
}

fn body(view: EgressView) -> EgressBody {
    EgressBody {
        enabled: view.enabled,
        destinations: view
            .destinations
            .into_iter()
            .map(|(destination, receives, kept)| DestinationView { destination, receives, kept })
            .collect(),
    }
}

/// The tenant's switch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EgressChoice {
    /// `false` switches every outbound request of the installation off.
    enabled: bool,
    /// Keep only these declared destinations (as listed by `GET`); absent: all.
    #[serde(default)]
    #[schema(max_items = 32)]
    destinations: Option<Vec<String>>,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}/egress", tag = "tenant",
    responses((status = 200, description = "what the installation's app may contact, and the tenant's switch", body = EgressBody),
              (status = 404, description = "`not-found`: no such installation", body = Problem)))]
async fn get_egress(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    Ok(axum::Json(body(s.installation_egress(&tenant, &id).await?)))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/installations/{id}/egress", tag = "tenant",
    request_body = EgressChoice,
    responses((status = 200, description = "set; the installation's next call is under it", body = EgressBody),
              (status = 404, description = "`not-found`: no such installation", body = Problem),
              (status = 422, description = "`no-outbound-http`: the app declares no destinations; `invalid-destinations`: one the app does not declare (field names it)", body = Problem)))]
async fn set_egress(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(choice): Json<EgressChoice>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let view = s.set_installation_egress(&tenant, &id, choice.enabled, choice.destinations, &caller.0.actor()).await?;
    Ok(axum::Json(body(view)))
}
