//! The core's part of outbound HTTP: what a 0.2.0 app's hooks see of its configuration
//! (placeholders for secrets) and the tenant's layer each call of it carries (the URLs
//! the tenant set, the bound secrets' values). Decided here, once for every front end;
//! enforced by the runtime's `egress` gate.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use kiosk_domain::egress::placeholder;
use kiosk_domain::manifest::Manifest;
use kiosk_domain::net::HostPattern;
use kiosk_runtime::egress::InstallationEgress;
use kiosk_runtime::runtime::{AppVersion, Installation};
use kiosk_store::{EgressSwitchRow, InstallationRow, OperatorEgress, VersionRow};

use crate::error::{Failure, Kind};
use crate::lifecycle::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// The configuration an app's hooks receive, as JSON text: for a 0.2.0 app each secret
/// (`writeOnly` value) is replaced by its placeholder, whatever its type; a 0.1.0 app
/// (no network) receives the values, as it always has.
pub(crate) fn hook_config(app: &AppVersion, config: &Value, secret_pointers: &[String]) -> String {
    if !app.component.has_egress() || secret_pointers.is_empty() {
        return config.to_string();
    }
    let mut shown = config.clone();
    for pointer in secret_pointers {
        if let Some(slot) = shown.pointer_mut(pointer) {
            *slot = Value::String(placeholder(pointer));
        }
    }
    shown.to_string()
}

/// The tenant's layer of a call of `app` for an installation whose full configuration
/// (secrets opened) is `config`; `None` for a 0.1.0 app.
pub(crate) fn installation_egress(
    app: &AppVersion,
    config: &Value,
    secret_pointers: &[String],
    switch: Option<&EgressSwitchRow>,
    operator: &OperatorEgress,
) -> Option<Arc<InstallationEgress>> {
    if !app.component.has_egress() {
        return None;
    }
    let config_urls = app
        .egress
        .config_urls()
        .map(|pointer| {
            let destination = match config.pointer(pointer) {
                Some(Value::String(url)) => InstallationEgress::destination_of_url(url),
                Some(_) => Err(format!("the configuration value at {pointer} is not a URL")),
                None => Err(format!("the configuration sets no URL at {pointer}")),
            };
            (pointer.to_string(), destination)
        })
        .collect();
    let bound: Vec<&String> = app.egress.entries.iter().flat_map(|e| e.secrets.iter()).collect();
    let secrets: BTreeMap<String, String> = secret_pointers
        .iter()
        .filter(|p| bound.contains(p))
        .filter_map(|p| match config.pointer(p) {
            Some(Value::String(v)) => Some((p.clone(), v.clone())),
            _ => None,
        })
        .collect();
    Some(Arc::new(InstallationEgress {
        operator_disabled: !operator.enabled,
        // Checked when set (`set_egress_policy`); one that no longer parses denies nothing.
        operator_deny: operator.deny.iter().filter_map(|d| HostPattern::parse(d).ok()).collect(),
        enabled: switch.is_none_or(|s| s.enabled),
        kept: switch.and_then(|s| s.destinations.clone()),
        config_urls,
        secrets,
    }))
}

/// What version `to` of an app reaches beyond version `from`, as the tenant would be
/// told (`None`: nothing new, so moving an installation needs no new consent). A
/// manifest that does not parse counts as declaring nothing (so every destination of
/// `to` is new when `from` does not parse).
pub(crate) fn widened(from: &VersionRow, to: &VersionRow) -> Option<String> {
    let outbound = |v: &VersionRow| {
        Manifest::parse(v.manifest.as_bytes(), &kiosk_runtime::world::HOST_API_VERSION)
            .map(|m| m.outbound())
            .unwrap_or_default()
    };
    let new = kiosk_domain::egress::widening(&outbound(from), &outbound(to));
    (!new.is_empty()).then(|| new.join("; "))
}

/// Most destinations a tenant may list when narrowing (the manifest declares at most
/// as many).
const MAX_KEPT: usize = kiosk_domain::egress::MAX_OUTBOUND_ENTRIES;

/// An installation's outbound HTTP as the tenant sees and sets it.
#[derive(Debug, Clone)]
pub struct EgressView {
    /// `false`: switched off by the tenant.
    pub enabled: bool,
    /// Every destination the app declares: (key, secrets bound, kept by the tenant).
    pub destinations: Vec<(String, Vec<String>, bool)>,
}

impl Kiosk {
    /// The tenant's egress switch of an installation (`None` for a 0.1.0 app, which
    /// makes no requests), read only for apps that have outbound HTTP.
    pub(crate) async fn egress_switch(
        &self,
        app: &AppVersion,
        tenant: &str,
        id: &str,
    ) -> Result<Option<EgressSwitchRow>> {
        if !app.component.has_egress() {
            return Ok(None);
        }
        Ok(self.store.egress_switch(tenant, id).await?)
    }

    /// An installation's outbound HTTP: what the app declares and what the tenant kept.
    pub async fn installation_egress(&self, tenant: &str, id: &str) -> Result<EgressView> {
        let row = self.installation(tenant, id).await?;
        let app = self.installed_app(&row).await?;
        let switch = self.egress_switch(&app, tenant, id).await?;
        Ok(view(&app, switch.as_ref()))
    }

    /// Switches an installation's outbound HTTP on or off, or narrows it to some of the
    /// destinations its app declares (by `Target::key`; never widening). Audited.
    pub async fn set_installation_egress(
        &self,
        tenant: &str,
        id: &str,
        enabled: bool,
        destinations: Option<Vec<String>>,
        actor: &str,
    ) -> Result<EgressView> {
        let row = self.installation(tenant, id).await?;
        let app = self.installed_app(&row).await?;
        if !app.component.has_egress() || app.egress.entries.is_empty() {
            return Err(Failure::unprocessable(
                Kind::NoOutboundHttp,
                format!("{}@{} declares no outbound destinations", app.manifest.app, app.manifest.version),
            ));
        }
        if let Some(list) = &destinations {
            if list.len() > MAX_KEPT {
                return Err(Failure::unprocessable(
                    Kind::InvalidDestinations,
                    format!("at most {MAX_KEPT} destinations"),
                )
                .field("destinations"));
            }
            let declared: Vec<String> = app.egress.entries.iter().map(|e| e.target.key()).collect();
            for (i, d) in list.iter().enumerate() {
                if !declared.contains(d) {
                    return Err(Failure::unprocessable(
                        Kind::InvalidDestinations,
                        format!(
                            "{:?} is not a destination {} declares (declared: {})",
                            kiosk_domain::text::sanitize(d),
                            app.manifest.app,
                            declared.join(", ")
                        ),
                    )
                    .field(format!("destinations/{i}")));
                }
            }
        }
        let switch = EgressSwitchRow { enabled, destinations, updated_ms: kiosk_domain::metering::now_ms() as i64 };
        if !self.store.set_egress_switch(tenant, id, &switch, actor).await? {
            return Err(Failure::not_found(format!("no installation {id:?}")));
        }
        Ok(view(&app, Some(&switch)))
    }

    /// `call` with the tenant's egress layer for the installation `row` (opening its
    /// secrets only when the app binds any), its switch read from the database.
    pub(crate) async fn with_row_egress(
        &self,
        app: &AppVersion,
        row: &InstallationRow,
        call: Installation,
    ) -> Result<Installation> {
        let switch = self.egress_switch(app, &row.tenant, &row.id).await?;
        let operator = self.operator_egress(app).await?;
        self.with_egress_of(app, row, switch.as_ref(), &operator, call)
    }

    /// The operator's API layer for `app`'s partner (nothing for a 0.1.0 app, which has
    /// no network).
    pub(crate) async fn operator_egress(&self, app: &AppVersion) -> Result<OperatorEgress> {
        if !app.component.has_egress() {
            return Ok(OperatorEgress::default());
        }
        let Some(id) = app.manifest.app_id() else { return Ok(OperatorEgress::default()) };
        Ok(self.store.operator_egress(id.partner()).await?)
    }

    /// `call` with the tenant's egress layer for `row` under `switch`, and the
    /// operator's API layer `operator`.
    pub(crate) fn with_egress_of(
        &self,
        app: &AppVersion,
        row: &InstallationRow,
        switch: Option<&EgressSwitchRow>,
        operator: &OperatorEgress,
        call: Installation,
    ) -> Result<Installation> {
        if !app.component.has_egress() {
            return Ok(call);
        }
        let mut config: Value = serde_json::from_str(&row.config).unwrap_or(Value::Null);
        let mut pointers = Vec::new();
        if app.egress.binds_secrets() || app.egress.config_urls().next().is_some() {
            for (pointer, value) in self.open_secrets(row)? {
                kiosk_domain::manifest::put_pointer(&mut config, &pointer, value);
                pointers.push(pointer);
            }
        }
        Ok(match installation_egress(app, &config, &pointers, switch, operator) {
            Some(layer) => call.with_egress(layer),
            None => call,
        })
    }
}

fn view(app: &AppVersion, switch: Option<&EgressSwitchRow>) -> EgressView {
    let kept = switch.and_then(|s| s.destinations.clone());
    EgressView {
        enabled: switch.is_none_or(|s| s.enabled),
        destinations: app
            .egress
            .entries
            .iter()
            .map(|e| {
                let key = e.target.key();
                let keep = kept.as_ref().is_none_or(|k| k.contains(&key));
                (key, e.secrets.clone(), keep)
            })
            .collect(),
    }
}
