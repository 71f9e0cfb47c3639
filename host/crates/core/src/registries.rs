//! Registries the operator configures over the API (beside the config file's): host,
//! TLS trust, credentials and the client certificate sealed at rest and never returned,
//! which partners may register from which repositories, and where the registry may
//! redirect or send its tokens.
//!
//! The body's checks ([`check_registry_body`]), its sealing
//! ([`Kiosk::registry_secret_from_body`]) and the way back from a stored row to
//! settings ([`Kiosk::settings_from_row`], [`RegistrySecret::apply_to`]) are shared by
//! every kind of registry a body configures.

use kiosk_api::registries::{RegistryBody, RegistryView};
use kiosk_distribution::registry::{ClientIdentity, MAX_CLIENT_PEM_BYTES, RegistrySettings};
use kiosk_store::RegistryRow;

use crate::error::{Failure, Kind, Result};
use crate::lifecycle::{Kiosk, RegistrySecret};

fn registry_view(r: &RegistryRow, secret: &RegistrySecret) -> RegistryView {
    RegistryView {
        host: r.host.clone(),
        insecure: r.insecure,
        ca_pem_set: r.ca_pem.is_some(),
        username: r.username.clone(),
        credentials_set: secret.credentials_set(),
        client_certificate_set: secret.client_certificate_set(),
        partners: r.partners.clone(),
        blob_hosts: r.blob_hosts.clone(),
        token_hosts: r.token_hosts.clone(),
        private_addresses: r.private_addresses,
    }
}

fn invalid(field: &str, detail: &str) -> Failure {
    Failure::unprocessable(Kind::InvalidRegistry, detail).field(field)
}

/// What the operator's registry `host` is sealed under.
fn seal_context(host: &str) -> String {
    format!("registry/{host}")
}

/// Checks a registry body for `host` on its own: hosts are `host[:port]`, partner
/// prefixes are prefixes of repository names, credentials are a token or a username
/// (with a password), a CA is PEM certificates, and a client certificate comes with its
/// key, both PEM (at most [`MAX_CLIENT_PEM_BYTES`] each) and belonging together. A bad
/// field is `invalid-registry` naming it (API spelling); the words never quote a secret.
pub(crate) fn check_registry_body(host: &str, body: &RegistryBody) -> Result<()> {
    let settings = RegistrySettings {
        host: host.to_string(),
        partners: body.partners.clone(),
        blob_hosts: body.blob_hosts.clone(),
        token_hosts: body.token_hosts.clone(),
        ..Default::default()
    };
    if let Err(e) = settings.validate() {
        let field = match e.field {
            "blob-hosts" => "blobHosts",
            "token-hosts" => "tokenHosts",
            other => other,
        };
        return Err(invalid(field, &e.message));
    }
    if body.token.is_some() && (body.username.is_some() || body.password.is_some()) {
        return Err(invalid("token", "give either a token or username and password"));
    }
    if body.password.is_some() && body.username.is_none() {
        return Err(invalid("username", "a password needs a username"));
    }
    if let Some(pem) = &body.ca_pem
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(invalid("caPem", "caPem must hold PEM certificates"));
    }
    match (&body.client_certificate_pem, &body.client_key_pem) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(invalid("clientKeyPem", "clientCertificatePem needs clientKeyPem (its private key)"));
        }
        (None, Some(_)) => {
            return Err(invalid("clientCertificatePem", "clientKeyPem needs clientCertificatePem (its certificate)"));
        }
        (Some(certificate), Some(key)) => {
            for (field, pem) in [("clientCertificatePem", certificate), ("clientKeyPem", key)] {
                if pem.len() > MAX_CLIENT_PEM_BYTES {
                    return Err(invalid(field, &format!("{field} must be at most {MAX_CLIENT_PEM_BYTES} bytes")));
                }
            }
            if let Err(e) = ClientIdentity::from_pem(certificate.as_bytes(), key.as_bytes()) {
                let field = if e.is_key() { "clientKeyPem" } else { "clientCertificatePem" };
                return Err(invalid(field, &format!("{field}: {e}")));
            }
        }
    }
    Ok(())
}

impl RegistrySecret {
    /// The secret parts of a body (credentials, client certificate and key).
    pub(crate) fn from_body(body: &RegistryBody) -> Self {
        Self {
            password: body.password.clone(),
            token: body.token.clone(),
            client_certificate_pem: body.client_certificate_pem.clone(),
            client_key_pem: body.client_key_pem.clone(),
        }
    }

    /// Puts the opened secret into `settings`.
    pub(crate) fn apply_to(self, settings: &mut RegistrySettings) {
        settings.password = self.password;
        settings.token = self.token;
        settings.client_certificate_pem = self.client_certificate_pem;
        settings.client_key_pem = self.client_key_pem;
    }
}

impl Kiosk {
    /// The secret parts of a (checked) body sealed under `context` (what the row is
    /// opened with, e.g. `registry/{host}`): `None` when the body sets none.
    pub(crate) fn registry_secret_from_body(&self, body: &RegistryBody, context: &str) -> Option<Vec<u8>> {
        let secret = RegistrySecret::from_body(body);
        (!secret.is_empty()).then(|| self.sealer.seal(&serde_json::to_vec(&secret).unwrap_or_default(), context))
    }

    /// A stored registry secret opened (`context` as it was sealed with); the empty
    /// secret when none is stored.
    pub(crate) fn open_registry_secret(&self, sealed: Option<&[u8]>, context: &str) -> Result<RegistrySecret> {
        let Some(sealed) = sealed else { return Ok(RegistrySecret::default()) };
        let plain = self.sealer.open(sealed, context).map_err(Failure::internal)?;
        serde_json::from_slice(&plain).map_err(Failure::internal)
    }

    /// The settings of an operator's registry stored over the API, its secret opened.
    pub(crate) fn settings_from_row(&self, row: RegistryRow) -> Result<RegistrySettings> {
        let secret = self.open_registry_secret(row.secret.as_deref(), &seal_context(&row.host))?;
        let mut settings = RegistrySettings {
            host: row.host,
            insecure: row.insecure,
            ca_pem: row.ca_pem,
            username: row.username,
            partners: row.partners,
            blob_hosts: row.blob_hosts,
            token_hosts: row.token_hosts,
            private_addresses: row.private_addresses,
            ..Default::default()
        };
        secret.apply_to(&mut settings);
        Ok(settings)
    }

    /// The registries configured over the API, by host. What their secrets hold is read
    /// by opening them; one that cannot be opened (another secrets key) is shown as
    /// credentials set and no client certificate, and logged, rather than failing the list.
    pub async fn registries(&self) -> Result<Vec<RegistryView>> {
        let rows = self.store.registries().await?;
        Ok(rows
            .iter()
            .map(|r| {
                let secret = self.open_registry_secret(r.secret.as_deref(), &seal_context(&r.host)).unwrap_or_else(|e| {
                    tracing::warn!(registry = %r.host, error = %e.detail, "cannot open the registry's sealed secret");
                    RegistrySecret { password: Some(String::new()), ..Default::default() }
                });
                registry_view(r, &secret)
            })
            .collect())
    }

    /// Configures registry `host` (replacing what was there); a bad field is
    /// `invalid-registry` naming it (API spelling).
    pub async fn put_registry(&self, host: &str, body: RegistryBody, actor: &str) -> Result<RegistryView> {
        check_registry_body(host, &body)?;
        let secret = self.registry_secret_from_body(&body, &seal_context(host));
        let shown = RegistrySecret::from_body(&body);
        let row = RegistryRow {
            host: host.to_string(),
            insecure: body.insecure,
            ca_pem: body.ca_pem,
            username: body.username,
            secret,
            partners: body.partners,
            blob_hosts: body.blob_hosts,
            token_hosts: body.token_hosts,
            private_addresses: body.private_addresses,
        };
        self.store.put_registry(&row, actor).await?;
        Ok(registry_view(&row, &shown))
    }

    /// Removes registry `host`.
    pub async fn delete_registry(&self, host: &str, actor: &str) -> Result<()> {
        if !self.store.delete_registry(host, actor).await? {
            return Err(Failure::not_found(format!("no registry {host:?}")));
        }
        Ok(())
    }
}
