//! Operator settings of registries: one registry's entry (`[[registries]]`, `PUT
//! /v1/registries/{host}`) and its validation, and the timeouts and retries of requests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::guard::Authority;

/// Operator settings of one registry (`[[registries]]` in the operator config, or
/// `PUT /v1/registries/{host}`). Every setting defaults to absent, empty or `false`:
/// HTTPS, the system's roots, anonymous, no client certificate, no partner.
#[derive(Clone, Default, Deserialize)]
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
    /// PEM file of the client certificate Kiosk presents to a registry that asks for one
    /// (mutual TLS): the client's certificate first, then any intermediates. Needs
    /// `client-key`. Pulls present it; pushes (oci-client) cannot.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// PEM file of the client certificate's private key, unencrypted (PKCS#8, RSA or EC).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The client certificate, inline (PEM text), as the operator API stores it (sealed).
    #[serde(default)]
    pub client_certificate_pem: Option<String>,
    /// Its private key, inline (PEM text), as the operator API stores it (sealed).
    #[serde(default)]
    pub client_key_pem: Option<String>,
    /// Set by the core for a tenant's registry, never from a config file: every address
    /// its names resolve to must be public or inside one of these ranges (the operator
    /// opened them for the tenant), `localhost` included. `None`: the operator's rules.
    #[serde(skip)]
    pub open_ranges: Option<Vec<ipnet::IpNet>>,
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
        let pairs = [
            ("client-certificate", self.client_certificate.is_some(), self.client_certificate_pem.is_some()),
            ("client-key", self.client_key.is_some(), self.client_key_pem.is_some()),
        ];
        for (field, file, inline) in pairs {
            if file && inline {
                return error(field, format!("registry {}: set {field} (a file) or {field}-pem, not both", self.host));
            }
        }
        let certificate = self.client_certificate.is_some() || self.client_certificate_pem.is_some();
        let key = self.client_key.is_some() || self.client_key_pem.is_some();
        if certificate != key {
            let (field, other) =
                if certificate { ("client-key", "client-certificate") } else { ("client-certificate", "client-key") };
            return error(field, format!("registry {}: {other} needs {field}", self.host));
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

impl std::fmt::Debug for RegistrySettings {
    /// Without the password, token and client key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("host", &self.host)
            .field("insecure", &self.insecure)
            .field("ca_bundle", &self.ca_bundle)
            .field("username", &self.username)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("partners", &self.partners)
            .field("blob_hosts", &self.blob_hosts)
            .field("token_hosts", &self.token_hosts)
            .field("private_addresses", &self.private_addresses)
            .finish_non_exhaustive()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        // A client certificate and its key come together, each from one place.
        s.client_certificate = Some("client.pem".into());
        assert_eq!(s.validate().unwrap_err().field, "client-key");
        s.client_key_pem = Some("-----BEGIN PRIVATE KEY-----".into());
        s.validate().unwrap();
        s.client_key = Some("client.key".into());
        let e = s.validate().unwrap_err();
        assert!(e.field == "client-key" && e.message.contains("not both"), "{e}");
        s.client_key_pem = None;
        s.client_certificate = None;
        assert_eq!(s.validate().unwrap_err().field, "client-certificate");
        s.password = Some("hunter2".into());
        s.client_key_pem = Some("secret key".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("secret key"), "{shown}");
    }
}
