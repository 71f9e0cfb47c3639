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
//! hashed while streaming. A registry that asks for a client certificate (mutual TLS)
//! gets the one the operator configured (`identity`). Pushes (`publish::push`, the
//! partner's side) use oci-client, which cannot present a client certificate.

mod auth;
mod error;
mod guard;
mod identity;
mod pull;
mod retry;
mod settings;
mod tags;

use std::sync::Arc;
use std::time::Duration;

use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use auth::Authorization;
use guard::{Authority, Guard, GuardedResolver, Refusal};

pub use auth::{Challenge, parse_challenge};
pub use error::{RemoteError, RemoteFailure};
pub use identity::{ClientIdentity, IdentityError, MAX_CLIENT_PEM_BYTES};
pub use kiosk_domain::net::non_public;
pub use settings::{RegistrySettings, SettingsError, TransferSettings, valid_prefix};
pub use tags::{TAGS_PAGE, TAGS_PAGE_CAP, TagList, TagsError};

const USER_AGENT: &str = concat!("kiosk/", env!("CARGO_PKG_VERSION"));
/// Registries redirect a blob once (to storage); five hops is generous.
const MAX_REDIRECTS: usize = 5;

/// A configured registry client.
pub struct Registry {
    /// oci-client, for pushes (`publish::push`). oci-client 0.18's `ClientConfig` has no
    /// client identity, so this client never presents the client certificate: a registry
    /// that demands one refuses pushes at the TLS handshake (pulls, through `http`,
    /// present it).
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
    #[error("registry {host}: cannot read {setting} {path}: {error}")]
    ClientIdentityFile { host: String, setting: &'static str, path: String, error: String },
    #[error("registry {host}: {setting}: {error}")]
    ClientIdentity { host: String, setting: &'static str, error: IdentityError },
    #[error("{0}")]
    Invalid(String),
    #[error("registry {host}: cannot set up the HTTP client: {error}")]
    Client { host: String, error: String },
}

impl RegistrySettings {
    /// The client certificate and key these settings name (files or inline PEM), read
    /// and checked as a connection would use them; `None` without one. The operator's
    /// config is checked with it when it is loaded, so a bad file stops the start.
    pub fn client_identity(&self) -> Result<Option<ClientIdentity>, RegistryConfigError> {
        identity::from_settings(self)
    }
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
        let identity = identity::from_settings(settings)?;
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
            .dns_resolver(GuardedResolver {
                allow_private: settings.private_addresses,
                open_ranges: settings.open_ranges.clone().map(Arc::new),
            })
            .connect_timeout(Duration::from_millis(transfer.connect_timeout_ms))
            .read_timeout(Duration::from_millis(transfer.read_timeout_ms))
            .user_agent(USER_AGENT);
        for pem in &pems {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryConfigError::Client { host: host.clone(), error: e.to_string() })?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(identity) = &identity {
            let identity = identity
                .reqwest()
                .map_err(|e| RegistryConfigError::Client { host: host.clone(), error: e.to_string() })?;
            builder = builder.identity(identity);
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

    /// The oci-client client (pushes). It does not present the client certificate (see
    /// the field).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    pub fn host(&self) -> &str {
        &self.host
    }
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
