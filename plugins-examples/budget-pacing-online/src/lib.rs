//! Budget Pacing 1.5: flags campaigns that over- or under-spend against plan, as 1.4
//! does (`../budget-pacing`, the same judgement in `pacing.rs`), and now calls out
//! (`kiosk:app@0.2.0`):
//!
//! - An `evaluate` input without `dailySpend` has its rows read from Acme's reporting API
//!   (`GET https://reporting.acme.example/v1/campaigns/{id}/daily-spend`, answered with
//!   `{"dailySpend": [..]}`) with the tenant's `apiKey`.
//! - A flagged campaign's alert is posted to the tenant's webhook
//!   (`alerts.channel = "webhook"`, `alerts.recipient` the URL), with the tenant's
//!   `signingSecret` as `Authorization: Bearer …`.
//!
//! The app never holds either secret: the host gives it `{kiosk-secret:/apiKey}` and
//! `{kiosk-secret:/alerts/signingSecret}` in their place, and writes the real values into
//! the requests it sends to the destinations the manifest binds them to. So the app keeps
//! its whole configuration in key-value storage, placeholders included.
//!
//! The host meters `pacing-check` per successful call and `reporting-requests` per
//! request answered by the reporting API; the app meters `rows-scanned` and reports
//! `campaigns-monitored` per usage window.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit/app@0.2.0",
    world: "app",
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});

#[path = "../../budget-pacing/src/pacing.rs"]
mod pacing;

mod http;

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use kiosk::app::{key_value, log, metering};
use pacing::Channel;
use serde::{Deserialize, Serialize};
use wasip2::http::types::Method;

/// Acme's reporting API (declared in the manifest, with `apiKey` bound to it).
const REPORTING_API: &str = "https://reporting.acme.example";

struct BudgetPacing;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EvaluateInput {
    campaign_id: String,
    budget: f64,
    flight_days: u32,
    /// The spend rows; read from the reporting API when absent.
    #[serde(default)]
    daily_spend: Option<Vec<f64>>,
}

fn err(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

fn app_error(r: pacing::Refusal) -> AppError {
    err(r.code, r.message)
}

fn kv<T>(r: Result<T, key_value::KvError>) -> Result<T, AppError> {
    r.map_err(|e| err("storage", format!("key-value storage failed: {e:?}")))
}

const SETTINGS_KEY: &str = "settings";

/// What each call needs of the configuration. The secrets are the host's placeholders,
/// so keeping them here keeps nothing secret.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    threshold: f64,
    api_key: String,
    alerts: pacing::Alerts,
    signing_secret: Option<String>,
}

fn remember(config: &str) -> Result<(), AppError> {
    let config = pacing::parse_config(config).map_err(app_error)?;
    let settings = Settings {
        threshold: config.threshold,
        api_key: config.api_key,
        signing_secret: config.alerts.signing_secret.clone(),
        alerts: config.alerts,
    };
    let bytes = serde_json::to_vec(&settings).map_err(|e| err("internal", e.to_string()))?;
    kv(key_value::set(SETTINGS_KEY, &bytes))
}

fn stored_settings() -> Result<Settings, AppError> {
    let raw =
        kv(key_value::get(SETTINGS_KEY))?.ok_or_else(|| err("not-installed", "no settings stored; install first"))?;
    serde_json::from_slice(&raw).map_err(|e| err("corrupt-state", e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpendAnswer {
    daily_spend: Vec<f64>,
}

/// The campaign's daily spend rows, from the reporting API.
fn fetch_spend(settings: &Settings, campaign: &str) -> Result<Vec<f64>, AppError> {
    let url = format!("{REPORTING_API}/v1/campaigns/{}/daily-spend", http::segment(campaign));
    let auth = format!("Bearer {}", settings.api_key);
    let headers = [("authorization", auth.as_str()), ("accept", "application/json")];
    let response = http::send(Method::Get, &url, &headers, None)
        .map_err(|e| err("reporting-api", format!("the reporting API could not be reached: {e}")))?;
    if response.status != 200 {
        return Err(err("reporting-api", format!("the reporting API answered {}", response.status)));
    }
    let answer: SpendAnswer = serde_json::from_slice(&response.body)
        .map_err(|e| err("reporting-api", format!("the reporting API's answer is not daily spend: {e}")))?;
    log::log(log::Level::Info, &format!("read {} spend rows of campaign {campaign}", answer.daily_spend.len()));
    Ok(answer.daily_spend)
}

/// Posts the alert to the tenant's webhook; what happened, for the answer. A failed
/// delivery does not fail the evaluation (the verdict stands; the tenant sees why).
fn deliver(settings: &Settings, alert: &serde_json::Value) -> serde_json::Value {
    let Some(url) = settings.alerts.recipient.as_deref() else {
        return serde_json::json!({"delivered": false, "error": "no webhook URL is configured"});
    };
    let auth = format!("Bearer {}", settings.signing_secret.as_deref().unwrap_or_default());
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = alert.to_string();
    match http::send(Method::Post, url, &headers, Some(body.as_bytes())) {
        Ok(r) if (200..300).contains(&r.status) => serde_json::json!({"delivered": true, "status": r.status}),
        Ok(r) => {
            log::log(log::Level::Warn, &format!("the webhook answered {}", r.status));
            serde_json::json!({"delivered": false, "status": r.status})
        }
        Err(e) => {
            log::log(log::Level::Warn, &format!("the webhook could not be reached: {e}"));
            serde_json::json!({"delivered": false, "error": e})
        }
    }
}

fn evaluate(input: &str) -> Result<String, AppError> {
    let settings = stored_settings()?;
    let input: EvaluateInput =
        serde_json::from_str(input).map_err(|e| err("invalid-input", format!("input is not valid: {e}")))?;
    let (rows_given, source) = match input.daily_spend {
        Some(rows) => (rows, "input"),
        None => (fetch_spend(&settings, &input.campaign_id)?, "reporting-api"),
    };
    let pacing::Verdict { status, spent, planned, deviation, rows } =
        pacing::judge(input.budget, input.flight_days, &rows_given, settings.threshold).map_err(app_error)?;
    if rows > 0 {
        metering::record_usage("rows-scanned", rows)
            .map_err(|e| err("metering", format!("could not meter rows: {e:?}")))?;
    }
    kv(key_value::set(&format!("campaign/{}", input.campaign_id), status.as_bytes()))?;
    log::log(log::Level::Info, &format!("campaign {} is {status} ({:+.1}%)", input.campaign_id, deviation * 100.0));
    let mut answer = serde_json::json!({
        "campaignId": input.campaign_id,
        "status": status,
        "spent": spent,
        "planned": planned,
        "deviation": deviation,
        "threshold": settings.threshold,
        "rowsScanned": rows,
        "spendFrom": source,
    });
    if status != "on-track" && settings.alerts.channel != Channel::None {
        let mut alert = serde_json::json!(settings.alerts);
        if settings.alerts.channel == Channel::Webhook {
            let payload = serde_json::json!({
                "app": "acme/budget-pacing",
                "campaignId": input.campaign_id,
                "status": status,
                "deviation": deviation,
                "spent": spent,
                "planned": planned,
            });
            alert["delivery"] = deliver(&settings, &payload);
        }
        answer["alert"] = alert;
    }
    Ok(answer.to_string())
}

impl lifecycle::Guest for BudgetPacing {
    fn install(_ctx: CallContext, config: String) -> Result<(), AppError> {
        remember(&config)?;
        log::log(log::Level::Info, "installed");
        Ok(())
    }

    fn validate_config(_ctx: CallContext, config: String) -> Result<(), AppError> {
        let config = pacing::parse_config(&config).map_err(app_error)?;
        if config.alerts.channel == Channel::Webhook
            && !config.alerts.recipient.as_deref().is_some_and(|r| r.starts_with("https://"))
        {
            return Err(err("invalid-config", "alerts.recipient must be an https:// URL for webhook alerts"));
        }
        Ok(())
    }

    fn configure(_ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        remember(&new)
    }

    fn upgrade(_ctx: CallContext, from_version: String, config: String) -> Result<(), AppError> {
        remember(&config)?;
        log::log(log::Level::Info, &format!("upgraded from {from_version}"));
        Ok(())
    }

    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

impl calls::Guest for BudgetPacing {
    fn invoke(_ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        match operation.as_str() {
            "evaluate" => evaluate(&input),
            other => Err(err("unknown-operation", format!("no operation named {other:?}"))),
        }
    }
}

impl usage::Guest for BudgetPacing {
    fn report(ctx: CallContext, window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        let campaigns = kv(key_value::list_keys("campaign/"))?.len() as u64;
        if campaigns == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![UsageRecord {
            sku: "campaigns-monitored".into(),
            quantity: campaigns,
            idempotency_key: format!("{}:campaigns-monitored:{}", ctx.installation_id, window.start_ms),
        }])
    }
}

export!(BudgetPacing);
