//! `[[sinks]]` of the operator config: where usage is pushed, how tenants and SKUs are
//! named there, and how the receiver is reached (the address rules of outbound HTTP).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The most events one request carries.
pub const MAX_BATCH: u32 = 10_000;
/// The longest one request to a receiver may take.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

/// What the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// CloudEvents 1.0 JSON batches (`application/cloudevents-batch+json`), as OpenMeter
    /// takes them: `id` deterministic, `source` the installation, `subject` the customer.
    Cloudevents,
    /// A JSON array of Kiosk's own usage records, signed the same way.
    Webhook,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Cloudevents => "cloudevents",
            SinkKind::Webhook => "webhook",
        }
    }
}

/// Where a new sink starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkStart {
    /// With usage recorded from the sink's first start on (a new billing system is not
    /// sent the past unless asked: a replay sends it).
    #[default]
    Now,
    /// With the whole ledger.
    Beginning,
}

/// `[[sinks.meters]]`: the name a SKU has in the billing system.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MeterRule {
    /// Only this app's SKU (absent: the SKU of any app).
    #[serde(default)]
    pub app: Option<String>,
    pub sku: String,
    pub meter: String,
}

/// `[[sinks]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkSettings {
    /// Lowercase letters, digits and `-`, at most 64: the sink's name in the API.
    pub name: String,
    pub kind: SinkKind,
    /// `https://host[:port]/path` the batches are POSTed to.
    pub endpoint: String,
    /// Plain `http://` is allowed to this endpoint.
    #[serde(default)]
    pub http: bool,
    /// The endpoint may resolve to loopback, private or link-local addresses (as
    /// `[[egress.hosts]] private-addresses`: only the operator says so, by sink).
    #[serde(default)]
    pub private_addresses: bool,
    /// PEM file of CA certificates the receiver's certificate may chain to, besides the
    /// web's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Environment variable holding the HMAC-SHA256 key the bodies are signed with.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding that key (its first line).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Tenant id → the billing system's customer id.
    #[serde(default)]
    pub customers: BTreeMap<String, String>,
    /// A tenant absent from `customers` is its own customer id (else it is parked).
    #[serde(default)]
    pub tenant_is_customer: bool,
    /// SKU → the billing system's meter.
    #[serde(default)]
    pub meters: Vec<MeterRule>,
    /// A SKU no rule names is its own meter (else it is parked).
    #[serde(default)]
    pub sku_is_meter: bool,
    #[serde(default)]
    pub start: SinkStart,
    /// Events per request.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// The longest one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// 500 events are ~200 KiB of CloudEvents: one request a receiver takes at once.
fn default_batch() -> u32 {
    500
}

/// A receiver that has not answered in 10 s is retried later.
fn default_timeout() -> u64 {
    10
}

impl SinkSettings {
    /// Checks what can be checked without the network; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("[[sinks]] {:?}", self.name);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("{at}: name must be 1-64 lowercase letters, digits or '-'"));
        }
        let url = reqwest::Url::parse(&self.endpoint).map_err(|e| format!("{at}: endpoint is not a URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.http => {}
            "http" => return Err(format!("{at}: endpoint is plain http; set http = true to allow it")),
            other => return Err(format!("{at}: endpoint scheme {other:?} is not http(s)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{at}: endpoint carries credentials; use secret-env or secret-file"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{at}: endpoint must not have a query or fragment"));
        }
        // A literal address is never resolved, so it is checked here.
        let Some(host) = url.host_str() else {
            return Err(format!("{at}: endpoint has no host"));
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
        if let Some(ip) = literal
            && !self.private_addresses
            && let Some(class) = kiosk_domain::net::non_public(ip)
        {
            return Err(format!("{at}: endpoint is a {class} address; set private-addresses = true to allow it"));
        }
        if self.secret_env.is_some() == self.secret_file.is_some() {
            return Err(format!("{at}: exactly one of secret-env and secret-file names the signing key"));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(format!("{at}: batch must be 1-{MAX_BATCH}, found {}", self.batch));
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(format!(
                "{at}: timeout-seconds must be 1-{MAX_TIMEOUT_SECONDS}, found {}",
                self.timeout_seconds
            ));
        }
        for (tenant, customer) in &self.customers {
            if customer.is_empty() || customer.len() > 256 || customer.chars().any(char::is_control) {
                return Err(format!("{at}: customers.{tenant:?} must be 1-256 characters, no control characters"));
            }
        }
        for rule in &self.meters {
            if rule.meter.is_empty() || rule.meter.len() > 256 || rule.meter.chars().any(char::is_control) {
                return Err(format!("{at}: the meter of sku {:?} must be 1-256 characters", rule.sku));
            }
        }
        Ok(())
    }

    /// The signing key, read from where the operator put it.
    pub fn secret(&self) -> Result<Vec<u8>, String> {
        let at = format!("[[sinks]] {:?}", self.name);
        let key = match (&self.secret_env, &self.secret_file) {
            (Some(var), _) => std::env::var(var).map_err(|_| format!("{at}: secret-env {var} is not set"))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("{at}: secret-file {} cannot be read ({})", path.display(), e.kind()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, None) => return Err(format!("{at}: no signing key")),
        };
        if key.len() < 16 {
            return Err(format!("{at}: the signing key must be at least 16 bytes"));
        }
        Ok(key.into_bytes())
    }

    /// The customer id of `tenant`, or why it has none.
    pub fn customer<'a>(&'a self, tenant: &'a str) -> Result<&'a str, String> {
        match self.customers.get(tenant) {
            Some(customer) => Ok(customer),
            None if self.tenant_is_customer => Ok(tenant),
            None => Err(format!("tenant {tenant:?} has no customer id in sink {:?}'s customers", self.name)),
        }
    }

    /// The meter of `app`'s `sku`, or why it has none (a rule naming the app wins).
    pub fn meter<'a>(&'a self, app: &str, sku: &'a str) -> Result<&'a str, String> {
        let named = self.meters.iter().find(|r| r.sku == sku && r.app.as_deref() == Some(app));
        match named.or_else(|| self.meters.iter().find(|r| r.sku == sku && r.app.is_none())) {
            Some(rule) => Ok(&rule.meter),
            None if self.sku_is_meter => Ok(sku),
            None => Err(format!("sku {sku:?} of {app} has no meter in sink {:?}'s meters", self.name)),
        }
    }
}
