//! Tenants' own apps (SPEC §2 step 5, issue 30): off unless the operator switches them
//! on for a tenant (or every tenant). A tenant with the switch on connects registries,
//! adds its OpenPGP certificates and registers versions of its own apps in its private
//! namespace `~tenant` (`~shop/inventory`), which no partner name can spell. Everything
//! partners' apps get applies, because the namespace is handled as a partner is:
//! signatures checked against the namespace's certificates before compiling, tags pinned,
//! quarantine on revocation, the compile-and-run probe, metering, logs, limits. What
//! differs: the registry is the tenant's (its addresses public unless the operator opened
//! a range for the tenant), the operator's quota bounds how many apps, the policy's limits
//! cap each app, and only the tenant sees and installs them.

use ipnet::IpNet;

use kiosk_api::private_apps::{
    DEFAULT_MAX_PRIVATE_APPS, PrivateAppPolicy, PrivateAppPolicyView, TenantRegistryBody, TenantRegistryView,
};
use kiosk_api::registries::RegistryBody;
use kiosk_api::trust::{CertificateRemoved, CertificateView, CertificatesAdded};
use kiosk_distribution::artifact::ArtifactRef;
use kiosk_distribution::registry::{Registry, RegistrySettings};
use kiosk_domain::ids::{AppId, private_namespace, private_owner};
use kiosk_domain::limits::LimitValues;
use kiosk_domain::net::{ip_literal, parse_open_range, reachable, split_port};
use kiosk_store::{PrivateAppPolicyRow, TenantRegistryRow, VersionRow};

use crate::catalog::CatalogEntry;
use crate::error::{Failure, Kind, Result};
use crate::kiosk::Kiosk;
use crate::operator::limit_failure;
use crate::registration::Registered;
use crate::secrets::RegistrySecret;

/// Most ranges one policy opens: a tenant's on-premises registries sit in a few networks.
const MAX_OPEN_RANGES: usize = 32;
/// Most private apps an operator may allow one tenant: the quota is a bound, not a switch.
const MAX_QUOTA: i64 = 1000;
/// Most registries one tenant connects.
pub const MAX_TENANT_REGISTRIES: usize = 16;
/// Most certificates one tenant registers: a team's signing keys and their successors.
const MAX_TENANT_CERTIFICATES: usize = 32;
/// Most blob or token hosts per registry.
const MAX_EXTRA_HOSTS: usize = 16;
/// PEM texts (CA bundle, client certificate chain) and a private key: far above real ones.
const MAX_PEM_BYTES: usize = 64 * 1024;
/// User names, passwords and tokens.
const MAX_CREDENTIAL_BYTES: usize = 4096;

fn invalid_policy(field: &str, detail: impl Into<String>) -> Failure {
    Failure::unprocessable(Kind::InvalidPrivateAppPolicy, detail).field(field)
}

fn invalid_registry(field: &str, detail: impl Into<String>) -> Failure {
    Failure::unprocessable(Kind::InvalidRegistry, detail).field(field)
}

/// What a tenant's registry secret is sealed with (bound to the tenant and the host).
fn seal_context(tenant: &str, host: &str) -> String {
    format!("tenant-registry/{tenant}/{host}")
}

/// The tenant's private namespace, or 404 for a name that is not a tenant's id.
fn namespace(tenant: &str) -> Result<String> {
    let ns = private_namespace(tenant);
    private_owner(&ns).map(|_| ns.clone()).ok_or_else(|| Failure::not_found(format!("no tenant {tenant:?}")))
}

/// The policy that applies to a tenant, with where it comes from.
struct Effective {
    row: PrivateAppPolicyRow,
    source: &'static str,
}

impl Effective {
    fn open_ranges(&self) -> Vec<IpNet> {
        self.row.open_ranges.iter().filter_map(|r| parse_open_range(r).ok()).collect()
    }
}

/// The view of `row` as it applies to `tenant` (`*`: every tenant) from `source`.
fn policy_view(
    tenant: &str,
    source: &str,
    row: &PrivateAppPolicyRow,
    apps: Option<Vec<String>>,
) -> PrivateAppPolicyView {
    let limits = match serde_json::to_value(&row.limits) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    PrivateAppPolicyView {
        tenant: tenant.to_string(),
        source: source.to_string(),
        enabled: row.enabled,
        max_apps: row.max_apps,
        open_ranges: row.open_ranges.clone(),
        plain_http: row.plain_http,
        limits,
        apps,
    }
}

/// Whether `authority` (`host[:port]`) may be contacted under `open`: a name is judged
/// when it is resolved (the registry client's resolver), a literal address and
/// `localhost` here. The refusal names the kind of address.
fn literal_reachable(authority: &str, open: &[IpNet]) -> std::result::Result<(), String> {
    let (host, _port) = split_port(authority)?;
    let addresses: Vec<std::net::IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()]
    } else {
        ip_literal(host).into_iter().collect()
    };
    for ip in addresses {
        if let Err(what) = reachable(ip, open) {
            return Err(format!(
                "{authority} is a {what} address ({ip}): a tenant's registry must be on a public address unless the \
                 operator opens its range for the tenant"
            ));
        }
    }
    Ok(())
}

fn text_field(field: &str, value: &Option<String>, max: usize) -> Result<()> {
    match value {
        Some(v) if v.len() > max => Err(invalid_registry(field, format!("{field} is longer than {max} bytes"))),
        Some(v) if v.is_empty() => Err(invalid_registry(field, format!("{field} is empty: leave it out instead"))),
        _ => Ok(()),
    }
}

impl Kiosk {
    // --- the operator's switch ----------------------------------------------------------

    async fn effective_private_policy(&self, tenant: &str) -> Result<Effective> {
        let rows = self.store.private_app_policies_of(tenant).await?;
        Ok(match rows.into_iter().next() {
            Some(row) if row.tenant == tenant => Effective { row, source: "tenant" },
            Some(row) => Effective { row, source: "every-tenant" },
            None => Effective {
                row: PrivateAppPolicyRow {
                    tenant: String::new(),
                    enabled: false,
                    max_apps: DEFAULT_MAX_PRIVATE_APPS,
                    ..Default::default()
                },
                source: "default",
            },
        })
    }

    /// The private-app policy of `tenant` (`None`: the one for every tenant) as it
    /// applies, with the tenant's private apps.
    pub async fn private_app_policy(&self, tenant: Option<&str>) -> Result<PrivateAppPolicyView> {
        match tenant {
            Some(tenant) => {
                self.require_tenant(tenant).await?;
                let effective = self.effective_private_policy(tenant).await?;
                let apps = self.store.private_apps(tenant).await?;
                Ok(policy_view(tenant, effective.source, &effective.row, Some(apps)))
            }
            None => {
                let rows = self.store.private_app_policies().await?;
                let (row, source) = match rows.into_iter().find(|r| r.tenant.is_empty()) {
                    Some(row) => (row, "every-tenant"),
                    None => {
                        (PrivateAppPolicyRow { max_apps: DEFAULT_MAX_PRIVATE_APPS, ..Default::default() }, "default")
                    }
                };
                Ok(policy_view("*", source, &row, None))
            }
        }
    }

    /// Sets the policy of `tenant` (`None`: every tenant without its own). Each private
    /// app it governs gets the policy's limits as its cap.
    pub async fn put_private_app_policy(
        &self,
        tenant: Option<&str>,
        body: PrivateAppPolicy,
        actor: &str,
    ) -> Result<PrivateAppPolicyView> {
        if let Some(tenant) = tenant {
            self.require_tenant(tenant).await?;
        }
        let max_apps = body.max_apps.unwrap_or(DEFAULT_MAX_PRIVATE_APPS);
        if !(0..=MAX_QUOTA).contains(&max_apps) {
            return Err(invalid_policy("maxApps", format!("maxApps {max_apps} is out of range: use 0-{MAX_QUOTA}")));
        }
        if body.open_ranges.len() > MAX_OPEN_RANGES {
            return Err(invalid_policy("openRanges", format!("at most {MAX_OPEN_RANGES} ranges")));
        }
        let mut ranges = Vec::new();
        for (i, text) in body.open_ranges.iter().enumerate() {
            let net = parse_open_range(text).map_err(|e| invalid_policy(&format!("openRanges/{i}"), e))?;
            ranges.push(net.to_string());
        }
        let limits = LimitValues::from_json(&serde_json::Value::Object(body.limits.clone()), &self.config.sandbox)
            .map_err(|e| {
                let field = if e.field.is_empty() { "limits".to_string() } else { format!("limits/{}", e.field) };
                limit_failure(e).field(field)
            })?;
        let row = PrivateAppPolicyRow {
            tenant: tenant.unwrap_or_default().to_string(),
            enabled: body.enabled,
            max_apps,
            open_ranges: ranges,
            plain_http: body.plain_http,
            limits,
            updated_ms: 0,
        };
        self.store.put_private_app_policy(&row, actor).await?;
        if let Some(tenant) = tenant
            && row.enabled
        {
            self.store.ensure_private_namespace(tenant, actor).await?;
        }
        self.cap_private_apps(tenant, actor).await?;
        self.private_app_policy(tenant).await
    }

    /// Removes `tenant`'s own policy (the one for every tenant applies again).
    pub async fn delete_private_app_policy(&self, tenant: &str, actor: &str) -> Result<()> {
        if !self.store.delete_private_app_policy(tenant, actor).await? {
            return Err(Failure::not_found(format!("tenant {tenant:?} has no private-app policy of its own")));
        }
        self.cap_private_apps(Some(tenant), actor).await
    }

    /// Writes the governing policy's limits as the cap of each private app of `tenant`
    /// (`None`: of every tenant).
    async fn cap_private_apps(&self, tenant: Option<&str>, actor: &str) -> Result<()> {
        let apps: Vec<String> = match tenant {
            Some(t) => self.store.private_apps(t).await?,
            None => self
                .store
                .apps()
                .await?
                .into_iter()
                .map(|a| a.app)
                .filter(|a| AppId::parse(a).is_ok_and(|id| id.private_owner().is_some()))
                .collect(),
        };
        for app in apps {
            let Some(owner) = AppId::parse(&app).ok().and_then(|id| id.private_owner().map(str::to_string)) else {
                continue;
            };
            let effective = self.effective_private_policy(&owner).await?;
            self.store.put_limit_layer("", &app, &effective.row.limits, actor).await?;
        }
        Ok(())
    }

    /// The policy of a tenant whose private apps are switched on; else
    /// `private-apps-off` (403, field `tenant`).
    async fn private_apps_on(&self, tenant: &str) -> Result<Effective> {
        let effective = self.effective_private_policy(tenant).await?;
        if !effective.row.enabled {
            return Err(Failure::forbidden(
                Kind::PrivateAppsOff,
                format!(
                    "private apps are off for tenant {tenant}: the operator switches them on \
                     (PUT /v1/tenants/{tenant}/private-apps)"
                ),
            )
            .field("tenant"));
        }
        self.store.ensure_private_namespace(tenant, crate::kiosk::SYSTEM).await?;
        Ok(effective)
    }

    // --- the tenant's registries --------------------------------------------------------

    fn tenant_registry_view(&self, r: &TenantRegistryRow) -> TenantRegistryView {
        let secret = self.open_registry_secret(r.secret.as_deref(), &seal_context(&r.tenant, &r.host)).ok();
        TenantRegistryView {
            host: r.host.clone(),
            insecure: r.insecure,
            ca_pem_set: r.ca_pem.is_some(),
            username: r.username.clone(),
            credentials_set: secret.as_ref().is_some_and(RegistrySecret::credentials_set),
            client_certificate_set: secret.as_ref().is_some_and(RegistrySecret::client_certificate_set),
            blob_hosts: r.blob_hosts.clone(),
            token_hosts: r.token_hosts.clone(),
            updated_ms: r.updated_ms,
        }
    }

    /// A tenant's registries, by host (what the tenant connected; secrets only as set).
    pub async fn tenant_registries(&self, tenant: &str) -> Result<Vec<TenantRegistryView>> {
        Ok(self.store.tenant_registries(tenant).await?.iter().map(|r| self.tenant_registry_view(r)).collect())
    }

    /// Connects (or replaces) registry `host` for `tenant`: HTTPS, its literal addresses
    /// public or in a range the operator opened for the tenant, secrets sealed.
    pub async fn put_tenant_registry(
        &self,
        tenant: &str,
        host: &str,
        body: TenantRegistryBody,
        actor: &str,
    ) -> Result<TenantRegistryView> {
        let effective = self.private_apps_on(tenant).await?;
        let open = effective.open_ranges();
        let host = host.to_ascii_lowercase();
        for (field, hosts) in [("blobHosts", &body.blob_hosts), ("tokenHosts", &body.token_hosts)] {
            if hosts.len() > MAX_EXTRA_HOSTS {
                return Err(invalid_registry(field, format!("at most {MAX_EXTRA_HOSTS} hosts")));
            }
        }
        if body.insecure && !effective.row.plain_http {
            return Err(Failure::unprocessable(
                Kind::RegistryNotAllowed,
                format!("plain HTTP: the operator allows tenant {tenant}'s registries HTTPS only"),
            )
            .field("insecure"));
        }
        text_field("caPem", &body.ca_pem, MAX_PEM_BYTES)?;
        for (field, value) in [("username", &body.username), ("password", &body.password), ("token", &body.token)] {
            text_field(field, value, MAX_CREDENTIAL_BYTES)?;
        }
        // The operator's rules for a registry body, on the parts a tenant may set.
        let checked = RegistryBody {
            ca_pem: body.ca_pem.clone(),
            username: body.username.clone(),
            password: body.password,
            token: body.token,
            client_certificate_pem: body.client_certificate_pem,
            client_key_pem: body.client_key_pem,
            blob_hosts: body.blob_hosts.clone(),
            token_hosts: body.token_hosts.clone(),
            ..RegistryBody::default()
        };
        crate::registries::check_registry_body(&host, &checked)?;
        for (field, authority) in std::iter::once(("host", &host))
            .chain(body.blob_hosts.iter().map(|h| ("blobHosts", h)))
            .chain(body.token_hosts.iter().map(|h| ("tokenHosts", h)))
        {
            literal_reachable(authority, &open)
                .map_err(|detail| Failure::unprocessable(Kind::RegistryNotAllowed, detail).field(field))?;
        }
        let existing = self.store.tenant_registries(tenant).await?;
        if existing.len() >= MAX_TENANT_REGISTRIES && !existing.iter().any(|r| r.host == host) {
            return Err(invalid_registry(
                "host",
                format!("tenant {tenant} has {MAX_TENANT_REGISTRIES} registries, the most it may connect"),
            ));
        }
        let sealed = self.registry_secret_from_body(&checked, &seal_context(tenant, &host));
        let row = TenantRegistryRow {
            tenant: tenant.to_string(),
            host,
            insecure: body.insecure,
            ca_pem: body.ca_pem,
            username: body.username,
            secret: sealed,
            blob_hosts: body.blob_hosts,
            token_hosts: body.token_hosts,
            updated_ms: kiosk_domain::metering::now_ms() as i64,
        };
        self.store.put_tenant_registry(&row, actor).await?;
        Ok(self.tenant_registry_view(&row))
    }

    /// Disconnects a tenant's registry (its registered versions stay: they are pinned).
    pub async fn delete_tenant_registry(&self, tenant: &str, host: &str, actor: &str) -> Result<()> {
        if !self.store.delete_tenant_registry(tenant, &host.to_ascii_lowercase(), actor).await? {
            return Err(Failure::not_found(format!("tenant {tenant} has no registry {host:?}")));
        }
        Ok(())
    }

    // --- the tenant's certificates ----------------------------------------------------

    /// Adds the tenant's OpenPGP certificates (or revocations of them): they sign the
    /// tenant's private apps only. A fingerprint a partner or another tenant registered
    /// is `certificate-owned`.
    pub async fn add_tenant_certificates(&self, tenant: &str, bytes: &[u8], actor: &str) -> Result<CertificatesAdded> {
        self.private_apps_on(tenant).await?;
        let ns = namespace(tenant)?;
        if self.certificates(&ns).await?.len() >= MAX_TENANT_CERTIFICATES {
            return Err(Failure::unprocessable(
                Kind::InvalidCertificate,
                format!(
                    "tenant {tenant} has {MAX_TENANT_CERTIFICATES} certificates, the most it may register: remove one \
                     first"
                ),
            )
            .field("certificate"));
        }
        let mut added = self.add_certificates(&ns, bytes, actor).await?;
        added.partner = tenant.to_string();
        Ok(added)
    }

    /// The tenant's certificates, by fingerprint.
    pub async fn tenant_certificates(&self, tenant: &str) -> Result<Vec<CertificateView>> {
        let ns = namespace(tenant)?;
        if !self.store.partner_exists(&ns).await? {
            return Ok(Vec::new());
        }
        self.certificates(&ns).await
    }

    /// Removes one of the tenant's certificates: the versions it signed are quarantined.
    pub async fn remove_tenant_certificate(
        &self,
        tenant: &str,
        fingerprint: &str,
        actor: &str,
    ) -> Result<CertificateRemoved> {
        let ns = namespace(tenant)?;
        if !self.store.partner_exists(&ns).await? {
            return Err(Failure::not_found(format!("tenant {tenant} has no certificate {fingerprint}")));
        }
        self.remove_certificate(&ns, fingerprint, actor).await
    }

    // --- the tenant's apps --------------------------------------------------------------

    /// The tenant's private apps with every version, by id.
    pub async fn tenant_private_apps(&self, tenant: &str) -> Result<Vec<(CatalogEntry, Vec<VersionRow>)>> {
        self.partner_apps(&namespace(tenant)?).await
    }

    /// Registers `~tenant/name` from `reference` on one of the tenant's registries:
    /// the switch, the registry and the quota are decided before any network I/O.
    pub async fn register_private(&self, tenant: &str, name: &str, reference: &str, actor: &str) -> Result<Registered> {
        let effective = self.private_apps_on(tenant).await?;
        let ns = namespace(tenant)?;
        let app = AppId::new(&ns, name).map_err(|e| Failure::not_found(e.to_string()).field("name"))?.to_string();
        let reference = reference.trim();
        let parsed = ArtifactRef::parse(reference)
            .map_err(|detail| Failure::unprocessable(Kind::InvalidReference, detail).field("reference"))?;
        let ArtifactRef::Registry { host, repository, tag } = &parsed else {
            return Err(Failure::unprocessable(
                Kind::LayoutNotAllowed,
                "oci-layout: directories are an operator's source: register from one of your registries, \
                 host/repository:tag",
            )
            .field("reference"));
        };
        let not_allowed = |detail: String| Failure::unprocessable(Kind::RegistryNotAllowed, detail).field("reference");
        let registries = self.store.tenant_registries(tenant).await?;
        let Some(row) = registries.iter().find(|r| r.host.eq_ignore_ascii_case(host)) else {
            return Err(not_allowed(format!(
                "registry {host} is not one of tenant {tenant}'s registries: connect it first \
                 (PUT /v1/tenants/{tenant}/registries/{host})"
            )));
        };
        let open = effective.open_ranges();
        // The operator may have narrowed the ranges since the registry was connected.
        for authority in std::iter::once(&row.host).chain(&row.blob_hosts).chain(&row.token_hosts) {
            literal_reachable(authority, &open).map_err(not_allowed)?;
        }
        if row.insecure && !effective.row.plain_http {
            return Err(not_allowed(format!(
                "registry {host} is plain HTTP, which the operator no longer allows for tenant {tenant}"
            )));
        }
        let known = self.store.private_apps(tenant).await?;
        let new_app = !known.contains(&app);
        if new_app && known.len() as i64 >= effective.row.max_apps {
            return Err(self.over_quota(tenant, &effective));
        }
        let mut settings = RegistrySettings {
            host: row.host.clone(),
            insecure: row.insecure,
            ca_pem: row.ca_pem.clone(),
            username: row.username.clone(),
            blob_hosts: row.blob_hosts.clone(),
            token_hosts: row.token_hosts.clone(),
            open_ranges: Some(open),
            ..Default::default()
        };
        self.open_registry_secret(row.secret.as_deref(), &seal_context(tenant, &row.host))?.apply_to(&mut settings);
        let registry = Registry::new(&settings, self.config.transfer)
            .map_err(|e| invalid_registry("reference", format!("registry {host}: {e}")))?;
        // The policy's limits are the new app's cap before its probe runs under them.
        if new_app {
            self.store.put_limit_layer("", &app, &effective.row.limits, actor).await?;
        }
        let outcome = self.register(&registry.repository(repository), &app, tag, reference, actor).await;
        if outcome.is_err() && new_app && self.store.versions(&app).await?.is_empty() {
            self.store.delete_limit_layer("", &app, actor).await?;
            // Lost a race for the last place under the quota (the store's backstop).
            let effective = self.effective_private_policy(tenant).await?;
            if self.store.private_apps(tenant).await?.len() as i64 >= effective.row.max_apps {
                return Err(self.over_quota(tenant, &effective));
            }
        }
        outcome
    }

    fn over_quota(&self, tenant: &str, effective: &Effective) -> Failure {
        Failure::unprocessable(
            Kind::PrivateAppQuota,
            format!(
                "tenant {tenant} has {} private apps, the most the operator allows: a new app needs a higher \
                 quota (maxApps)",
                effective.row.max_apps
            ),
        )
        .field("name")
    }
}
