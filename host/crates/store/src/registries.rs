//! Registries the operator configured over the API (`registries`): their settings, the
//! sealed credentials, and the partners' repository prefixes.

use std::collections::BTreeMap;

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// A registry the operator configured over the API.
#[derive(Debug, Clone)]
pub struct RegistryRow {
    pub host: String,
    pub insecure: bool,
    pub ca_pem: Option<String>,
    pub username: Option<String>,
    /// Sealed JSON of the password or token.
    pub secret: Option<Vec<u8>>,
    /// Repository prefixes per partner.
    pub partners: BTreeMap<String, Vec<String>>,
    /// Hosts the registry may redirect downloads to.
    pub blob_hosts: Vec<String>,
    /// Hosts of the registry's token service.
    pub token_hosts: Vec<String>,
    /// Its names may resolve to private addresses.
    pub private_addresses: bool,
}

impl Store {
    /// Creates or replaces a registry's settings; `secret` is already sealed.
    pub async fn put_registry(&self, r: &RegistryRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO registries (host, insecure, ca_pem, username, secret, updated_ms, partners, blob_hosts,
             token_hosts, private_addresses) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (host) DO UPDATE SET insecure = excluded.insecure, ca_pem = excluded.ca_pem,
             username = excluded.username, secret = excluded.secret, updated_ms = excluded.updated_ms,
             partners = excluded.partners, blob_hosts = excluded.blob_hosts, token_hosts = excluded.token_hosts,
             private_addresses = excluded.private_addresses",
        )
        .bind(&r.host)
        .bind(i64::from(r.insecure))
        .bind(&r.ca_pem)
        .bind(&r.username)
        .bind(&r.secret)
        .bind(now_ms() as i64)
        .bind(serde_json::to_string(&r.partners).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&r.blob_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.token_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(r.private_addresses))
        .execute(&mut *tx)
        .await
        .map_err(ctx("store registry"))?;
        audit(&mut tx, actor, "registry.put", &r.host, "").await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn registries(&self) -> Result<Vec<RegistryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, insecure, ca_pem, username, secret, partners, blob_hosts, token_hosts, private_addresses
             FROM registries ORDER BY host",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list registries"))?;
        rows.iter()
            .map(|r| {
                Ok(RegistryRow {
                    host: r.try_get("host")?,
                    insecure: r.try_get::<i64, _>("insecure")? != 0,
                    ca_pem: r.try_get("ca_pem")?,
                    username: r.try_get("username")?,
                    secret: r.try_get("secret")?,
                    partners: json_column(r.try_get("partners")?)?,
                    blob_hosts: json_column(r.try_get("blob_hosts")?)?,
                    token_hosts: json_column(r.try_get("token_hosts")?)?,
                    private_addresses: r.try_get::<i64, _>("private_addresses")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read registries"))
    }

    pub async fn delete_registry(&self, host: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM registries WHERE host = $1")
            .bind(host)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete registry"))?;
        if done.rows_affected() == 1 {
            audit(&mut tx, actor, "registry.delete", host, "").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }
}

/// A JSON text column of the registries table.
fn json_column<T: serde::de::DeserializeOwned>(text: String) -> Result<T, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
