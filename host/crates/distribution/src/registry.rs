//! OCI registries. Pulls (`RegistrySource`) go through Kiosk's own small distribution
//! client on reqwest, so that every hop is Kiosk's decision:
//!
//! - redirects are followed only to the registry itself or to the blob hosts the operator
//!   listed for it, and never from HTTPS to plain HTTP (a custom redirect policy);
//! - a `WWW-Authenticate` token realm is checked before it is fetched: HTTPS (plain HTTP
//!   only for a registry marked insecure), on the registry or one of its listed token
//!   hosts (they receive the registry credentials);
//! - every name is resolved by `GuardedResolver`, which refuses loopback, link-local,
//!   private and other non-public addresses unless the name is `localhost` or the
//!   operator marked the registry `private-addresses`; IP literals never reach a
//!   resolver, and only literals the operator wrote (as the registry, a blob host or a
//!   token host) are ever contacted, so a literal is its own explicit permission;
//! - failures are reported in Kiosk's words (`RemoteFailure`: HTTP status, TLS, DNS,
//!   connection refused, timeout…); remote bodies and error texts go to the server log
//!   only.
//!
//! Every request is bounded by timeouts and retried with exponential backoff and jitter
//! on 429, 5xx and connection errors; blobs are fetched by digest, size-capped and
//! hashed while streaming. Pushes (`publish::push`, the partner's side) use oci-client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use rand::Rng;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::artifact::{ArtifactError, BlobSource, Descriptor, OCI_MANIFEST, Part, check_cap};
use kiosk_domain::digest::Digest;

const USER_AGENT: &str = concat!("kiosk/", env!("CARGO_PKG_VERSION"));
/// Registries redirect a blob once (to storage); five hops is generous.
const MAX_REDIRECTS: usize = 5;
/// A token answer is a few KiB of JSON.
const TOKEN_ANSWER_CAP: u64 = 64 * 1024;

/// Operator settings of one registry (`[[registries]]` in the operator config, or
/// `PUT /v1/registries/{host}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistrySettings {
    /// `host[:port]` as it appears in references.
    pub host: String,
    /// Plain HTTP. Only for registries the operator marks so.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of CA certificates to trust for this registry (in addition to the
    /// system's roots).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// The same, inline (PEM text), as the operator API stores it.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Basic-auth (and token-flow) credentials.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A pre-issued bearer token (instead of username/password).
    #[serde(default)]
    pub token: Option<String>,
    /// Repository prefixes per partner (`acme = ["acme/", "shared/acme-"]`): through the
    /// API a partner registers only from repositories under its prefixes. A partner
    /// without an entry may not use this registry at all.
    #[serde(default)]
    pub partners: BTreeMap<String, Vec<String>>,
    /// Other hosts (`host[:port]`) the registry may redirect downloads to, e.g. its
    /// blob storage. Credentials are never sent there.
    #[serde(default)]
    pub blob_hosts: Vec<String>,
    /// Hosts (`host[:port]`) of the registry's token service (the `WWW-Authenticate`
    /// realm) other than the registry itself. They receive the registry credentials.
    #[serde(default)]
    pub token_hosts: Vec<String>,
    /// The registry's host names may resolve to loopback, link-local or private
    /// addresses (an internal registry). Not needed for IP literals or `localhost`.
    #[serde(default)]
    pub private_addresses: bool,
}

impl RegistrySettings {
    /// Checks the entry on its own: hosts are `host[:port]`, every partner prefix is a
    /// non-empty prefix of repository names.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let error = |field, message| Err(SettingsError { field, message });
        if Authority::parse(&self.host).is_none() {
            return error("host", format!("registry host {:?} must be host[:port]", self.host));
        }
        for (field, hosts) in [("blob-hosts", &self.blob_hosts), ("token-hosts", &self.token_hosts)] {
            for h in hosts {
                if Authority::parse(h).is_none() {
                    return error(field, format!("registry {}: {field} entry {h:?} must be host[:port]", self.host));
                }
            }
        }
        for (partner, prefixes) in &self.partners {
            if partner.is_empty() {
                return error("partners", format!("registry {}: partners has an empty partner name", self.host));
            }
            for p in prefixes {
                if !valid_prefix(p) {
                    return error(
                        "partners",
                        format!(
                            "registry {}: prefix {p:?} of partner {partner:?} must be a non-empty repository name \
                             prefix (lowercase letters, digits, '.', '_', '-', '/'; e.g. \"{partner}/\")",
                            self.host
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether `partner` may register from `repository` of this registry.
    pub fn allows(&self, partner: &str, repository: &str) -> bool {
        self.prefixes(partner).iter().any(|p| !p.is_empty() && repository.starts_with(p.as_str()))
    }

    /// The repository prefixes assigned to `partner` on this registry.
    pub fn prefixes(&self, partner: &str) -> &[String] {
        self.partners.get(partner).map_or(&[], Vec::as_slice)
    }
}

/// A registry entry that does not validate: the setting (kebab-case) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

/// A repository-name prefix an operator may assign: non-empty, the characters of
/// repository names, no empty or dot-dot path segments.
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && !p.contains("//")
        && !p.contains("..")
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
}

/// Timeouts and retries of registry requests.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransferSettings {
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Whole-request bound (one attempt), including reading the body.
    pub request_timeout_ms: u64,
    /// Attempts after the first.
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            // A registry that does not accept a connection in 5 s is down for our purpose.
            connect_timeout_ms: 5_000,
            // A stalled transfer is detected after 30 s without a byte.
            read_timeout_ms: 30_000,
            // A 50 MiB component at 1 MiB/s fits; anything slower is better retried.
            request_timeout_ms: 120_000,
            // Four retries ride out a registry restart without hiding an outage.
            retries: 4,
            backoff_base_ms: 200,
            backoff_max_ms: 10_000,
        }
    }
}

/// `host[:port]`, normalised as a URL authority (lowercase host; a default port is
/// dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Self> {
        if text.is_empty()
            || text.len() > 255
            || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return None;
        }
        let url = Url::parse(&format!("https://{text}/")).ok()?;
        Some(Self { host: url.host_str()?.to_ascii_lowercase(), port: url.port() })
    }

    /// Whether `url` is on this authority (no port: the scheme's default port).
    fn matches(&self, url: &Url) -> bool {
        let default = match url.scheme() {
            "https" => 443,
            "http" => 80,
            _ => return false,
        };
        url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port.unwrap_or(default))
    }
}

/// `scheme://host:port` of a URL, for messages (no path, query or credentials).
fn origin(url: &Url) -> String {
    let host = kiosk_domain::text::sanitize_capped(url.host_str().unwrap_or("?"), 255);
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The hops one registry may make: its own authority, its listed blob and token hosts.
#[derive(Debug)]
struct Guard {
    registry: Authority,
    blob_hosts: Vec<Authority>,
    token_hosts: Vec<Authority>,
    insecure: bool,
}

impl Guard {
    fn scheme_allowed(&self, url: &Url) -> bool {
        url.scheme() == "https" || (url.scheme() == "http" && self.insecure)
    }

    /// Whether a redirect to `next` (after `previous`) may be followed; else why not.
    fn redirect(&self, next: &Url, previous: &[Url]) -> Result<(), String> {
        let target = origin(next);
        if previous.len() > MAX_REDIRECTS {
            return Err(format!("the registry redirected more than {MAX_REDIRECTS} times"));
        }
        if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
            return Err(format!(
                "the registry redirected from HTTPS to plain HTTP ({target}), which Kiosk never follows"
            ));
        }
        if !self.scheme_allowed(next) {
            return Err(format!("the registry redirected to {target}, which is not HTTPS"));
        }
        if self.registry.matches(next) || self.blob_hosts.iter().any(|h| h.matches(next)) {
            return Ok(());
        }
        Err(format!(
            "the registry redirected to {target}, a host the operator has not listed for this registry (blob-hosts)"
        ))
    }

    /// The token realm as a URL, if the rules allow fetching it; else why not.
    fn realm(&self, realm: &str) -> Result<Url, String> {
        let url = Url::parse(realm).map_err(|_| "the registry's token realm is not a URL".to_string())?;
        let target = origin(&url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("the registry's token realm {target} carries credentials, which is refused"));
        }
        if !self.scheme_allowed(&url) {
            return Err(format!("the registry's token realm {target} is not HTTPS, which is refused"));
        }
        if !(self.registry.matches(&url) || self.token_hosts.iter().any(|h| h.matches(&url))) {
            return Err(format!(
                "the registry's token realm {target} is on a host the operator has not listed for this registry \
                 (token-hosts)"
            ));
        }
        Ok(url)
    }
}

/// A refusal made inside reqwest (redirect policy, resolver), found again in the error
/// chain by `classify`.
#[derive(Debug)]
enum Refusal {
    Redirect(String),
    Address(String),
    Dns,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Redirect(words) | Refusal::Address(words) => f.write_str(words),
            Refusal::Dns => f.write_str("the name could not be resolved"),
        }
    }
}

impl std::error::Error for Refusal {}

pub use kiosk_domain::net::non_public;

/// Whether `name` may resolve to non-public addresses without a flag: `localhost`.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The DNS resolver of registry clients: the system's resolver, then the address check.
/// The addresses checked are the addresses connected to (no second lookup).
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow = self.allow_private || is_localhost(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    tracing::warn!(%host, error = %e, "registry host name did not resolve");
                    Vec::new()
                }
            };
            if addrs.is_empty() {
                return Err(Box::new(Refusal::Dns) as Box<dyn std::error::Error + Send + Sync>);
            }
            if !allow && let Some(class) = addrs.iter().find_map(|a| non_public(a.ip())) {
                tracing::warn!(%host, ?addrs, "registry host name resolves to a non-public address; refused");
                return Err(Box::new(Refusal::Address(format!(
                    "{} resolves to a {class} address, which Kiosk does not contact unless the operator marks \
                     the registry private-addresses",
                    kiosk_domain::text::sanitize_capped(&host, 255)
                ))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What went wrong talking to a registry, in Kiosk's words: never a remote body or a
/// remote error text (those go to the server log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The registry answered with this HTTP status.
    Status(u16),
    /// The registry's token service answered with this HTTP status.
    TokenStatus(u16),
    /// The token service's answer held no usable token.
    TokenInvalid,
    Timeout,
    ConnectionRefused,
    Dns,
    Tls {
        certificate: bool,
    },
    /// Kiosk spoke TLS and the registry answered in plain HTTP.
    PlainHttp,
    Connection,
    /// The connection broke off while the answer was being read.
    Interrupted,
    /// A redirect the rules refuse (the words say which rule).
    Redirect(String),
    /// A token realm the rules refuse.
    Realm(String),
    /// A host name that resolves to an address the rules refuse.
    Address(String),
}

fn status_words(code: u16) -> &'static str {
    match code {
        400 => "bad request",
        401 => "not authorized",
        403 => "forbidden",
        404 => "not found",
        429 => "too many requests",
        500..=599 => "server error",
        _ => "unexpected status",
    }
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(code) => write!(f, "the registry answered HTTP {code} ({})", status_words(*code)),
            Self::TokenStatus(code) => {
                write!(f, "the registry's token service answered HTTP {code} ({})", status_words(*code))
            }
            Self::TokenInvalid => f.write_str("the registry's token service answered without a usable token"),
            Self::Timeout => f.write_str("no answer in time (timeout)"),
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::Dns => f.write_str("the host name could not be resolved (DNS)"),
            Self::Tls { certificate: true } => {
                f.write_str("TLS failed: the registry's certificate is not trusted or not valid for it")
            }
            Self::Tls { certificate: false } => f.write_str("TLS handshake failed"),
            Self::PlainHttp => f.write_str(
                "TLS handshake failed: the registry answered in plain HTTP — if this registry is plain HTTP, mark it \
                 insecure (`insecure = true`, or `\"insecure\": true` in PUT /v1/registries/{host})",
            ),
            Self::Connection => f.write_str("the connection failed"),
            Self::Interrupted => f.write_str("the connection broke off during the transfer"),
            Self::Redirect(words) | Self::Realm(words) | Self::Address(words) => f.write_str(words),
        }
    }
}

impl RemoteFailure {
    /// Worth another attempt.
    pub fn transient(&self) -> bool {
        match self {
            Self::Status(code) | Self::TokenStatus(code) => *code == 429 || *code >= 500,
            Self::Timeout | Self::ConnectionRefused | Self::Dns | Self::Connection | Self::Interrupted => true,
            _ => false,
        }
    }

    /// A rule of the operator's allowlist refused a hop (redirect, realm, address).
    pub fn is_policy(&self) -> bool {
        matches!(self, Self::Redirect(_) | Self::Realm(_) | Self::Address(_))
    }

    /// The registry (or its token service) answered and refused (4xx other than 429).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status(c) | Self::TokenStatus(c) if (400..500).contains(c) && *c != 429)
            || *self == Self::TokenInvalid
    }
}

/// A registry request that failed for good.
#[derive(Debug)]
pub struct RemoteError {
    /// `host/repository`.
    pub source_name: String,
    /// What Kiosk was doing (`resolve tag 1.4.34`, `fetch component sha256:…`).
    pub what: String,
    pub failure: RemoteFailure,
    pub attempts: u32,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.source_name, self.what, self.failure)?;
        if self.failure.transient() {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// One failed attempt: the failure in Kiosk's words, and details for the server log.
#[derive(Debug)]
struct Attempt {
    failure: RemoteFailure,
    detail: String,
}

impl Attempt {
    fn transport(e: &reqwest::Error) -> Self {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        Self { failure: classify(e), detail }
    }

    /// A non-2xx answer: the status in Kiosk's words; the start of the body to the log.
    async fn status(failure: RemoteFailure, mut resp: Response) -> Self {
        let mut body = Vec::new();
        while body.len() < 1024 {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let detail = format!(
            "{} answered {}; body: {}",
            origin(resp.url()),
            resp.status(),
            kiosk_domain::text::sanitize_capped(&String::from_utf8_lossy(&body), 512)
        );
        Self { failure, detail }
    }

    fn policy(failure: RemoteFailure) -> Self {
        let detail = failure.to_string();
        Self { failure, detail }
    }
}

/// Kiosk's words for a transport error (the error chain is walked, never shown).
fn classify(e: &reqwest::Error) -> RemoteFailure {
    let mut tls = None;
    let mut plain_http = false;
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return match refusal {
                Refusal::Redirect(words) => RemoteFailure::Redirect(words.clone()),
                Refusal::Address(words) => RemoteFailure::Address(words.clone()),
                Refusal::Dns => RemoteFailure::Dns,
            };
        }
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            tls = Some(matches!(t, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented));
            // An HTTP answer is not a TLS record: its first byte is no TLS content type.
            plain_http |= matches!(t, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = err.source();
    }
    if e.is_timeout() {
        RemoteFailure::Timeout
    } else if plain_http {
        RemoteFailure::PlainHttp
    } else if let Some(certificate) = tls {
        RemoteFailure::Tls { certificate }
    } else if refused {
        RemoteFailure::ConnectionRefused
    } else if e.is_dns() {
        RemoteFailure::Dns
    } else if e.is_redirect() {
        RemoteFailure::Redirect(format!("the registry redirected more than {MAX_REDIRECTS} times"))
    } else if e.is_body() || e.is_decode() {
        RemoteFailure::Interrupted
    } else {
        RemoteFailure::Connection
    }
}

/// An error of one attempt, for the retry loop.
trait AttemptError {
    fn transient(&self) -> bool;
    fn detail(&self) -> String;
}

impl AttemptError for Attempt {
    fn transient(&self) -> bool {
        self.failure.transient()
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl AttemptError for OciDistributionError {
    fn transient(&self) -> bool {
        is_transient(self)
    }
    fn detail(&self) -> String {
        describe(self)
    }
}

/// A configured registry client.
pub struct Registry {
    /// oci-client, for pushes (`publish::push`).
    client: Client,
    auth: RegistryAuth,
    /// Kiosk's pull client: guarded redirects and resolution.
    http: reqwest::Client,
    guard: Arc<Guard>,
    /// `https://host[:port]` (or `http://` for an insecure registry).
    base: String,
    transfer: TransferSettings,
    host: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("host", &self.host).finish_non_exhaustive()
    }
}

/// The registry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    #[error("registry {host}: cannot read CA bundle {path}: {error}")]
    CaBundle { host: String, path: String, error: String },
    #[error("registry {host}: set either a token or username and password, not both")]
    Credentials { host: String },
    #[error("{0}")]
    Invalid(String),
    #[error("registry {host}: cannot set up the HTTP client: {error}")]
    Client { host: String, error: String },
}

impl Registry {
    pub fn new(settings: &RegistrySettings, transfer: TransferSettings) -> Result<Self, RegistryConfigError> {
        settings.validate().map_err(|e| RegistryConfigError::Invalid(e.message))?;
        let host = settings.host.clone();
        let mut pems = Vec::new();
        if let Some(pem) = &settings.ca_pem {
            pems.push(pem.as_bytes().to_vec());
        }
        if let Some(path) = &settings.ca_bundle {
            let data = std::fs::read(path).map_err(|e| RegistryConfigError::CaBundle {
                host: host.clone(),
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            pems.push(data);
        }
        let auth = match (&settings.token, &settings.username, &settings.password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(RegistryConfigError::Credentials { host });
            }
            (Some(token), None, None) => RegistryAuth::Bearer(token.clone()),
            (None, Some(user), pass) => RegistryAuth::Basic(user.clone(), pass.clone().unwrap_or_default()),
            _ => RegistryAuth::Anonymous,
        };
        let parse_all = |hosts: &[String]| hosts.iter().filter_map(|h| Authority::parse(h)).collect::<Vec<_>>();
        let guard = Arc::new(Guard {
            registry: Authority::parse(&host)
                .ok_or_else(|| RegistryConfigError::Invalid(format!("bad host {host}")))?,
            blob_hosts: parse_all(&settings.blob_hosts),
            token_hosts: parse_all(&settings.token_hosts),
            insecure: settings.insecure,
        });
        let policy = Arc::clone(&guard);
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .https_only(!settings.insecure)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                match policy.redirect(attempt.url(), attempt.previous()) {
                    Ok(()) => attempt.follow(),
                    Err(words) => attempt.error(Refusal::Redirect(words)),
                }
            }))
            .dns_resolver(GuardedResolver { allow_private: settings.private_addresses })
            .connect_timeout(Duration::from_millis(transfer.connect_timeout_ms))
            .read_timeout(Duration::from_millis(transfer.read_timeout_ms))
            .user_agent(USER_AGENT);
        for pem in &pems {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryConfigError::Client { host: host.clone(), error: e.to_string() })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http =
            builder.build().map_err(|e| RegistryConfigError::Client { host: host.clone(), error: e.to_string() })?;
        let config = ClientConfig {
            protocol: if settings.insecure {
                ClientProtocol::HttpsExcept(vec![host.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: pems
                .into_iter()
                .map(|data| Certificate { encoding: CertificateEncoding::Pem, data })
                .collect(),
            connect_timeout: Some(Duration::from_millis(transfer.connect_timeout_ms)),
            read_timeout: Some(Duration::from_millis(transfer.read_timeout_ms)),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let base = format!("{}://{host}", if settings.insecure { "http" } else { "https" });
        Ok(Self { client: Client::new(config), auth, http, guard, base, transfer, host })
    }

    /// The source for one repository of this registry (`acme/budget-pacing`).
    pub fn repository(&self, repository: &str) -> RegistrySource<'_> {
        RegistrySource { registry: self, repository: repository.to_string(), authorization: Default::default() }
    }

    /// The oci-client client (pushes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.transfer.backoff_base_ms.saturating_mul(1 << attempt.min(16)).min(self.transfer.backoff_max_ms);
        // Full jitter: spread retries of many replicas over the whole interval.
        Duration::from_millis(rand::rng().random_range(exp / 2..=exp.max(1)))
    }

    /// Runs `op` with the per-request timeout, retrying transient failures. The error
    /// is the last attempt's (`None`: it ran out of time) and the number of attempts.
    async fn attempts<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, (Option<E>, u32)>
    where
        E: AttemptError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            let outcome = tokio::time::timeout(Duration::from_millis(self.transfer.request_timeout_ms), op()).await;
            let error = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            let transient = error.as_ref().is_none_or(AttemptError::transient);
            let detail = error.as_ref().map_or_else(
                || format!("no answer within {} ms", self.transfer.request_timeout_ms),
                AttemptError::detail,
            );
            if !transient || attempt >= self.transfer.retries {
                tracing::warn!(registry = %self.host, %what, %detail, attempts = attempt + 1, "registry request failed");
                return Err((error, attempt + 1));
            }
            let wait = self.backoff(attempt);
            tracing::warn!(registry = %self.host, %what, %detail, attempt, ?wait, "transient registry failure; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Runs an oci-client operation (pushes) with timeouts and retries.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.attempts(what, op).await.map_err(|(error, attempts)| {
            let transient = error.as_ref().is_none_or(AttemptError::transient);
            let message = error.as_ref().map_or_else(
                || format!("no answer within {} ms", self.transfer.request_timeout_ms),
                AttemptError::detail,
            );
            let tries = if transient { format!(" (after {attempts} attempts)") } else { String::new() };
            ArtifactError::Source { source_name: self.host.clone(), message: format!("{what}: {message}{tries}") }
        })
    }

    /// Runs one pull request with timeouts and retries; failures in Kiosk's words.
    async fn pull<T, F, Fut>(&self, source_name: &str, what: &str, op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        self.attempts(what, op).await.map_err(|(error, attempts)| {
            ArtifactError::Remote(RemoteError {
                source_name: source_name.to_string(),
                what: what.to_string(),
                failure: error.map_or(RemoteFailure::Timeout, |e| e.failure),
                attempts,
            })
        })
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RequestError(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// oci-client's error text (pushes only: the partner's own tool and registry).
fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RequestError(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

/// How pull requests of one repository authenticate.
#[derive(Clone)]
enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted or token values).
fn parse_challenge(text: &str) -> Option<Challenge> {
    let text = text.trim();
    let (scheme, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = BTreeMap::new();
    rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { scheme: scheme.to_string(), params })
}

/// Reads an answer's body, at most `cap` bytes (`None`: longer than that).
async fn read_capped(mut resp: Response, cap: u64) -> Result<Option<Vec<u8>>, Attempt> {
    if resp.content_length().is_some_and(|len| len > cap) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Attempt::transport(&e))? {
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// One repository of a registry, as a `BlobSource`.
pub struct RegistrySource<'a> {
    registry: &'a Registry,
    repository: String,
    /// Found once per source (`GET /v2/`, then the token flow if asked for).
    authorization: tokio::sync::Mutex<Option<Authorization>>,
}

impl std::fmt::Debug for RegistrySource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("registry", &self.registry.host)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

impl RegistrySource<'_> {
    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.registry.base, self.repository)
    }

    fn get(&self, url: impl reqwest::IntoUrl, auth: &Authorization) -> RequestBuilder {
        let request = self.registry.http.get(url);
        match auth {
            Authorization::None => request,
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }

    async fn send(request: RequestBuilder) -> Result<Response, Attempt> {
        request.send().await.map_err(|e| Attempt::transport(&e))
    }

    async fn success(resp: Response, failure: fn(u16) -> RemoteFailure) -> Result<Response, Attempt> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        Err(Attempt::status(failure(code), resp).await)
    }

    fn refuse_names(&self) -> Result<(), ArtifactError> {
        if crate::artifact::valid_repository(&self.repository) {
            return Ok(());
        }
        Err(ArtifactError::Source {
            source_name: self.registry.host.clone(),
            message: "the repository is not a valid OCI repository name".into(),
        })
    }

    async fn authorization(&self) -> Result<Authorization, ArtifactError> {
        let mut cached = self.authorization.lock().await;
        if let Some(found) = &*cached {
            return Ok(found.clone());
        }
        let found = self.registry.pull(&self.name(), "authenticate", || self.authenticate()).await?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// `GET /v2/`; a Bearer challenge starts the token flow (realm checked first), a
    /// Basic one takes the configured credentials.
    async fn authenticate(&self) -> Result<Authorization, Attempt> {
        let registry = self.registry;
        if let RegistryAuth::Bearer(token) = &registry.auth {
            return Ok(Authorization::Bearer(token.clone()));
        }
        let resp = Self::send(registry.http.get(format!("{}/v2/", registry.base))).await?;
        if resp.status().is_success() {
            return Ok(Authorization::None);
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            let code = resp.status().as_u16();
            return Err(Attempt::status(RemoteFailure::Status(code), resp).await);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .collect();
        let basic = match &registry.auth {
            RegistryAuth::Basic(user, password) => Some((user.clone(), password.clone())),
            _ => None,
        };
        let Some(bearer) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")) else {
            return Ok(basic.map_or(Authorization::None, |(u, p)| Authorization::Basic(u, p)));
        };
        let Some(realm) = bearer.params.get("realm") else {
            return Err(Attempt::policy(RemoteFailure::Realm(
                "the registry asked for a token but named no token realm".into(),
            )));
        };
        let url = registry.guard.realm(realm).map_err(|words| Attempt {
            failure: RemoteFailure::Realm(words),
            detail: format!("token realm {realm:?} refused"),
        })?;
        let mut query = vec![("scope", format!("repository:{}:pull", self.repository))];
        if let Some(service) = bearer.params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut request = registry.http.get(url).query(&query);
        if let Some((user, password)) = &basic {
            request = request.basic_auth(user, Some(password));
        }
        let resp = Self::success(Self::send(request).await?, RemoteFailure::TokenStatus).await?;
        let invalid = || Attempt::policy(RemoteFailure::TokenInvalid);
        let body = read_capped(resp, TOKEN_ANSWER_CAP).await?.ok_or_else(invalid)?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| invalid())?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
            .ok_or_else(invalid)?;
        Ok(Authorization::Bearer(token))
    }
}

/// Tags asked for per page of `GET /v2/<name>/tags/list` (`?n=`).
pub const TAGS_PAGE: usize = 1000;
/// The most bytes one page of a tag list may have: a page of `TAGS_PAGE` tags of the
/// longest kind (128 bytes, quoted) is about 130 KiB; a registry that ignores `n` may
/// send more in one page, up to this.
pub const TAGS_PAGE_CAP: u64 = 1024 * 1024;

/// A repository's tags, as a watch sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList {
    /// Tags that match the OCI tag grammar, in the registry's order.
    pub tags: Vec<String>,
    /// Entries that are not tags by the OCI grammar (dropped, never shown).
    pub invalid: usize,
    /// More tags than asked for exist (only the first `max_tags` are here).
    pub truncated: bool,
    /// The registry does not know the repository (404): nothing pushed yet.
    pub missing: bool,
}

/// Why a repository's tags could not be listed, in Kiosk's words.
#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error("{0}")]
    Remote(RemoteError),
    #[error("{source_name}: a page of the tag list is larger than {cap} bytes")]
    TooLarge { source_name: String, cap: u64 },
    #[error("{source_name}: the tag list is not the JSON the distribution API specifies")]
    Malformed { source_name: String },
    #[error("{source_name}: the repository is not a valid OCI repository name")]
    BadRepository { source_name: String },
}

impl TagsError {
    /// Worth another attempt later (the registry was unreachable or answered 429/5xx).
    pub fn transient(&self) -> bool {
        matches!(self, Self::Remote(r) if r.failure.transient())
    }

    /// The failure, if the registry was reached (or refused by the operator's rules).
    pub fn remote(&self) -> Option<&RemoteFailure> {
        match self {
            Self::Remote(r) => Some(&r.failure),
            _ => None,
        }
    }
}

impl RegistrySource<'_> {
    /// Lists the repository's tags (`GET /v2/<name>/tags/list`, pages of `TAGS_PAGE`
    /// continued with `last=`; the registry's `Link` header is only a signal that more
    /// exist, its URL is never followed), at most `max_tags`, each page at most
    /// `TAGS_PAGE_CAP` bytes. Entries outside the OCI tag grammar are counted and dropped.
    /// A repository the registry does not know is an empty, `missing` list.
    pub async fn list_tags(&self, max_tags: usize) -> Result<TagList, TagsError> {
        if self.refuse_names().is_err() {
            return Err(TagsError::BadRepository { source_name: self.name() });
        }
        let as_tags_error = |e: ArtifactError| match e {
            ArtifactError::Remote(r) => TagsError::Remote(r),
            _ => TagsError::Malformed { source_name: self.name() },
        };
        let auth = self.authorization().await.map_err(as_tags_error)?;
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut list = TagList::default();
        let mut last: Option<String> = None;
        // Every page but the last holds at least one new tag, so this bounds the loop.
        let max_pages = max_tags / TAGS_PAGE + 2;
        for _ in 0..max_pages {
            let mut url = Url::parse(&format!("{}/v2/{}/tags/list", self.registry.base, self.repository))
                .map_err(|_| TagsError::BadRepository { source_name: self.name() })?;
            url.query_pairs_mut().append_pair("n", &TAGS_PAGE.to_string());
            if let Some(last) = &last {
                url.query_pairs_mut().append_pair("last", last);
            }
            let what = "list tags";
            let answer = self
                .registry
                .pull(&self.name(), what, || async {
                    let resp = Self::send(self.get(url.clone(), &auth)).await?;
                    if resp.status() == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    let resp = Self::success(resp, RemoteFailure::Status).await?;
                    let more = resp
                        .headers()
                        .get_all(reqwest::header::LINK)
                        .iter()
                        .any(|v| v.to_str().is_ok_and(|v| v.contains("rel=\"next\"")));
                    Ok(Some((read_capped(resp, TAGS_PAGE_CAP).await?, more)))
                })
                .await
                .map_err(as_tags_error)?;
            let Some((body, more)) = answer else {
                list.missing = last.is_none();
                return Ok(list);
            };
            let body = body.ok_or_else(|| TagsError::TooLarge { source_name: self.name(), cap: TAGS_PAGE_CAP })?;
            let page: Page =
                serde_json::from_slice(&body).map_err(|_| TagsError::Malformed { source_name: self.name() })?;
            let tags = page.tags.unwrap_or_default();
            let page_last = tags.last().cloned();
            let mut new = 0;
            for tag in tags {
                if !crate::artifact::valid_tag(&tag) {
                    list.invalid += 1;
                    continue;
                }
                if list.tags.len() >= max_tags {
                    list.truncated = true;
                    return Ok(list);
                }
                list.tags.push(tag);
                new += 1;
            }
            match page_last {
                Some(page_last) if more && new > 0 && last.as_ref() != Some(&page_last) => last = Some(page_last),
                _ => return Ok(list),
            }
        }
        list.truncated = true;
        Ok(list)
    }
}

impl BlobSource for RegistrySource<'_> {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.repository)
    }

    async fn resolve(&self, tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        self.refuse_names()?;
        if !crate::artifact::valid_tag(tag) {
            return Err(ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() });
        }
        let auth = self.authorization().await?;
        let url = self.url("manifests", tag);
        let found = self
            .registry
            .pull(&self.name(), &format!("resolve tag {tag}"), || async {
                let resp = Self::send(self.get(&url, &auth).header(ACCEPT, OCI_MANIFEST)).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let resp = Self::success(resp, RemoteFailure::Status).await?;
                let length = resp.content_length();
                Ok(Some(read_capped(resp, cap).await?.ok_or(length)))
            })
            .await?;
        let bytes = match found {
            None => return Err(ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() }),
            Some(Err(length)) => {
                let size = length.unwrap_or(cap.saturating_add(1));
                return Err(ArtifactError::TooLarge { part: Part::OciManifest, size, cap });
            }
            Some(Ok(bytes)) => bytes,
        };
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&bytes).to_string(),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        Ok((desc, bytes))
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        check_cap(part, desc, cap)?;
        self.refuse_names()?;
        // The digest comes from the remote manifest: checked before it goes into a URL.
        crate::artifact::check_digest(part, desc)?;
        let Some(digest) = Digest::parse(&desc.digest) else {
            return Err(ArtifactError::Source { source_name: self.name(), message: "malformed digest".into() });
        };
        let auth = self.authorization().await?;
        let url = self.url("blobs", digest.as_str());
        let what = format!("fetch {part} {digest}");
        self.registry
            .pull(&self.name(), &what, || async {
                let mut resp = Self::success(Self::send(self.get(&url, &auth)).await?, RemoteFailure::Status).await?;
                let size_mismatch = |actual: u64| ArtifactError::SizeMismatch {
                    part,
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual,
                };
                if let Some(length) = resp.content_length()
                    && length > desc.size
                {
                    return Ok(Err(size_mismatch(length)));
                }
                let mut hasher = Sha256::new();
                let mut bytes = Vec::with_capacity(desc.size.min(1 << 20) as usize);
                while let Some(chunk) = resp.chunk().await.map_err(|e| Attempt::transport(&e))? {
                    if (bytes.len() + chunk.len()) as u64 > desc.size {
                        // Longer than its descriptor: refuse without reading further.
                        return Ok(Err(size_mismatch((bytes.len() + chunk.len()) as u64)));
                    }
                    hasher.update(&chunk);
                    bytes.extend_from_slice(&chunk);
                }
                if bytes.len() as u64 != desc.size {
                    return Ok(Err(size_mismatch(bytes.len() as u64)));
                }
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if actual != desc.digest {
                    return Ok(Err(ArtifactError::DigestMismatch { part, digest: desc.digest.clone(), actual }));
                }
                Ok(Ok(bytes))
            })
            .await?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_named() {
        for (ip, class) in [
            ("127.0.0.1", Some("loopback")),
            ("127.9.9.9", Some("loopback")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("fd00::1", Some("private")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), class, "{ip}");
        }
        assert!(is_localhost("localhost") && is_localhost("Registry.LOCALHOST.") && !is_localhost("localhost.evil"));
    }

    fn guard(insecure: bool) -> Guard {
        Guard {
            registry: Authority::parse("registry.example").unwrap(),
            blob_hosts: vec![Authority::parse("blobs.example:8443").unwrap()],
            token_hosts: vec![Authority::parse("auth.example").unwrap()],
            insecure,
        }
    }

    #[test]
    fn redirects_stay_on_listed_hosts_and_never_downgrade() {
        let g = guard(false);
        let from = [Url::parse("https://registry.example/v2/acme/app/blobs/sha256:00").unwrap()];
        let ok = |u: &str| g.redirect(&Url::parse(u).unwrap(), &from);
        assert!(ok("https://registry.example/other").is_ok());
        assert!(ok("https://REGISTRY.example:443/other").is_ok());
        assert!(ok("https://blobs.example:8443/x").is_ok());
        assert!(ok("https://blobs.example/x").unwrap_err().contains("has not listed"));
        assert!(ok("http://registry.example/x").unwrap_err().contains("from HTTPS to plain HTTP"));
        assert!(ok("https://127.0.0.1:5000/x").unwrap_err().contains("https://127.0.0.1:5000"));
        assert!(ok("https://auth.example/x").is_err(), "token hosts are not blob hosts");
        // An insecure registry may use plain HTTP, but never after HTTPS.
        let g = guard(true);
        let plain = [Url::parse("http://registry.example/v2/").unwrap()];
        assert!(g.redirect(&Url::parse("http://registry.example/b").unwrap(), &plain).is_ok());
        assert!(g.redirect(&Url::parse("http://registry.example/b").unwrap(), &from).is_err());
    }

    #[test]
    fn token_realms_must_be_https_on_a_listed_host() {
        let g = guard(false);
        assert!(g.realm("https://registry.example/token").is_ok());
        assert!(g.realm("https://auth.example/token?x=1").is_ok());
        assert!(g.realm("http://auth.example/token").unwrap_err().contains("not HTTPS"));
        assert!(g.realm("https://169.254.169.254/latest").unwrap_err().contains("token-hosts"));
        assert!(g.realm("https://user:pw@auth.example/token").unwrap_err().contains("credentials"));
        assert!(g.realm("not a url").is_err());
        assert!(guard(true).realm("http://auth.example/token").is_ok());
    }

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = parse_challenge(r#"Basic realm="kiosk \"test\"""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("Basic", r#"kiosk "test""#));
        assert_eq!(parse_challenge("Bearer realm=https://a/t, service=x").unwrap().params["service"], "x");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn settings_are_validated() {
        let mut s = RegistrySettings { host: "registry.example:5000".into(), ..Default::default() };
        s.partners.insert("acme".into(), vec!["acme/".into(), "shared/acme-".into()]);
        s.validate().unwrap();
        assert!(s.allows("acme", "acme/app") && s.allows("acme", "shared/acme-tools"));
        assert!(!s.allows("acme", "globex/app") && !s.allows("globex", "acme/app"));
        for bad in ["", "/acme", "acme/../x", "Acme/", "acme//"] {
            s.partners.insert("x".into(), vec![bad.into()]);
            assert!(s.validate().is_err(), "{bad:?}");
        }
        s.partners.remove("x");
        s.blob_hosts = vec!["https://blobs.example".into()];
        assert!(s.validate().is_err());
        s.blob_hosts = vec!["blobs.example:443".into(), "[::1]:5000".into()];
        s.validate().unwrap();
    }
}
