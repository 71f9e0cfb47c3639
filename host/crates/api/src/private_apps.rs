//! Tenants' own apps (SPEC §2 step 5): the operator's switch, the registries a tenant
//! connects (credentials and client key write-only) and the tenant's private apps.

use serde::{Deserialize, Serialize};

/// The operator's switch for private apps (one tenant's, or every tenant's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrivateAppPolicy {
    /// The tenant may connect registries, add certificates and register its own apps.
    #[serde(default)]
    pub enabled: bool,
    /// How many private apps the tenant may have (0-1000; absent: 5).
    #[serde(default, deserialize_with = "crate::optional_integer")]
    #[schema(minimum = 0, maximum = 1000)]
    pub max_apps: Option<i64>,
    /// Non-public address ranges (CIDR, e.g. `10.20.0.0/16`, `127.0.0.0/8`) the tenant's
    /// registries may resolve to; without one, a tenant's registry must be on a public
    /// address.
    #[serde(default)]
    pub open_ranges: Vec<String>,
    /// The tenant's registries may be plain HTTP (an on-premises registry without TLS,
    /// on a range opened above). Off: HTTPS only.
    #[serde(default)]
    pub plain_http: bool,
    /// The cap of each private app of the tenant (as `PUT /v1/limits/apps/…` takes it;
    /// may be tighter than partners' apps get). Absent values inherit.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub limits: serde_json::Map<String, serde_json::Value>,
}

/// Five private apps: enough for a tenant's in-house tools, and a bound the operator
/// raises deliberately.
pub const DEFAULT_MAX_PRIVATE_APPS: i64 = 5;

/// The policy that applies to a tenant and where it comes from.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivateAppPolicyView {
    /// The tenant, or `*` for the policy of every tenant without its own.
    pub tenant: String,
    /// `tenant` (its own), `every-tenant` (the operator's policy for all) or `default`
    /// (off: nothing set).
    pub source: String,
    pub enabled: bool,
    pub max_apps: i64,
    pub open_ranges: Vec<String>,
    pub plain_http: bool,
    #[schema(value_type = Object)]
    pub limits: serde_json::Map<String, serde_json::Value>,
    /// Private apps the tenant has (absent on the policy for every tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
}

/// A registry a tenant connects. HTTPS unless the operator allows plain HTTP for the
/// tenant; its addresses must be public unless the operator opened a range for the tenant.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantRegistryBody {
    /// Plain HTTP: only where the operator's policy for the tenant allows it (`plainHttp`).
    #[serde(default)]
    pub insecure: bool,
    /// PEM of CA certificates to trust for this registry (beside the web's roots).
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
    /// PEM of the client certificate (chain) the registry demands (mutual TLS).
    /// Write-only: never returned.
    #[serde(default)]
    #[schema(write_only)]
    pub client_certificate_pem: Option<String>,
    /// PEM of the client certificate's private key. Write-only: never returned.
    #[serde(default)]
    #[schema(write_only)]
    pub client_key_pem: Option<String>,
    /// Other hosts (`host[:port]`) the registry may redirect downloads to.
    #[serde(default)]
    pub blob_hosts: Vec<String>,
    /// Hosts of the registry's token service other than the registry itself.
    #[serde(default)]
    pub token_hosts: Vec<String>,
}

impl std::fmt::Debug for TenantRegistryBody {
    /// Without the password, token and key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRegistryBody").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A tenant's registry as read back: secrets only as whether they are set.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRegistryView {
    pub host: String,
    pub insecure: bool,
    pub ca_pem_set: bool,
    pub username: Option<String>,
    pub credentials_set: bool,
    pub client_certificate_set: bool,
    pub blob_hosts: Vec<String>,
    pub token_hosts: Vec<String>,
    pub updated_ms: i64,
}
