//! `kiosk admin tenants`, and what belongs to tenants: `entitlements` (their licences to
//! apps), `installations` and an installation's `logs`.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::api::{Request, Shape, app_segments};

#[derive(Debug, Subcommand)]
pub(super) enum TenantsCmd {
    List,
    Show {
        tenant: String,
    },
    Create {
        id: String,
        #[arg(long)]
        display: Option<String>,
    },
    /// Refuses the tenant's installs, changes and calls until resumed.
    Suspend {
        tenant: String,
    },
    Resume {
        tenant: String,
    },
    /// Switches a tenant's own apps on (with --off, off); `*` sets the policy of every
    /// tenant without one of its own.
    SetPrivateApps {
        tenant: String,
        #[arg(long)]
        off: bool,
        /// How many private apps the tenant may have (default 5).
        #[arg(long)]
        max_apps: Option<i64>,
        /// A non-public range (CIDR) its registries may be on; repeatable.
        #[arg(long = "open-range")]
        open_ranges: Vec<String>,
        /// Its registries may be plain HTTP.
        #[arg(long)]
        plain_http: bool,
    },
    /// The private-app policy that applies to a tenant, and its private apps.
    PrivateApps {
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum EntitlementsCmd {
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        partner: Option<String>,
    },
    /// Grants (or, with --revoked, revokes) a tenant's licence to an app.
    Set {
        tenant: String,
        /// `partner/name`.
        app: String,
        #[arg(long)]
        expires_ms: Option<i64>,
        #[arg(long)]
        revoked: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum InstallationsCmd {
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// `partner/name`.
        #[arg(long)]
        app: Option<String>,
    },
    /// One installation, with its effective limits and where each came from.
    Show { tenant: String, id: String },
}

#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    tenant: String,
    installation: String,
    /// Only lines after this cursor (from a previous `next`).
    #[arg(long)]
    since: Option<String>,
}

const TENANT_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("DISPLAY", "display"), ("SUSPENDED", "suspended"), ("CREATED", "createdMs")];
const ENTITLEMENT_COLUMNS: &[(&str, &str)] =
    &[("TENANT", "tenant"), ("APP", "app"), ("EXPIRES", "expiresMs"), ("REVOKED", "revoked")];
const INSTALLATION_COLUMNS: &[(&str, &str)] =
    &[("TENANT", "tenant"), ("ID", "id"), ("APP", "app"), ("VERSION", "version"), ("UPDATED", "updatedMs")];

impl TenantsCmd {
    pub(super) fn request(self) -> Request {
        match self {
            TenantsCmd::List => Request::get(&["v1", "tenants"], Shape::List(TENANT_COLUMNS)),
            TenantsCmd::Show { tenant } => Request::get(&["v1", "tenants", &tenant], Shape::Object),
            TenantsCmd::Create { id, display } => {
                Request::post(&["v1", "tenants"], Some(json!({"id": id, "display": display})))
            }
            TenantsCmd::Suspend { tenant } => Request::post(&["v1", "tenants", &tenant, "suspend"], None),
            TenantsCmd::Resume { tenant } => Request::post(&["v1", "tenants", &tenant, "resume"], None),
            TenantsCmd::SetPrivateApps { tenant, off, max_apps, open_ranges, plain_http } => {
                let mut body = json!({"enabled": !off, "openRanges": open_ranges, "plainHttp": plain_http});
                if let Some(max) = max_apps {
                    body["maxApps"] = max.into();
                }
                let path: &[&str] =
                    if tenant == "*" { &["v1", "private-apps"] } else { &["v1", "tenants", &tenant, "private-apps"] };
                Request::new(Method::PUT, path, Some(body), Shape::Object)
            }
            TenantsCmd::PrivateApps { tenant } => {
                let path: &[&str] =
                    if tenant == "*" { &["v1", "private-apps"] } else { &["v1", "tenants", &tenant, "private-apps"] };
                Request::get(path, Shape::Object)
            }
        }
    }
}

impl EntitlementsCmd {
    pub(super) fn request(self) -> anyhow::Result<Request> {
        Ok(match self {
            EntitlementsCmd::List { tenant, partner } => {
                Request::get(&["v1", "entitlements"], Shape::List(ENTITLEMENT_COLUMNS))
                    .query("tenant", tenant)
                    .query("partner", partner)
            }
            EntitlementsCmd::Set { tenant, app, expires_ms, revoked } => {
                let (partner, name) = app_segments(&app)?;
                Request::new(
                    Method::PUT,
                    &["v1", "entitlements", &tenant, partner, name],
                    Some(json!({"expiresMs": expires_ms, "revoked": revoked})),
                    Shape::Object,
                )
            }
        })
    }
}

impl InstallationsCmd {
    pub(super) fn request(self) -> Request {
        match self {
            InstallationsCmd::List { tenant, app } => {
                Request::get(&["v1", "installations"], Shape::List(INSTALLATION_COLUMNS))
                    .query("tenant", tenant)
                    .query("app", app)
            }
            InstallationsCmd::Show { tenant, id } => {
                Request::get(&["v1", "tenants", &tenant, "installations", &id], Shape::Object)
            }
        }
    }
}

impl LogsArgs {
    pub(super) fn request(self) -> Request {
        Request::get(&["v1", "tenants", &self.tenant, "installations", &self.installation, "logs"], Shape::Logs)
            .query("since", self.since)
    }
}
