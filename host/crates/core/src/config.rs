//! The operator configuration file (TOML). Every table refuses unknown keys by name;
//! every default is in code with its reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use kiosk_distribution::artifact::SizeCaps;
use kiosk_distribution::registry::{RegistrySettings, TransferSettings};
use kiosk_distribution::trust::TrustStore;
use kiosk_domain::limits::SandboxLimits;

/// `kiosk.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OperatorConfig {
    /// Where Kiosk keeps blobs, pins and compiled components
    /// (default: `$XDG_DATA_HOME/kiosk`, else `~/.local/share/kiosk`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub sandbox: SandboxLimits,
    #[serde(default)]
    pub admission: kiosk_runtime::admission::AdmissionSettings,
    /// Outbound HTTP of 0.2.0 apps: the operator's layer and its bounds.
    #[serde(default)]
    pub egress: kiosk_runtime::egress::settings::EgressSettings,
    #[serde(default)]
    pub artifacts: SizeCaps,
    #[serde(default)]
    pub transfer: TransferSettings,
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
    #[serde(default)]
    pub partners: Vec<PartnerSettings>,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub usage: UsageSettings,
    #[serde(default)]
    pub logs: LogSettings,
    #[serde(default)]
    pub watch: WatchSettings,
    /// Where usage is pushed (billing systems), each with its mapping.
    #[serde(default)]
    pub sinks: Vec<crate::export::settings::SinkSettings>,
    #[serde(default)]
    pub export: ExportSettings,
}

/// `[export]`: what sinks set through the API may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExportSettings {
    /// Hosts (`billing.example`, or `*.example` for its subdomains) the endpoint of a sink
    /// set through the API may name. None by default: a stolen operator token cannot send
    /// the ledger anywhere the operator did not name in the file.
    pub api_hosts: Vec<String>,
}

impl ExportSettings {
    /// Whether a sink set through the API may send to `host`.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.api_hosts.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            match allowed.strip_prefix("*.") {
                Some(parent) => host.strip_suffix(parent).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => host == allowed,
            }
        })
    }
}

/// `[logs]`: how much of each installation's log the database keeps (the bytes kept
/// are `[sandbox] log-buffer-bytes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogSettings {
    /// Lines kept per installation; the oldest go first.
    pub max_lines_per_installation: u64,
    /// Bytes of log messages kept across all installations; above it, a sweep every
    /// `LOG_SWEEP_SECONDS` removes the oldest lines of any installation first.
    pub max_bytes_total: u64,
}

/// The smallest `[logs] max-bytes-total`: one installation's default buffer.
pub const MIN_LOG_BYTES_TOTAL: u64 = 256 * 1024;

/// Most lines one installation keeps (bytes are bounded apart); at least 1.
pub const MAX_LOG_LINES_CEILING: u64 = 100_000;

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            // Several pages of diagnosis, and a bounded scan when each call trims.
            max_lines_per_installation: 1000,
            // 1 GiB: without it, 10k busy installations at the 256 KiB default would
            // keep 2.5 GiB of lines.
            max_bytes_total: 1 << 30,
        }
    }
}

/// `[watch]`: registry watches and automatic upgrades.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WatchSettings {
    /// The shortest `intervalSeconds` a watch may be created with (1-86400).
    pub min_interval_seconds: u64,
    /// How often each replica runs the automatic-upgrade pass, in seconds (1-86400).
    pub upgrade_pass_seconds: u64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            // A registry is asked for a repository's tags at most once a minute per watch.
            min_interval_seconds: 60,
            // A version registered through the API reaches policy installations within a
            // minute; a pass is one query when nothing is new.
            upgrade_pass_seconds: 60,
        }
    }
}

impl WatchSettings {
    /// The longest interval a watch may have, and the longest pass period: a day.
    pub const MAX_SECONDS: u64 = 86_400;

    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in
            [("min-interval-seconds", self.min_interval_seconds), ("upgrade-pass-seconds", self.upgrade_pass_seconds)]
        {
            if !(1..=Self::MAX_SECONDS).contains(&value) {
                return Err(format!("watch.{name} is {value} but must be 1-{}", Self::MAX_SECONDS));
            }
        }
        Ok(())
    }
}

/// `[usage]`: metering rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UsageSettings {
    /// How old a reported usage record may be, in hours.
    pub acceptance_window_hours: u64,
    /// Length of the windows `usage.report` is collected for, in seconds.
    pub window_seconds: u64,
    /// How long a replica holds a window while collecting it, in seconds.
    pub lease_seconds: u64,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            // Partners batch daily; three days covers a weekend outage on their side.
            acceptance_window_hours: 72,
            // Hourly matches the export's granularity.
            window_seconds: 3600,
            // Far longer than a report call (bounded by the sandbox timeout).
            lease_seconds: 60,
        }
    }
}

/// `[server]`: how `kiosk serve` listens and stores. Flags and `KIOSK_*` variables
/// override these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerSettings {
    /// Address to listen on (default 127.0.0.1:8080: loopback until the operator opens it).
    pub listen: Option<std::net::SocketAddr>,
    /// `sqlite://FILE` or `postgres://…` (default: SQLite in the data directory).
    pub database: Option<String>,
    /// The operator bootstrap token (else KIOSK_OPERATOR_TOKEN, else generated and
    /// printed once on first start).
    pub operator_token: Option<String>,
    /// 64 hex digits: the key sealing secret config values (else KIOSK_SECRETS_KEY,
    /// else `secrets.key` in the data directory, created on first start).
    pub secrets_key: Option<String>,
    /// How the server writes its log, `text` or `json` (`--log-format` and
    /// KIOSK_LOG_FORMAT override it; default text: what a person at a terminal reads).
    pub log_format: Option<LogFormat>,
    /// How long SIGTERM lets calls in flight run on (each also ends at its own deadline)
    /// before they are stopped, in seconds (`DEFAULT_DRAIN_SECONDS` when unset).
    pub drain_seconds: Option<u64>,
}

/// The longest drain: an hour, beyond any call's deadline.
pub const MAX_DRAIN_SECONDS: u64 = 3_600;

impl ServerSettings {
    /// Kubernetes' default termination grace period: a drain longer than it would be cut
    /// by SIGKILL anyway.
    pub const DEFAULT_DRAIN_SECONDS: u64 = 30;

    /// The drain bound that applies.
    pub fn drain(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_seconds.unwrap_or(Self::DEFAULT_DRAIN_SECONDS))
    }
}

/// How the server's own log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?}: use text or json")),
        }
    }
}

/// A partner and the OpenPGP certificates that may sign its apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartnerSettings {
    pub name: String,
    /// Files of ASCII-armoured or binary public certificates.
    pub certificates: Vec<PathBuf>,
}

impl OperatorConfig {
    /// Reads `path`; errors name the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read operator config {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("operator config {} is not valid", path.display()))?;
        config.validate().map_err(anyhow::Error::msg).with_context(|| format!("operator config {}", path.display()))?;
        // Client certificate files are read now: a missing or mismatched one stops the
        // start, naming the registry and the setting, instead of failing registrations.
        for registry in &config.registries {
            registry.client_identity().with_context(|| format!("operator config {}", path.display()))?;
        }
        Ok(config)
    }

    /// Checks the settings against each other: every table alone, and a usage lease that
    /// outlives the longest report call (else a second replica would take a window whose
    /// report is still running).
    pub fn validate(&self) -> Result<(), String> {
        self.sandbox.validate()?;
        self.admission.validate()?;
        self.egress.validate()?;
        let mut names = std::collections::HashSet::new();
        for sink in &self.sinks {
            sink.validate()?;
            if !names.insert(sink.name.as_str()) {
                return Err(format!("[[sinks]] {:?} is named twice", sink.name));
            }
        }
        let lines = self.logs.max_lines_per_installation;
        if !(1..=MAX_LOG_LINES_CEILING).contains(&lines) {
            return Err(format!(
                "[logs] max-lines-per-installation must be 1..={MAX_LOG_LINES_CEILING}, found {lines}"
            ));
        }
        let total = self.logs.max_bytes_total;
        if !(MIN_LOG_BYTES_TOTAL..=i64::MAX as u64).contains(&total) {
            return Err(format!("[logs] max-bytes-total must be {MIN_LOG_BYTES_TOTAL}..={}, found {total}", i64::MAX));
        }
        self.watch.validate()?;
        if let Some(drain) = self.server.drain_seconds
            && drain > MAX_DRAIN_SECONDS
        {
            return Err(format!("[server] drain-seconds must be 0..={MAX_DRAIN_SECONDS}, found {drain}"));
        }
        for registry in &self.registries {
            registry.validate().map_err(|e| e.message)?;
        }
        let lease_ms = self.usage.lease_seconds.saturating_mul(1000);
        if lease_ms <= self.sandbox.timeout_ms {
            return Err(format!(
                "usage.lease-seconds is {} but must be longer than a call may last (sandbox.timeout-ms = {})",
                self.usage.lease_seconds, self.sandbox.timeout_ms
            ));
        }
        Ok(())
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| {
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".local/share")
            });
            base.join("kiosk")
        })
    }

    /// The configured entry for `host`, if the operator configured one.
    pub fn configured_registry(&self, host: &str) -> Option<&RegistrySettings> {
        self.registries.iter().find(|r| r.host.eq_ignore_ascii_case(host))
    }

    /// The settings for `host`: the configured entry, or HTTPS and anonymous. For the
    /// CLI, whose user is the operator; the partner API takes configured entries only.
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.configured_registry(host)
            .cloned()
            .unwrap_or_else(|| RegistrySettings { host: host.to_string(), ..RegistrySettings::default() })
    }

    /// The partners' certificates as a trust store.
    pub fn trust_store(&self) -> anyhow::Result<TrustStore> {
        use anyhow::Context as _;
        let mut trust = TrustStore::default();
        for partner in &self.partners {
            for path in &partner.certificates {
                let bytes =
                    std::fs::read(path).with_context(|| format!("cannot read certificate {}", path.display()))?;
                trust
                    .add(&partner.name, &bytes)
                    .with_context(|| format!("certificate {} of partner {}", path.display(), partner.name))?;
            }
        }
        Ok(trust)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_global_log_bound_is_checked_and_named() {
        let config: OperatorConfig = toml::from_str("[logs]\nmax-bytes-total = 4096\n").unwrap();
        let refused = config.validate().unwrap_err();
        assert!(refused.contains("[logs] max-bytes-total") && refused.contains("4096"), "{refused}");
        let config: OperatorConfig = toml::from_str("[logs]\nmax-bytes-total = 1048576\n").unwrap();
        config.validate().unwrap();
        assert_eq!(OperatorConfig::default().logs.max_bytes_total, 1 << 30);
        assert!(toml::from_str::<OperatorConfig>("[logs]\nmax-bytes = 1\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_collection_share_outside_a_percent_is_refused_by_name() {
        for bad in [0, 101] {
            let config: OperatorConfig =
                toml::from_str(&format!("[sandbox]\ntenant-collection-share = {bad}\n")).unwrap();
            let refused = config.validate().unwrap_err();
            assert!(refused.contains("sandbox.tenant-collection-share is") && refused.contains(&bad.to_string()));
        }
        let config: OperatorConfig = toml::from_str("[sandbox]\ntenant-collection-share = 100\n").unwrap();
        config.validate().unwrap();
        assert_eq!(OperatorConfig::default().sandbox.tenant_collection_share, 25);
    }

    #[test]
    fn a_drain_past_an_hour_is_refused_and_the_default_is_thirty_seconds() {
        let config: OperatorConfig = toml::from_str("[server]\ndrain-seconds = 3601\n").unwrap();
        assert!(config.validate().unwrap_err().contains("[server] drain-seconds must be 0..=3600, found 3601"));
        assert!(toml::from_str::<OperatorConfig>("[server]\ndrain-seconds = -1\n").is_err(), "negative");
        let config: OperatorConfig = toml::from_str("[server]\ndrain-seconds = 3600\n").unwrap();
        config.validate().unwrap();
        assert_eq!(OperatorConfig::default().server.drain(), std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_client_certificate_file_that_cannot_be_used_stops_the_start() {
        let dir = std::env::temp_dir().join(format!("kiosk-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("kiosk.toml");
        let missing = dir.join("missing-client.pem");
        std::fs::write(
            &config,
            format!(
                "[[registries]]\nhost = \"registry.example:5000\"\nclient-certificate = \"{}\"\nclient-key = \"{}\"\n",
                missing.display(),
                missing.display()
            ),
        )
        .unwrap();
        let refused = format!("{:#}", OperatorConfig::load(&config).unwrap_err());
        assert!(
            refused.contains("registry.example:5000") && refused.contains("client-certificate"),
            "the registry and the setting are named: {refused}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
