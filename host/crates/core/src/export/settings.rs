//! `[[sinks]]` of the operator config: where usage is pushed, how tenants and SKUs are
//! named there, and how the receiver is reached (the address rules of outbound HTTP).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The most events one request carries.
pub const MAX_BATCH: u32 = 10_000;
/// The most tenants (or SKU rules) a sink maps: a marketplace's customers, with room.
pub const MAX_MAPPED: usize = 100_000;
/// The longest one request to a receiver may take.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

/// What the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// CloudEvents 1.0 JSON batches (`application/cloudevents-batch+json`), as OpenMeter
    /// takes them: `id` deterministic, `source` the installation, `subject` the customer.
    Cloudevents,
    /// A JSON array of Kiosk's own usage records, signed the same way.
    Webhook,
    /// Stripe's meter events (`POST /v1/billing/meter_events`, form-encoded, one event a
    /// request, the key as a bearer token, `identifier` and `Idempotency-Key` the event's
    /// id); events older than Stripe's 35 days are parked, not sent.
    Stripe,
    /// AWS Marketplace's `BatchMeterUsage` (`x-amz-json-1.1`, at most 25 records a request,
    /// one record per customer, dimension and hour); records 6 hours old or more are
    /// parked, not sent.
    AwsMarketplace,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Cloudevents => "cloudevents",
            SinkKind::Webhook => "webhook",
            SinkKind::Stripe => "stripe",
            SinkKind::AwsMarketplace => "aws-marketplace",
        }
    }

    /// The most records the receiver takes in one request.
    pub fn max_batch(self) -> u32 {
        match self {
            SinkKind::Cloudevents | SinkKind::Webhook => MAX_BATCH,
            SinkKind::Stripe => 1,
            SinkKind::AwsMarketplace => 25,
        }
    }

    /// How old a record the receiver still takes, in ms (none: any).
    pub fn max_age_ms(self) -> Option<i64> {
        match self {
            SinkKind::Cloudevents | SinkKind::Webhook => None,
            SinkKind::Stripe => Some(35 * 86_400_000),
            SinkKind::AwsMarketplace => Some(6 * 3_600_000),
        }
    }
}

/// Where a new sink starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MeterRule {
    /// Only this app's SKU (absent: the SKU of any app).
    #[serde(default)]
    pub app: Option<String>,
    pub sku: String,
    pub meter: String,
}

/// `[[sinks]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Records per request (absent: 500, or the most the kind takes if fewer).
    #[serde(default)]
    pub batch: Option<u32>,
    /// `0`: one record per event. Else the length of a period in seconds (a divisor of
    /// 3,600, e.g. 3,600 for hourly): one record per customer, meter and period, sent once
    /// the period has ended and `settle-seconds` passed. `aws-marketplace` needs periods.
    #[serde(default)]
    pub aggregate_seconds: Option<u32>,
    /// How long after a period's end its aggregates are sent.
    #[serde(default = "default_settle")]
    pub settle_seconds: u32,
    /// The lag (oldest usage not yet sent) at which the sink is shown as lagging.
    #[serde(default)]
    pub alert_lag_seconds: Option<u64>,
    /// `aws-marketplace`: the product code every record is metered under.
    #[serde(default)]
    pub product_code: Option<String>,
    /// The longest one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// 500 events are ~200 KiB of CloudEvents: one request a receiver takes at once.
const DEFAULT_BATCH: u32 = 500;

/// Five minutes cover a replica's clock behind the others and a group commit in flight
/// (the same margin as a statement's).
fn default_settle() -> u32 {
    300
}

/// A receiver that has not answered in 10 s is retried later.
fn default_timeout() -> u64 {
    10
}

impl SinkSettings {
    /// Records per request.
    pub fn batch(&self) -> u32 {
        self.batch.unwrap_or(DEFAULT_BATCH).min(self.kind.max_batch())
    }

    /// The length of a period in ms (`0`: one record per event).
    pub fn period_ms(&self) -> i64 {
        let default = if self.kind == SinkKind::AwsMarketplace { 3600 } else { 0 };
        i64::from(self.aggregate_seconds.unwrap_or(default)) * 1000
    }

    /// The lag at which the sink is shown as lagging: a third of the time the receiver
    /// still takes a record (AWS: 2 hours of 6), else an hour (a period's length and its
    /// settling are added: they are lag by design).
    pub fn alert_lag_seconds(&self) -> u64 {
        let by_kind = self.kind.max_age_ms().map_or(3600, |ms| (ms / 3000) as u64);
        let by_design = (self.period_ms() / 1000) as u64 + u64::from(self.settle_seconds);
        self.alert_lag_seconds.unwrap_or(by_kind + if self.period_ms() > 0 { by_design } else { 0 })
    }

    /// Checks what can be checked without the network; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("[[sinks]] {:?}", self.name);
        self.check().map_err(|(_, why)| format!("{at}: {why}"))?;
        if self.secret_env.is_some() == self.secret_file.is_some() {
            return Err(format!("{at}: exactly one of secret-env and secret-file names the signing key"));
        }
        Ok(())
    }

    /// Checks a sink set through the API: its key comes with it (sealed in the database),
    /// never from the server's environment or files; the error names the setting
    /// (kebab-case, as in the config file).
    pub fn validate_api(&self) -> Result<(), (&'static str, String)> {
        self.check()?;
        for (set, field) in [
            (self.secret_env.is_some(), "secret-env"),
            (self.secret_file.is_some(), "secret-file"),
            (self.ca_file.is_some(), "ca-file"),
        ] {
            if set {
                return Err((
                    field,
                    format!("{field} is for the config file; a sink set through the API carries its secret"),
                ));
            }
        }
        Ok(())
    }

    /// What every sink must hold; the setting at fault and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = |field: &'static str, why: String| Err((field, why));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("name", "name must be 1-64 lowercase letters, digits or '-'".to_string());
        }
        let url =
            reqwest::Url::parse(&self.endpoint).map_err(|e| ("endpoint", format!("endpoint is not a URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.http => {}
            "http" => return bad("endpoint", "endpoint is plain http; set http = true to allow it".to_string()),
            other => return bad("endpoint", format!("endpoint scheme {other:?} is not http(s)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad("endpoint", "endpoint carries credentials; use secret-env or secret-file".to_string());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return bad("endpoint", "endpoint must not have a query or fragment".to_string());
        }
        // A literal address is never resolved, so it is checked here.
        let Some(host) = url.host_str() else {
            return bad("endpoint", "endpoint has no host".to_string());
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
        if let Some(ip) = literal
            && !self.private_addresses
            && let Some(class) = kiosk_domain::net::non_public(ip)
        {
            return bad("endpoint", format!("endpoint is a {class} address; set private-addresses = true to allow it"));
        }
        let most = self.kind.max_batch();
        if let Some(batch) = self.batch
            && (batch == 0 || batch > most)
        {
            return bad("batch", format!("batch must be 1-{most} for kind {}, found {batch}", self.kind.as_str()));
        }
        if let Some(seconds) = self.aggregate_seconds
            && (seconds > 3600 || (seconds > 0 && 3600 % seconds != 0))
        {
            return bad(
                "aggregate-seconds",
                format!("aggregate-seconds must be 0 or a divisor of 3600, found {seconds}"),
            );
        }
        if self.kind == SinkKind::AwsMarketplace && self.period_ms() == 0 {
            return bad(
                "aggregate-seconds",
                "kind aws-marketplace takes aggregates; aggregate-seconds must not be 0".to_string(),
            );
        }
        if self.kind == SinkKind::Stripe && self.period_ms() > 0 {
            return bad(
                "aggregate-seconds",
                "kind stripe takes one event a request; aggregate-seconds must be 0".to_string(),
            );
        }
        if self.settle_seconds > 3600 {
            return bad("settle-seconds", format!("settle-seconds must be 0-3600, found {}", self.settle_seconds));
        }
        if let Some(seconds) = self.alert_lag_seconds
            && (seconds == 0 || seconds > 400 * 86_400)
        {
            return bad("alert-lag-seconds", format!("alert-lag-seconds must be 1-34560000, found {seconds}"));
        }
        match (&self.product_code, self.kind) {
            (None, SinkKind::AwsMarketplace) => {
                return bad("product-code", "kind aws-marketplace needs product-code".to_string());
            }
            (Some(_), kind) if kind != SinkKind::AwsMarketplace => {
                return bad("product-code", "product-code is for kind aws-marketplace only".to_string());
            }
            (Some(code), _)
                if code.is_empty() || code.len() > 255 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                return bad("product-code", "product-code must be 1-255 letters or digits".to_string());
            }
            _ => {}
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_TIMEOUT_SECONDS {
            return bad(
                "timeout-seconds",
                format!("timeout-seconds must be 1-{MAX_TIMEOUT_SECONDS}, found {}", self.timeout_seconds),
            );
        }
        if self.endpoint.len() > 2048 {
            return bad("endpoint", "endpoint must be at most 2048 characters".to_string());
        }
        if self.customers.len() > MAX_MAPPED || self.meters.len() > MAX_MAPPED {
            let field = if self.meters.len() > MAX_MAPPED { "meters" } else { "customers" };
            return bad(field, format!("{field} holds at most {MAX_MAPPED} entries"));
        }
        let text_ok = |t: &str, most: usize| !t.is_empty() && t.len() <= most && !t.chars().any(char::is_control);
        if let Some(tenant) = self.customers.keys().find(|t| !text_ok(t, 64)) {
            let shown = kiosk_domain::text::sanitize_capped(tenant, 64);
            return bad(
                "customers",
                format!("customers: tenant {shown:?} must be 1-64 characters, no control characters"),
            );
        }
        if let Some(rule) =
            self.meters.iter().find(|r| !text_ok(&r.sku, 128) || !r.app.as_deref().is_none_or(|a| text_ok(a, 200)))
        {
            let shown = kiosk_domain::text::sanitize_capped(&rule.sku, 128);
            return bad(
                "meters",
                format!("meters: the sku {shown:?} or its app must be 1-128 characters, no control characters"),
            );
        }
        for (tenant, customer) in &self.customers {
            if customer.is_empty() || customer.len() > 256 || customer.chars().any(char::is_control) {
                return bad(
                    "customers",
                    format!("customers.{tenant:?} must be 1-256 characters, no control characters"),
                );
            }
        }
        for rule in &self.meters {
            if rule.meter.is_empty() || rule.meter.len() > 256 || rule.meter.chars().any(char::is_control) {
                return bad("meters", format!("the meter of sku {:?} must be 1-256 characters", rule.sku));
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
            None => Err(format!("tenant {tenant:?} has no customer id in the customers of sink {}", self.name)),
        }
    }

    /// The meter of `app`'s `sku`, or why it has none (a rule naming the app wins).
    pub fn meter<'a>(&'a self, app: &str, sku: &'a str) -> Result<&'a str, String> {
        let named = self.meters.iter().find(|r| r.sku == sku && r.app.as_deref() == Some(app));
        match named.or_else(|| self.meters.iter().find(|r| r.sku == sku && r.app.is_none())) {
            Some(rule) => Ok(&rule.meter),
            None if self.sku_is_meter => Ok(sku),
            None => Err(format!("sku {sku:?} of {app} has no meter in the meters of sink {}", self.name)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sink(extra: &str) -> Result<SinkSettings, String> {
        let text = format!(
            "name = \"om\"\nkind = \"cloudevents\"\nendpoint = \"https://billing.example/events\"\n\
             secret-env = \"KIOSK_TEST_SINK_KEY\"\n{extra}"
        );
        let sink: SinkSettings = toml::from_str(&text).map_err(|e| e.to_string())?;
        sink.validate()?;
        Ok(sink)
    }

    fn refused(extra: &str, words: &str) {
        let error = sink(extra).unwrap_err();
        assert!(error.contains(words), "{extra:?}: {error}");
    }

    #[test]
    fn a_sink_is_refused_naming_the_setting() {
        assert!(sink("").is_ok());
        refused("batch = 0", "batch must be 1-10000");
        refused("batch = 10001", "batch must be 1-10000");
        refused("aggregate-seconds = 7", "aggregate-seconds must be 0 or a divisor of 3600");
        refused("aggregate-seconds = 7200", "aggregate-seconds must be 0 or a divisor of 3600");
        refused("settle-seconds = 3601", "settle-seconds must be 0-3600");
        refused("alert-lag-seconds = 0", "alert-lag-seconds must be");
        refused("product-code = \"p1\"", "product-code is for kind aws-marketplace only");
        let kind = |kind: &str, extra: &str| {
            let text = format!(
                "name = \"k\"\nkind = \"{kind}\"\nendpoint = \"https://b.example/\"\nsecret-env = \"K\"\n{extra}"
            );
            toml::from_str::<SinkSettings>(&text).unwrap().validate()
        };
        assert!(kind("aws-marketplace", "").unwrap_err().contains("needs product-code"));
        assert!(kind("aws-marketplace", "product-code = \"a-b\"").unwrap_err().contains("letters or digits"));
        assert!(kind("aws-marketplace", "product-code = \"p1\"\nbatch = 26").unwrap_err().contains("1-25"));
        assert!(
            kind("aws-marketplace", "product-code = \"p1\"\naggregate-seconds = 0")
                .unwrap_err()
                .contains("must not be 0")
        );
        assert!(kind("stripe", "aggregate-seconds = 60").unwrap_err().contains("aggregate-seconds must be 0"));
        assert!(kind("stripe", "batch = 2").unwrap_err().contains("batch must be 1-1 for kind stripe"));
        let aws = toml::from_str::<SinkSettings>(
            "name = \"k\"\nkind = \"aws-marketplace\"\nendpoint = \"https://b.example/\"\nsecret-env = \"K\"\nproduct-code = \"p1\"",
        )
        .unwrap();
        assert_eq!((aws.batch(), aws.period_ms()), (25, 3_600_000), "AWS: 25 records, hourly");
        assert_eq!(aws.alert_lag_seconds(), 7200 + 3600 + 300, "a third of 6 hours, after the hour and its settling");
        refused("timeout-seconds = 0", "timeout-seconds must be 1-300");
        refused("secret-file = \"/k\"", "exactly one of secret-env and secret-file");
        refused("colour = \"red\"", "unknown field `colour`");
        refused("[customers]\ndemo = \"\"", "customers.\"demo\" must be 1-256 characters");
        refused("[[meters]]\nsku = \"s\"\nmeter = \"a\\u0007b\"", "the meter of sku \"s\"");
        for (endpoint, words) in [
            ("http://billing.example/e", "plain http; set http = true"),
            ("ftp://billing.example/e", "scheme \"ftp\""),
            ("https://user:pw@billing.example/e", "carries credentials"),
            ("https://billing.example/e?key=1", "query or fragment"),
            ("https://127.1/e", "loopback address"),
            ("https://2130706433/e", "loopback address"),
            ("https://0x7f.1/e", "loopback address"),
            ("https://[::ffff:169.254.169.254]/e", "address; set private-addresses"),
            ("https://10.0.0.8/e", "private address"),
            ("not a url", "endpoint is not a URL"),
        ] {
            let text = format!("name = \"om\"\nkind = \"webhook\"\nendpoint = \"{endpoint}\"\nsecret-env = \"K\"\n");
            let error = toml::from_str::<SinkSettings>(&text).unwrap().validate().unwrap_err();
            assert!(error.contains(words), "{endpoint}: {error}");
        }
        let named = |name: &str| {
            let text = format!(
                "name = \"{name}\"\nkind = \"webhook\"\nendpoint = \"https://b.example/\"\nsecret-env = \"K\"\n"
            );
            toml::from_str::<SinkSettings>(&text).unwrap().validate()
        };
        assert!(named("Billing").unwrap_err().contains("lowercase"));
        assert!(named(&"a".repeat(65)).is_err());
        assert!(named("").is_err());
        // The operator may open a private receiver, by sink.
        let text = "name = \"om\"\nkind = \"webhook\"\nendpoint = \"https://10.0.0.8/e\"\nsecret-env = \"K\"\n\
                    private-addresses = true\n";
        assert!(toml::from_str::<SinkSettings>(text).unwrap().validate().is_ok());
    }

    #[test]
    fn unmapped_tenants_and_skus_are_named() {
        let s = sink(
            "[customers]\ndemo = \"cus_1\"\n[[meters]]\nsku = \"calls\"\nmeter = \"api_calls\"\n\
             [[meters]]\napp = \"acme/x\"\nsku = \"calls\"\nmeter = \"x_calls\"\n",
        )
        .unwrap();
        assert_eq!(s.customer("demo").unwrap(), "cus_1");
        assert!(
            s.customer("other")
                .unwrap_err()
                .contains("tenant \"other\" has no customer id in the customers of sink om")
        );
        assert_eq!(s.meter("acme/y", "calls").unwrap(), "api_calls");
        assert_eq!(s.meter("acme/x", "calls").unwrap(), "x_calls", "a rule naming the app wins");
        assert!(s.meter("acme/y", "rows").unwrap_err().contains("sku \"rows\" of acme/y has no meter"));
        let open = sink("tenant-is-customer = true\nsku-is-meter = true").unwrap();
        assert_eq!(open.customer("other").unwrap(), "other");
        assert_eq!(open.meter("acme/y", "rows").unwrap(), "rows");
    }

    #[test]
    fn a_short_or_missing_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let mut s = sink("").unwrap();
        s.secret_env = None;
        s.secret_file = Some(short);
        assert!(s.secret().unwrap_err().contains("at least 16 bytes"));
        s.secret_file = Some(dir.path().join("absent"));
        assert!(s.secret().unwrap_err().contains("cannot be read"));
        s.secret_file = None;
        s.secret_env = Some("KIOSK_TEST_SINK_KEY_NEVER_SET".into());
        assert!(s.secret().unwrap_err().contains("KIOSK_TEST_SINK_KEY_NEVER_SET is not set"));
    }
}
