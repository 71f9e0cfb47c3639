//! Period statements (issue 29): a tenant's month, or a partner's apps' month, per app
//! and SKU with unit and quantity and the ids a billing system reconciles against, as
//! JSON or CSV (the `csv` crate). Once final, a statement is the same bytes whenever
//! it is regenerated.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::usage::UsageFormat;
use super::{ApiError, ApiResult, Caller, Path, Problem, Query, Shared};
use kiosk_core::statements::{Statement, StatementScope};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(tenant_statement)).routes(routes!(partner_statement))
}

/// `?format=json|csv`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StatementQuery {
    /// `json` (default) or `csv`: one CSV line per statement line, with the statement's id.
    #[param(value_type = Option<UsageFormat>)]
    format: Option<String>,
}

/// One line of a statement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LineBody {
    /// Deterministic: the same statement, tenant, app, SKU and unit give the same id.
    id: String,
    tenant: String,
    app: String,
    sku: String,
    /// As the SKU's version declares it.
    unit: String,
    #[schema(value_type = u64)]
    quantity: u128,
    /// Ledger events summed, and the range of their numbers in the ledger's commit order.
    events: i64,
    first_seq: String,
    last_seq: String,
}

/// A month's statement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct StatementBody {
    /// Deterministic: the same owner and month give the same id.
    id: String,
    /// `tenant` or `partner`.
    scope: String,
    owner: String,
    /// `YYYY-MM` (UTC): the events the ledger recorded in that month.
    period: String,
    from_ms: i64,
    to_ms: i64,
    /// The month ended and settled: the statement no longer changes.
    #[serde(rename = "final")]
    is_final: bool,
    lines: Vec<LineBody>,
}

fn body(s: Statement) -> StatementBody {
    StatementBody {
        id: s.id,
        scope: s.scope.to_string(),
        owner: s.owner,
        period: s.period,
        from_ms: s.from_ms,
        to_ms: s.to_ms,
        is_final: s.is_final,
        lines: s
            .lines
            .into_iter()
            .map(|l| LineBody {
                id: l.id,
                tenant: l.tenant,
                app: l.app,
                sku: l.sku,
                unit: l.unit,
                quantity: l.quantity,
                events: l.events,
                first_seq: l.first_seq.to_string(),
                last_seq: l.last_seq.to_string(),
            })
            .collect(),
    }
}

fn render(s: Statement, format: Option<&str>) -> ApiResult<axum::response::Response> {
    match format {
        None | Some("json") => Ok(axum::Json(body(s)).into_response()),
        Some("csv") => {
            let mut out = csv::Writer::from_writer(Vec::new());
            let fail = |e: csv::Error| ApiError::from(kiosk_core::error::Failure::internal(e));
            out.write_record([
                "statement_id",
                "period",
                "final",
                "line_id",
                "tenant",
                "app",
                "sku",
                "unit",
                "quantity",
                "events",
                "first_seq",
                "last_seq",
            ])
            .map_err(fail)?;
            for l in &s.lines {
                out.write_record([
                    s.id.as_str(),
                    &s.period,
                    if s.is_final { "true" } else { "false" },
                    &l.id,
                    &l.tenant,
                    &l.app,
                    &l.sku,
                    &l.unit,
                    &l.quantity.to_string(),
                    &l.events.to_string(),
                    &l.first_seq.to_string(),
                    &l.last_seq.to_string(),
                ])
                .map_err(fail)?;
            }
            let bytes = out.into_inner().map_err(|e| ApiError::from(kiosk_core::error::Failure::internal(e)))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response())
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-query",
            format!("format {:?}: use json or csv", kiosk_domain::text::sanitize_capped(other, 32)),
        )
        .field("format")),
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/statements/{period}", tag = "tenant", params(StatementQuery),
    responses((status = 200, description = "the tenant's statement of the month `period` (YYYY-MM, UTC; `format=csv`: one CSV line per statement line)",
               content((StatementBody = "application/json"), (String = "text/csv"))),
              (status = 404, description = "`not-found`: not this caller's tenant", body = Problem),
              (status = 422, description = "`invalid-query`: a period that is not YYYY-MM, a format other than json or csv", body = Problem)))]
async fn tenant_statement(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, period)): Path<(String, String)>,
    Query(q): Query<StatementQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    render(s.statement(StatementScope::Tenant(&tenant), &period).await?, q.format.as_deref())
}

#[utoipa::path(get, path = "/v1/partners/{partner}/statements/{period}", tag = "partner", params(StatementQuery),
    responses((status = 200, description = "the statement of the partner's apps for the month `period` (YYYY-MM, UTC), per tenant, app and SKU (`format=csv`: one CSV line per statement line)",
               content((StatementBody = "application/json"), (String = "text/csv"))),
              (status = 404, description = "`not-found`: not this caller's partner", body = Problem),
              (status = 422, description = "`invalid-query`: a period that is not YYYY-MM, a format other than json or csv", body = Problem)))]
async fn partner_statement(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, period)): Path<(String, String)>,
    Query(q): Query<StatementQuery>,
) -> ApiResult<impl IntoResponse> {
    if !matches!(caller.0, kiosk_core::records::Principal::Operator) {
        caller.partner(&partner)?;
    }
    render(s.statement(StatementScope::Partner(&partner), &period).await?, q.format.as_deref())
}
