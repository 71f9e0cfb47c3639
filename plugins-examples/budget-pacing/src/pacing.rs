//! What Budget Pacing decides, apart from any host interface: its configuration, the
//! evaluation's input and the verdict. Shared by 1.4 (`kiosk:app@0.1.0`, no network,
//! this crate) and 1.5 (`kiosk:app@0.2.0`, `../budget-pacing-online`, which fetches the
//! spend rows and delivers webhook alerts), so both judge a campaign alike.

use serde::Deserialize;

/// A refusal: the app error's code and message.
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

pub fn refusal(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub threshold: f64,
    pub api_key: String,
    #[serde(default)]
    pub alerts: Alerts,
}

/// Where a flagged campaign's alert goes.
#[derive(Deserialize, serde::Serialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alerts {
    #[serde(default)]
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Never serialised: an answer or stored settings never carry it.
    #[serde(default, skip_serializing)]
    pub signing_secret: Option<String>,
}

#[derive(Deserialize, serde::Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    None,
    Email,
    Webhook,
}

/// Parses and checks the configuration beyond what its schema says.
pub fn parse_config(config: &str) -> Result<Config, Refusal> {
    let config: Config = serde_json::from_str(config)
        .map_err(|e| refusal("invalid-config", format!("configuration is not valid: {e}")))?;
    if !(0.0..=1.0).contains(&config.threshold) {
        return Err(refusal("invalid-config", "threshold must be between 0 and 1"));
    }
    if config.api_key.trim().is_empty() {
        return Err(refusal("invalid-config", "apiKey must not be empty"));
    }
    let alerts = &config.alerts;
    if alerts.channel != Channel::None && alerts.recipient.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(refusal("invalid-config", "alerts.recipient is required when alerts.channel is not none"));
    }
    if alerts.channel == Channel::Webhook && alerts.signing_secret.is_none() {
        return Err(refusal("invalid-config", "alerts.signingSecret is required for webhook alerts"));
    }
    Ok(config)
}

/// A campaign's pacing: spend so far against the straight-line plan.
pub struct Verdict {
    pub status: &'static str,
    pub spent: f64,
    pub planned: f64,
    pub deviation: f64,
    pub rows: u64,
}

/// Judges `daily_spend` (one row per day of the flight so far) against `budget` over
/// `flight_days`, flagging a deviation beyond `threshold`.
pub fn judge(budget: f64, flight_days: u32, daily_spend: &[f64], threshold: f64) -> Result<Verdict, Refusal> {
    if flight_days == 0 {
        return Err(refusal("invalid-input", "flightDays must be positive"));
    }
    if daily_spend.len() > flight_days as usize {
        return Err(refusal("invalid-input", "more dailySpend rows than flightDays"));
    }
    let rows = daily_spend.len() as u64;
    let spent: f64 = daily_spend.iter().sum();
    let planned = budget * rows as f64 / f64::from(flight_days);
    let deviation = if planned > 0.0 { spent / planned - 1.0 } else { 0.0 };
    let status = if deviation > threshold {
        "over"
    } else if deviation < -threshold {
        "under"
    } else {
        "on-track"
    };
    Ok(Verdict { status, spent, planned, deviation, rows })
}
