//! Tenants' own apps (issue 30): the operator's switch per tenant (or for every tenant),
//! the registries a tenant connected (credentials sealed), and the tenant's private
//! namespace `~tenant`, a row of `partners` so that apps, certificates, quarantine and
//! the partner row lock serve private apps as they serve partners'.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use kiosk_domain::ids::private_namespace;
use kiosk_domain::limits::LimitValues;
use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// The operator's switch for one tenant's private apps (`tenant` = `""`: every tenant
/// without a row of its own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrivateAppPolicyRow {
    pub tenant: String,
    pub enabled: bool,
    /// How many private apps the tenant may have.
    pub max_apps: i64,
    /// Non-public address ranges (CIDR) the tenant's registries may resolve to.
    pub open_ranges: Vec<String>,
    /// The tenant's registries may be plain HTTP.
    pub plain_http: bool,
    /// The cap of each of the tenant's private apps (absent values inherit).
    pub limits: LimitValues,
    pub updated_ms: i64,
}

/// A registry a tenant connected.
#[derive(Debug, Clone)]
pub struct TenantRegistryRow {
    pub tenant: String,
    pub host: String,
    /// Plain HTTP (only where the tenant's policy allows it).
    pub insecure: bool,
    pub ca_pem: Option<String>,
    pub username: Option<String>,
    /// Sealed JSON of the password or token (and client certificate).
    pub secret: Option<Vec<u8>>,
    pub blob_hosts: Vec<String>,
    pub token_hosts: Vec<String>,
    pub updated_ms: i64,
}

fn json<T: serde::de::DeserializeOwned>(text: String) -> Result<T, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn policy_row(r: &AnyRow) -> Result<PrivateAppPolicyRow, sqlx::Error> {
    Ok(PrivateAppPolicyRow {
        tenant: r.try_get("tenant")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        max_apps: r.try_get("max_apps")?,
        open_ranges: json(r.try_get("open_ranges")?)?,
        plain_http: r.try_get::<i64, _>("plain_http")? != 0,
        limits: json(r.try_get("limits")?)?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn registry_row(r: &AnyRow) -> Result<TenantRegistryRow, sqlx::Error> {
    Ok(TenantRegistryRow {
        tenant: r.try_get("tenant")?,
        host: r.try_get("host")?,
        insecure: r.try_get::<i64, _>("insecure")? != 0,
        ca_pem: r.try_get("ca_pem")?,
        username: r.try_get("username")?,
        secret: r.try_get("secret")?,
        blob_hosts: json(r.try_get("blob_hosts")?)?,
        token_hosts: json(r.try_get("token_hosts")?)?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

const POLICY_COLUMNS: &str = "tenant, enabled, max_apps, open_ranges, plain_http, limits, updated_ms";
const REGISTRY_COLUMNS: &str = "tenant, host, insecure, ca_pem, username, secret, blob_hosts, token_hosts, updated_ms";

/// How the audit log names a policy.
fn policy_target(tenant: &str) -> String {
    if tenant.is_empty() { "private-apps:*".to_string() } else { format!("private-apps:{tenant}") }
}

impl Store {
    /// The policy rows: `tenant`'s own and the one for every tenant (`""`), in that order
    /// of precedence (at most two rows).
    pub async fn private_app_policies_of(&self, tenant: &str) -> Result<Vec<PrivateAppPolicyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM private_app_policies WHERE tenant = $1 OR tenant = '' ORDER BY tenant DESC"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read private-app policy"))?;
        rows.iter().map(policy_row).collect::<Result<_, _>>().map_err(ctx("read private-app policy"))
    }

    /// Every policy row, by tenant (`""` first).
    pub async fn private_app_policies(&self) -> Result<Vec<PrivateAppPolicyRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {POLICY_COLUMNS} FROM private_app_policies ORDER BY tenant"))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list private-app policies"))?;
        rows.iter().map(policy_row).collect::<Result<_, _>>().map_err(ctx("read private-app policies"))
    }

    /// Creates or replaces a policy with its audit row; a tenant's own policy also
    /// creates the tenant's namespace (`~tenant`) if it is enabled.
    pub async fn put_private_app_policy(&self, p: &PrivateAppPolicyRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO private_app_policies ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant) DO UPDATE SET enabled = excluded.enabled, max_apps = excluded.max_apps,
             open_ranges = excluded.open_ranges, plain_http = excluded.plain_http, limits = excluded.limits, updated_ms = excluded.updated_ms"
        ))
        .bind(&p.tenant)
        .bind(i64::from(p.enabled))
        .bind(p.max_apps)
        .bind(serde_json::to_string(&p.open_ranges).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(p.plain_http))
        .bind(serde_json::to_string(&p.limits).unwrap_or_else(|_| "{}".into()))
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("store private-app policy"))?;
        let detail = if p.enabled { "enabled" } else { "disabled" };
        audit(&mut tx, actor, "private-apps.put", &policy_target(&p.tenant), detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// Removes a policy (the tenant falls back to the one for every tenant); `false`
    /// if there was none.
    pub async fn delete_private_app_policy(&self, tenant: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM private_app_policies WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete private-app policy"))?;
        if done.rows_affected() == 1 {
            audit(&mut tx, actor, "private-apps.delete", &policy_target(tenant), "").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates tenant `tenant`'s private namespace (`~tenant`, a `partners` row) if it
    /// does not exist yet.
    pub async fn ensure_private_namespace(&self, tenant: &str, actor: &str) -> Result<(), StoreError> {
        let namespace = private_namespace(tenant);
        if self.partner_exists(&namespace).await? {
            return Ok(());
        }
        let _created = self.create_partner(&namespace, &format!("Private apps of tenant {tenant}"), actor).await?;
        Ok(())
    }

    /// The ids of tenant `tenant`'s private apps, by id.
    pub async fn private_apps(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM apps WHERE partner = $1 ORDER BY id")
            .bind(private_namespace(tenant))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list private apps"))?;
        rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>().map_err(ctx("read private apps"))
    }

    // --- tenants' registries ----------------------------------------------------------

    /// Creates or replaces a tenant's registry; `secret` is already sealed.
    pub async fn put_tenant_registry(&self, r: &TenantRegistryRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO tenant_registries ({REGISTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant, host) DO UPDATE SET insecure = excluded.insecure, ca_pem = excluded.ca_pem, username = excluded.username,
             secret = excluded.secret, blob_hosts = excluded.blob_hosts, token_hosts = excluded.token_hosts,
             updated_ms = excluded.updated_ms"
        ))
        .bind(&r.tenant)
        .bind(&r.host)
        .bind(i64::from(r.insecure))
        .bind(&r.ca_pem)
        .bind(&r.username)
        .bind(&r.secret)
        .bind(serde_json::to_string(&r.blob_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.token_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("store tenant registry"))?;
        audit(&mut tx, actor, "tenant-registry.put", &format!("{}:{}", r.tenant, r.host), "").await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// A tenant's registries, by host.
    pub async fn tenant_registries(&self, tenant: &str) -> Result<Vec<TenantRegistryRow>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {REGISTRY_COLUMNS} FROM tenant_registries WHERE tenant = $1 ORDER BY host"))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("list tenant registries"))?;
        rows.iter().map(registry_row).collect::<Result<_, _>>().map_err(ctx("read tenant registries"))
    }

    /// Removes a tenant's registry; `false` if there was none.
    pub async fn delete_tenant_registry(&self, tenant: &str, host: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM tenant_registries WHERE tenant = $1 AND host = $2")
            .bind(tenant)
            .bind(host)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete tenant registry"))?;
        if done.rows_affected() == 1 {
            audit(&mut tx, actor, "tenant-registry.delete", &format!("{tenant}:{host}"), "").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }
}

/// The action of the `StoreError` a registration over its namespace's quota fails with
/// (`register_version`'s backstop; the core checks first and names the quota).
pub const PRIVATE_QUOTA_EXCEEDED: &str = "private-app quota exceeded";

/// Inside a registration's transaction, after the namespace's row lock: refuses a new
/// private app of `namespace` (`~tenant`) that the tenant's policy does not allow
/// (switched off, or as many apps as the quota). Partners' apps pass untouched.
pub(crate) async fn check_private_quota(
    tx: &mut crate::WriteTransaction,
    namespace: &str,
    app: &str,
) -> Result<(), StoreError> {
    let Some(tenant) = kiosk_domain::ids::private_owner(namespace) else { return Ok(()) };
    let policy = sqlx::query(
        "SELECT enabled, max_apps FROM private_app_policies WHERE tenant = $1 OR tenant = ''
         ORDER BY tenant DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("read private-app policy"))?;
    let (enabled, max_apps) = match &policy {
        Some(r) => (
            r.try_get::<i64, _>("enabled").map_err(ctx("read private-app policy"))? != 0,
            r.try_get::<i64, _>("max_apps").map_err(ctx("read private-app policy"))?,
        ),
        None => (false, 0),
    };
    let others: i64 = sqlx::query("SELECT COUNT(*) AS n FROM apps WHERE partner = $1 AND id <> $2")
        .bind(namespace)
        .bind(app)
        .fetch_one(&mut **tx)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(ctx("count private apps"))?;
    let known: bool = sqlx::query("SELECT 1 AS one FROM apps WHERE id = $1")
        .bind(app)
        .fetch_optional(&mut **tx)
        .await
        .map_err(ctx("find private app"))?
        .is_some();
    if !enabled || (!known && others >= max_apps) {
        return Err(StoreError {
            action: PRIVATE_QUOTA_EXCEEDED.to_string(),
            source: sqlx::Error::Protocol(format!("{app}: {others} private apps of at most {max_apps}")),
        });
    }
    Ok(())
}
