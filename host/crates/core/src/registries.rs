//! Registries the operator configures over the API (beside the config file's): host,
//! TLS trust, credentials sealed at rest and never returned, which partners may register
//! from which repositories, and where the registry may redirect or send its tokens.

use kiosk_api::registries::{RegistryBody, RegistryView};
use kiosk_distribution::registry::RegistrySettings;
use kiosk_store::RegistryRow;

use crate::error::{Failure, Kind, Result};
use crate::lifecycle::{Kiosk, RegistrySecret};

fn registry_view(r: &RegistryRow) -> RegistryView {
    RegistryView {
        host: r.host.clone(),
        insecure: r.insecure,
        ca_pem_set: r.ca_pem.is_some(),
        username: r.username.clone(),
        credentials_set: r.secret.is_some(),
        partners: r.partners.clone(),
        blob_hosts: r.blob_hosts.clone(),
        token_hosts: r.token_hosts.clone(),
        private_addresses: r.private_addresses,
    }
}

fn invalid(field: &str, detail: &str) -> Failure {
    Failure::unprocessable(Kind::InvalidRegistry, detail).field(field)
}

impl Kiosk {
    /// The registries configured over the API, by host.
    pub async fn registries(&self) -> Result<Vec<RegistryView>> {
        Ok(self.store.registries().await?.iter().map(registry_view).collect())
    }

    /// Configures registry `host` (replacing what was there); a bad field is
    /// `invalid-registry` naming it (API spelling).
    pub async fn put_registry(&self, host: &str, body: RegistryBody, actor: &str) -> Result<RegistryView> {
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
        let secret = (body.password.is_some() || body.token.is_some()).then(|| {
            let plain =
                serde_json::to_vec(&RegistrySecret { password: body.password.clone(), token: body.token.clone() })
                    .unwrap_or_default();
            self.sealer.seal(&plain, &format!("registry/{host}"))
        });
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
        Ok(registry_view(&row))
    }

    /// Removes registry `host`.
    pub async fn delete_registry(&self, host: &str, actor: &str) -> Result<()> {
        if !self.store.delete_registry(host, actor).await? {
            return Err(Failure::not_found(format!("no registry {host:?}")));
        }
        Ok(())
    }
}
