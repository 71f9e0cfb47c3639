//! Installation secrets: a configuration's secret (`writeOnly`) values sealed apart
//! from its public part, by JSON pointer, and opened again for the app; and registry
//! credentials as sealed at rest (`RegistrySecret`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use kiosk_store::InstallationRow;

use crate::error::Failure;
use crate::kiosk::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Registry credentials, sealed at rest: the password or token, and the client
/// certificate with its key (mutual TLS). Every member is optional, so what was sealed
/// before a member existed still opens.
#[derive(Serialize, Deserialize, Default)]
pub struct RegistrySecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM: the client certificate (chain, the client's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_pem: Option<String>,
    /// PEM: its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

impl RegistrySecret {
    /// Whether a password or token is set.
    pub fn credentials_set(&self) -> bool {
        self.password.is_some() || self.token.is_some()
    }

    /// Whether a client certificate is set.
    pub fn client_certificate_set(&self) -> bool {
        self.client_certificate_pem.is_some()
    }

    /// Whether nothing is set (nothing to seal).
    pub fn is_empty(&self) -> bool {
        !self.credentials_set() && self.client_certificate_pem.is_none() && self.client_key_pem.is_none()
    }
}

impl std::fmt::Debug for RegistrySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySecret").finish_non_exhaustive()
    }
}

impl Kiosk {
    /// The installation's secrets by JSON pointer (rows sealed before pointers were used
    /// keyed top-level secrets by name: `apiKey` reads as `/apiKey`).
    pub fn open_secrets(&self, row: &InstallationRow) -> Result<Map<String, Value>> {
        let plain = self.sealer.open(&row.secrets, &format!("{}/{}", row.tenant, row.id)).map_err(Failure::internal)?;
        let stored: Map<String, Value> = serde_json::from_slice(&plain).map_err(Failure::internal)?;
        Ok(stored
            .into_iter()
            .map(
                |(k, v)| {
                    if k.starts_with('/') {
                        (k, v)
                    } else {
                        (format!("/{}", k.replace('~', "~0").replace('/', "~1")), v)
                    }
                },
            )
            .collect())
    }

    /// The JSON pointers of the secrets that are set (never their values).
    pub fn secrets_set(&self, row: &InstallationRow) -> Vec<String> {
        self.open_secrets(row).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Stores `config` on the row: the public part as JSON, the secret part sealed.
    pub(crate) fn set_config(&self, row: &mut InstallationRow, config: &Value, secret_pointers: &[String]) {
        let (public, secrets) = split_secrets(config, secret_pointers);
        row.config = public.to_string();
        row.secrets =
            self.sealer.seal(Value::Object(secrets).to_string().as_bytes(), &format!("{}/{}", row.tenant, row.id));
    }

    /// The full config the app sees: public part plus opened secrets.
    pub(crate) fn full_config(&self, row: &InstallationRow) -> Result<Value> {
        let mut config: Value = serde_json::from_str(&row.config).map_err(Failure::internal)?;
        for (ptr, v) in self.open_secrets(row)? {
            kiosk_domain::manifest::put_pointer(&mut config, &ptr, v);
        }
        Ok(config)
    }
}

/// Splits a resolved config into its public part and its secret (`writeOnly`) part,
/// keyed by JSON pointer (`/auth/token`, `/servers/0/key`).
fn split_secrets(config: &Value, secret_pointers: &[String]) -> (Value, Map<String, Value>) {
    let mut public = config.clone();
    let mut secrets = Map::new();
    for ptr in secret_pointers {
        if let Some(v) = kiosk_domain::manifest::take_pointer(&mut public, ptr) {
            secrets.insert(ptr.clone(), v);
        }
    }
    (public, secrets)
}
