//! Usage (SPEC §7): partner batches, and usage reads for tenants, partners and the operator.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Caller, Json, Path, Problem, Query, Shared, error};
pub use kiosk_api::usage::MAX_BATCH_RECORDS;
use kiosk_api::usage::{PartnerUsageBatch, UsageReport, UsageResults};
pub use kiosk_core::usage::export_id;
use kiosk_core::usage::{UsageRead, UsageScope};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    use utoipa_axum::router::UtoipaMethodRouterExt;
    OpenApiRouter::new()
        .routes(
            routes!(partner_post_usage)
                .layer(axum::extract::DefaultBodyLimit::max(error::USAGE_BATCH_BODY_LIMIT_BYTES)),
        )
        .routes(routes!(partner_usage))
        .routes(routes!(tenant_usage))
        .routes(routes!(operator_usage))
}

#[utoipa::path(post, path = "/v1/partners/{partner}/usage", tag = "partner", request_body = PartnerUsageBatch,
    responses((status = 200, description = "one result per record: recorded, duplicate, conflict or refused with a reason", body = UsageResults),
              (status = 413, description = "`body-too-large`: over 8 MiB", body = Problem),
              (status = 422, description = "`too-many-records`: over 20,000 records", body = Problem)))]
async fn partner_post_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(batch): Json<PartnerUsageBatch>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    Ok(axum::Json(s.submit_partner_usage(&partner, batch.records).await?))
}

/// One CSV field per RFC 4180: a field holding a comma, a quote or a line break is
/// quoted, with its quotes doubled (records end with CRLF).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\r', '\n']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.to_string() }
}

#[cfg(test)]
mod csv_tests {
    #[test]
    fn fields_with_commas_quotes_and_line_breaks_are_quoted() {
        assert_eq!(super::csv_field("plain-slug"), "plain-slug");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\"\r\nbye"), "\"say \"\"hi\"\"\r\nbye\"");
    }
}

/// Periods of a usage read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents `UsageQuery::granularity`
pub(crate) enum Granularity {
    Hour,
    Day,
}

/// Formats of a usage read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents `UsageQuery::format`
pub(crate) enum UsageFormat {
    Json,
    Csv,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
struct UsageQuery {
    /// Start of the period, ms since the epoch, at least 0 (default: 30 days ago).
    #[param(minimum = 0)]
    from_ms: Option<i64>,
    /// End of the period, exclusive (default: now + 5 min); at most 400 days after
    /// `fromMs` by hour, 10 years by day.
    to_ms: Option<i64>,
    /// `hour` or `day` (default `hour`).
    #[param(value_type = Option<Granularity>)]
    granularity: Option<String>,
    /// `json` (default) or `csv`: CSV gives one line per record with its id.
    #[param(value_type = Option<UsageFormat>)]
    format: Option<String>,
    /// Also emit zero records for every installed (tenant, app, SKU) in idle periods (at
    /// most 100,000 of them: subscriptions × periods).
    zeros: Option<bool>,
}

async fn usage_report(s: &AppState, q: UsageQuery, scope: UsageScope<'_>) -> ApiResult<axum::response::Response> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-query",
                format!("format {other:?}: use json or csv"),
            )
            .field("format"));
        }
    };
    let read =
        UsageRead { from_ms: q.from_ms, to_ms: q.to_ms, granularity: q.granularity, zeros: q.zeros.unwrap_or(false) };
    let report = s.usage_report(&read, scope).await?;
    if csv {
        let field = csv_field;
        let mut out = String::from("id,period_start_ms,tenant,app,sku,quantity\r\n");
        for r in &report.usage {
            out.push_str(&format!(
                "{},{},{},{},{},{}\r\n",
                r.id,
                r.period_start_ms,
                field(&r.tenant),
                field(&r.app),
                field(&r.sku),
                r.quantity
            ));
        }
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(axum::Json(report).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", tag = "tenant", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn tenant_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    usage_report(&s, q, UsageScope::Tenant(&tenant)).await
}

#[utoipa::path(get, path = "/v1/partners/{partner}/usage", tag = "partner", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn partner_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    usage_report(&s, q, UsageScope::Partner(&partner)).await
}

#[utoipa::path(get, path = "/v1/usage", tag = "operator", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn operator_usage(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    usage_report(&s, q, UsageScope::All).await
}
