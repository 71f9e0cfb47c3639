//! Outbound HTTP of `kiosk:app@0.2.0` apps: where egress is decided and made.
//!
//! Three layers, each only narrowing: the manifest declares destinations
//! (`AppEgress`, built once per version in `Runtime::prepare`), the operator's
//! `[egress]` allows, denies and alone opens private addresses by name (`Egress`, one
//! per runtime), the tenant switches an installation's egress off or has its own URL
//! (`InstallationEgress`, per call from the core). `gate::CallEgress` is the
//! `WasiHttpHooks` of one call's Store: it judges each request against the three,
//! substitutes bound secrets, counts and bounds it, and sends it through the app's
//! pooled client, whose `connect::Connector` resolves once, checks every address and
//! connects to the checked one. Nothing here touches the database; what a call did
//! (log lines, metered egress) goes back to the runtime in an `EgressRecord`.

mod body;
pub mod connect;
mod gate;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmtime_wasi_http::WasiBody;

use self::connect::{ConnectPolicy, Connector, Resolve};
use self::settings::EgressSettings;
use kiosk_domain::egress::{EgressUnit, Outbound, Target};
use kiosk_domain::manifest::Manifest;
use kiosk_domain::net::Destination;

pub(crate) use self::gate::CallEgress;
pub use self::gate::EgressRecord;

/// The egress of a runtime: the operator's policy, the resolver, TLS roots, one pooled
/// client per app and the per-tenant bounds.
pub struct Egress {
    policy: Arc<ConnectPolicy>,
    clients: Mutex<HashMap<String, Client<Connector, WasiBody>>>,
    tenants: Mutex<HashMap<String, TenantState>>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("settings", &self.policy.settings).finish_non_exhaustive()
    }
}

/// Most apps whose pooled clients are kept; past it the pools start over (connections
/// are a cache, never state).
const MAX_CLIENTS: usize = 1_024;

impl Egress {
    /// Egress under `settings`, resolving names with `resolver`; reads each host rule's
    /// CA file now, so a bad file stops the start with its name.
    pub fn new(settings: EgressSettings, resolver: Arc<dyn Resolve>) -> Result<Self, String> {
        settings.validate()?;
        let web_tls = connect::tls_config(None)?;
        let mut host_tls = Vec::with_capacity(settings.hosts.len());
        for rule in &settings.hosts {
            host_tls.push(match &rule.ca_file {
                None => None,
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("egress.hosts {}: ca-file {}: {e}", rule.host, path.display()))?;
                    Some(
                        connect::tls_config(Some(&pem))
                            .map_err(|e| format!("egress.hosts {}: ca-file {}: {e}", rule.host, path.display()))?,
                    )
                }
            });
        }
        let mocks = settings.mocks.iter().map(|m| m.parse()).collect::<Result<Vec<_>, _>>()?;
        let policy = Arc::new(ConnectPolicy { settings, resolver, web_tls, host_tls, mocks });
        Ok(Self { policy, clients: Mutex::default(), tenants: Mutex::default() })
    }

    /// The operator's settings.
    pub fn settings(&self) -> &EgressSettings {
        &self.policy.settings
    }

    /// The pooled client of `app` (of `partner`).
    fn client(&self, app: &str, partner: &str) -> Client<Connector, WasiBody> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(app) {
            return c.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let settings = &self.policy.settings;
        let connector = Connector { policy: self.policy.clone(), partner: Arc::from(partner) };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(settings.idle_connection_seconds))
            .pool_max_idle_per_host(8)
            .http1_max_headers(settings.max_headers as usize)
            .http1_max_buf_size((settings.max_header_bytes as usize).max(8 * 1024))
            .retry_canceled_requests(false)
            .set_host(false)
            .build(connector);
        clients.insert(app.to_string(), client.clone());
        client
    }

    /// Takes a place for one request of `tenant` (rate and concurrency), or why not.
    fn admit_tenant(self: &Arc<Self>, tenant: &str) -> Result<TenantPermit, String> {
        let settings = &self.policy.settings;
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if tenants.len() > 100_000 {
            tenants.retain(|_, t| t.in_flight > 0);
        }
        let state = tenants.entry(tenant.to_string()).or_insert_with(|| TenantState {
            in_flight: 0,
            tokens: f64::from(settings.tenant_requests_per_second),
            at: now,
        });
        let rate = f64::from(settings.tenant_requests_per_second);
        state.tokens = (state.tokens + now.duration_since(state.at).as_secs_f64() * rate).min(rate);
        state.at = now;
        if state.in_flight >= settings.tenant_max_concurrent {
            return Err(format!(
                "tenant {tenant} has {} outbound requests in flight, the operator's limit (egress.tenant-max-concurrent)",
                settings.tenant_max_concurrent
            ));
        }
        if state.tokens < 1.0 {
            return Err(format!(
                "tenant {tenant} is over {} outbound requests per second (egress.tenant-requests-per-second)",
                settings.tenant_requests_per_second
            ));
        }
        state.tokens -= 1.0;
        state.in_flight += 1;
        Ok(TenantPermit { egress: self.clone(), tenant: tenant.to_string() })
    }
}

struct TenantState {
    in_flight: u32,
    tokens: f64,
    at: Instant,
}

/// A tenant's place for one request, given back when dropped.
pub(crate) struct TenantPermit {
    egress: Arc<Egress>,
    tenant: String,
}

impl Drop for TenantPermit {
    fn drop(&mut self) {
        let mut tenants = self.egress.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tenants.get_mut(&self.tenant) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }
}

/// What one app version declares (the manifest's layer), judged once.
#[derive(Debug, Clone, Default)]
pub struct AppEgress {
    pub entries: Vec<Outbound>,
    /// Egress-metered SKUs: (destination, SKU id, unit).
    pub(crate) skus: Vec<(Destination, String, EgressUnit)>,
}

impl AppEgress {
    /// The manifest's outbound layer.
    pub fn of(manifest: &Manifest) -> Self {
        let entries = manifest.outbound();
        let skus = manifest
            .skus
            .iter()
            .filter_map(|s| {
                let o = s.outbound.as_ref()?;
                Some((Destination::parse(&o.destination).ok()?, s.id.clone(), o.per))
            })
            .collect();
        Self { entries, skus }
    }

    /// The config pointers of URLs the tenant sets (`configUrl` entries).
    pub fn config_urls(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match &e.target {
            Target::ConfigUrl(p) => Some(p.as_str()),
            Target::Fixed(_) => None,
        })
    }

    /// Whether any entry binds a secret (the core then opens the installation's).
    pub fn binds_secrets(&self) -> bool {
        self.entries.iter().any(|e| !e.secrets.is_empty())
    }
}

/// The tenant's layer for one installation, handed to the runtime per call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct InstallationEgress {
    /// The operator switched outbound HTTP off over the API, for every partner or for
    /// this app's.
    pub operator_disabled: bool,
    /// Hosts the operator denies over the API (every partner's, and this partner's).
    pub operator_deny: Vec<kiosk_domain::net::HostPattern>,
    /// `false`: the tenant switched this installation's outbound HTTP off.
    pub enabled: bool,
    /// The declared entries the tenant kept (`Target::key`); `None`: all of them.
    pub kept: Option<Vec<String>>,
    /// The destinations set in the configuration at each `configUrl` pointer (the
    /// origin of the URL; any path below it), or why the value is not one.
    pub config_urls: BTreeMap<String, Result<Destination, String>>,
    /// Secret configuration values by JSON pointer (strings only: a header carries text).
    pub secrets: BTreeMap<String, String>,
}

impl InstallationEgress {
    /// The destination a URL set in the configuration denotes: `https://host[:port]`
    /// and any path; the host a DNS name (never an address literal).
    pub fn destination_of_url(url: &str) -> Result<Destination, String> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let Some(rest) = rest else {
            return Err("the URL must start with https:// or http://".into());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let scheme = &url[..url.len() - rest.len()];
        let authority = &rest[..end];
        if authority.starts_with("*.") {
            return Err("the URL's host may not be a wildcard".into());
        }
        Destination::parse(&format!("{scheme}{authority}"))
    }
}
