//! Budget Pacing: flags campaigns that over- or under-spend against plan.
//!
//! Operation `evaluate` takes a campaign's budget, flight length and daily spend rows,
//! compares the spend so far with the straight-line plan and answers `over`, `under` or
//! `on-track` using the tenant's configured `threshold`. The host meters one
//! `pacing-check` per successful call; the app meters `rows-scanned` itself and reports
//! the number of distinct campaigns it watched (`campaigns-monitored`) per usage window.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit/app@0.1.0",
    world: "app",
});

use exports::kiosk::app::calls;
use exports::kiosk::app::lifecycle;
use exports::kiosk::app::usage;
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use kiosk::app::{key_value, log, metering};
use pacing::{Alerts, Channel, Config};
use serde::Deserialize;

mod pacing;

struct BudgetPacing;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EvaluateInput {
    campaign_id: String,
    budget: f64,
    flight_days: u32,
    daily_spend: Vec<f64>,
}

fn err(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

fn parse_config(config: &str) -> Result<Config, AppError> {
    pacing::parse_config(config).map_err(app_error)
}

fn app_error(r: pacing::Refusal) -> AppError {
    err(r.code, r.message)
}

fn kv<T>(r: Result<T, key_value::KvError>) -> Result<T, AppError> {
    r.map_err(|e| err("storage", format!("key-value storage failed: {e:?}")))
}

/// The key under which the app remembers the non-secret settings it needs per call.
/// (Secrets such as `apiKey` stay with the host, which keeps them encrypted.)
const SETTINGS_KEY: &str = "settings";

#[derive(serde::Serialize, Deserialize)]
struct Settings {
    threshold: f64,
    /// The alert routing without its secret (`signingSecret` is never serialised).
    #[serde(default)]
    alerts: Alerts,
}

fn remember(config: &str) -> Result<(), AppError> {
    let config = parse_config(config)?;
    let settings = serde_json::to_vec(&Settings { threshold: config.threshold, alerts: config.alerts })
        .map_err(|e| err("internal", e.to_string()))?;
    kv(key_value::set(SETTINGS_KEY, &settings))
}

fn stored_settings() -> Result<Settings, AppError> {
    let raw =
        kv(key_value::get(SETTINGS_KEY))?.ok_or_else(|| err("not-installed", "no settings stored; install first"))?;
    serde_json::from_slice(&raw).map_err(|e| err("corrupt-state", e.to_string()))
}

fn evaluate(input: &str) -> Result<String, AppError> {
    let config = stored_settings()?;
    let input: EvaluateInput =
        serde_json::from_str(input).map_err(|e| err("invalid-input", format!("input is not valid: {e}")))?;
    let pacing::Verdict { status, spent, planned, deviation, rows } =
        pacing::judge(input.budget, input.flight_days, &input.daily_spend, config.threshold).map_err(app_error)?;
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
        "threshold": config.threshold,
        "rowsScanned": rows,
    });
    if status != "on-track" && config.alerts.channel != Channel::None {
        answer["alert"] = serde_json::json!(config.alerts);
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
        parse_config(&config).map(|_| ())
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
