//! Registries the operator configures over the API: what is sent (credentials and the
//! client certificate write-only) and what is shown (only whether they are set).

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryBody {
    /// Plain HTTP (only for registries on a trusted path).
    #[serde(default)]
    pub insecure: bool,
    /// PEM of CA certificates to trust for this registry.
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Write-only: never returned.
    #[serde(default)]
    #[schema(write_only)]
    pub password: Option<String>,
    /// Write-only: never returned.
    #[serde(default)]
    #[schema(write_only)]
    pub token: Option<String>,
    /// PEM of the client certificate Kiosk presents to a registry that asks for one
    /// (mutual TLS): the client's certificate first, then any intermediates. Needs
    /// `clientKeyPem`. Sealed at rest; write-only: never returned (see
    /// `clientCertificateSet`).
    #[serde(default)]
    #[schema(write_only, max_length = 65536)]
    pub client_certificate_pem: Option<String>,
    /// PEM of the client certificate's private key, unencrypted (PKCS#8, RSA or EC); it
    /// must belong to `clientCertificatePem`. Sealed at rest; write-only: never returned.
    #[serde(default)]
    #[schema(write_only, max_length = 65536)]
    pub client_key_pem: Option<String>,
    /// Repository prefixes per partner (`{"acme": ["acme/", "shared/acme-"]}`): a partner
    /// registers only from repositories under its prefixes; a partner without an entry
    /// may not use this registry.
    #[serde(default)]
    pub partners: std::collections::BTreeMap<String, Vec<String>>,
    /// Other hosts (`host[:port]`) the registry may redirect downloads to (its blob
    /// storage). Redirects anywhere else, and from HTTPS to HTTP, are refused.
    #[serde(default)]
    pub blob_hosts: Vec<String>,
    /// Hosts of the registry's token service (its `WWW-Authenticate` realm) other than
    /// the registry itself; they receive the registry credentials.
    #[serde(default)]
    pub token_hosts: Vec<String>,
    /// The registry's host names may resolve to loopback, link-local or private
    /// addresses (an internal registry). Not needed for IP literals or `localhost`.
    #[serde(default)]
    pub private_addresses: bool,
}

/// A registry the operator configured; its credentials are never returned (only
/// whether they are set).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    pub host: String,
    pub insecure: bool,
    pub ca_pem_set: bool,
    pub username: Option<String>,
    pub credentials_set: bool,
    /// A client certificate (and its key) is set; they are never returned.
    pub client_certificate_set: bool,
    pub partners: std::collections::BTreeMap<String, Vec<String>>,
    pub blob_hosts: Vec<String>,
    pub token_hosts: Vec<String>,
    pub private_addresses: bool,
}

impl std::fmt::Debug for RegistryBody {
    /// Without the password, token and client certificate and key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBody").field("username", &self.username).finish_non_exhaustive()
    }
}
