//! Automatic upgrades: an installation whose upgrade policy is `patch` or `minor` is
//! moved to the highest registered release its policy admits
//! (`UpgradePolicy::admits`: never a prerelease, a yanked or quarantined version, or a
//! downgrade) through `Kiosk::upgrade` — the new version's upgrade hook runs, the
//! licence is checked, and the write applies only if the installation is still at the
//! row version the pass read (a policy changed meanwhile wins).
//!
//! The pass runs after a watch registered versions (for that app) and periodically in
//! every replica (so a version registered through the API is taken up too); one
//! replica runs it at a time (a lease row, `pass_leases`), and one pass tries at most
//! `UPGRADES_PER_PASS` upgrades. An upgrade that fails keeps the old version, is
//! audited (`installation.auto-upgrade-failed`), noted for the tenant
//! (`note_auto_upgrade_failure`) and recorded, so the same (installation, version) is
//! never tried again; a failure a retry may fix (no sandbox slot, a concurrent write,
//! the host's storage) is left for the next pass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kiosk_domain::metering::now_ms;
use kiosk_runtime::logs::{Level, LogLine};
use kiosk_store::{InstallationRow, StoreError, VersionRow};

use crate::error::{Class, Failure, Kind};
use crate::lifecycle::{Kiosk, UpgradeRequest};

/// The lease row of the pass.
pub const PASS: &str = "auto-upgrade";
/// The actor of automatic upgrades in the audit log.
pub const ACTOR: &str = "kiosk:auto-upgrade";
/// Upgrades one pass tries (each runs an upgrade hook in a sandbox); the rest wait for
/// the next pass.
pub const UPGRADES_PER_PASS: usize = 100;
/// Installations read per query while a pass looks for work.
const PAGE: i64 = 500;
/// How long a replica holds the pass: far longer than `UPGRADES_PER_PASS` hooks, each
/// bounded by the sandbox timeout. The lease is given back when the pass ends.
pub const LEASE_MS: i64 = 15 * 60 * 1000;

/// What a pass did: (installation, version) upgraded, and failed with the reason.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub upgraded: Vec<(String, String)>,
    pub failed: Vec<(String, String, String)>,
}

/// The tenant-visible note that an automatic upgrade failed. The ONE place such a note
/// is written: a `kiosk:` line in the installation's log (where the app's own lines are,
/// readable by the tenant, the partner and the operator) and the server log.
pub async fn note_auto_upgrade_failure(state: &Kiosk, row: &InstallationRow, version: &str, reason: &str) {
    tracing::warn!(tenant = %row.tenant, installation = %row.id, from = %row.version, to = %version, %reason,
        "automatic upgrade failed; the installation stays on its version");
    let line = LogLine {
        at_ms: now_ms(),
        level: Level::Warn,
        message: kiosk_domain::text::sanitize_capped(
            &format!(
                "kiosk: automatic upgrade ({} policy) from {} to {version} failed, still on {}: {reason}",
                row.upgrade_policy, row.version, row.version
            ),
            4096,
        ),
    };
    state.note(&row.tenant, &row.id, "auto-upgrade", line).await;
}

/// The versions `row`'s policy admits, best first: releases above its version within
/// the policy, neither yanked nor quarantined.
pub fn candidates<'a>(row: &InstallationRow, versions: &'a [VersionRow]) -> Vec<&'a VersionRow> {
    let Ok(from) = semver::Version::parse(&row.version) else { return Vec::new() };
    let mut found: Vec<(semver::Version, &VersionRow)> = versions
        .iter()
        .filter(|v| !v.yanked && !v.quarantined)
        .filter_map(|v| semver::Version::parse(&v.version).ok().map(|sv| (sv, v)))
        .filter(|(sv, _)| row.upgrade_policy.admits(&from, sv))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, v)| v).collect()
}

/// A failure the next pass may not meet: no sandbox slot, a tenant limit, the host's
/// storage, a shutdown, or another write of the installation meanwhile.
fn retryable(f: &Failure) -> bool {
    matches!(f.class, Class::Unavailable | Class::RateLimited | Class::Internal) || f.kind == Kind::InstallationChanged
}

/// Runs a pass if this replica takes the lease (`None` if another replica holds it):
/// every installation with a policy (`app`: of that app only).
pub async fn run_pass(state: &Kiosk, replica: &str, app: Option<&str>) -> Result<Option<PassReport>, StoreError> {
    if !state.store.lease_pass(PASS, replica, now_ms() as i64, LEASE_MS).await? {
        return Ok(None);
    }
    let report = pass(state, app).await;
    state.store.release_pass(PASS, replica).await?;
    report.map(Some)
}

async fn pass(state: &Kiosk, app: Option<&str>) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    let mut versions: HashMap<String, Vec<VersionRow>> = HashMap::new();
    let mut tried = 0;
    let mut after = String::new();
    // A suspended tenant's or a disabled partner's installations wait: their upgrade
    // would be refused now and recorded as failed for good.
    let inactive = state.store.inactive().await?;
    let (suspended, disabled) = (inactive.suspended_tenants, inactive.disabled_partners);
    loop {
        let rows = state.store.policy_installations(app, &after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        for row in rows {
            let partner =
                kiosk_domain::ids::AppId::parse(&row.app).map(|a| a.partner().to_string()).unwrap_or_default();
            if suspended.contains(&row.tenant) || disabled.contains(&partner) {
                continue;
            }
            if !versions.contains_key(&row.app) {
                let list = state.store.versions(&row.app).await?;
                versions.insert(row.app.clone(), list);
            }
            let found = candidates(&row, &versions[&row.app]);
            if found.is_empty() {
                continue;
            }
            let failed: HashSet<String> = state.store.failed_auto_upgrades(&row.id).await?.into_iter().collect();
            let Some(target) = found.into_iter().find(|v| !failed.contains(&v.version)) else { continue };
            // The tenant consented to what the installed version reaches: a version
            // that reaches more (or sends a secret somewhere new) waits for the
            // tenant's own upgrade, recorded once like any refused upgrade.
            let installed = versions[&row.app].iter().find(|v| v.version == row.version);
            if let Some(new) = installed.and_then(|from| crate::egress::widened(from, target)) {
                let reason = format!(
                    "{} {} contacts more than the installed version ({new}); the tenant's consent is needed: \
                     upgrade by hand (egress-consent-needed)",
                    row.app, target.version
                );
                state.store.record_auto_upgrade_failure(&row.tenant, &row.id, &target.version, &reason, ACTOR).await?;
                note_auto_upgrade_failure(state, &row, &target.version, &reason).await;
                report.failed.push((row.id.clone(), target.version.clone(), reason));
                continue;
            }
            if tried >= UPGRADES_PER_PASS {
                return Ok(report);
            }
            tried += 1;
            let version = target.version.clone();
            let request = UpgradeRequest { version: Some(version.clone()), ..UpgradeRequest::default() };
            match state.upgrade_row(row.clone(), request, ACTOR).await {
                Ok(_) => report.upgraded.push((row.id.clone(), version)),
                Err(f) if retryable(&f) => {
                    tracing::info!(installation = %row.id, to = %version, reason = %f.detail,
                        "automatic upgrade postponed to the next pass");
                }
                Err(f) => {
                    let reason = format!("{} ({})", f.detail, f.kind);
                    state.store.record_auto_upgrade_failure(&row.tenant, &row.id, &version, &reason, ACTOR).await?;
                    note_auto_upgrade_failure(state, &row, &version, &reason).await;
                    report.failed.push((row.id.clone(), version, reason));
                }
            }
        }
    }
    Ok(report)
}

/// Runs `run_pass` every `period` until the process ends.
pub fn spawn(state: Arc<Kiosk>, period: Duration) -> tokio::task::JoinHandle<()> {
    let replica = uuid::Uuid::new_v4().to_string();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match run_pass(&state, &replica, None).await {
                Ok(Some(report)) if !report.upgraded.is_empty() || !report.failed.is_empty() => {
                    tracing::info!(
                        upgraded = report.upgraded.len(),
                        failed = report.failed.len(),
                        "automatic upgrades"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "automatic-upgrade pass failed"),
            }
        }
    })
}

impl Kiosk {
    /// Sets how far Kiosk upgrades an installation by itself; the next pass applies it.
    pub async fn set_upgrade_policy(
        &self,
        tenant: &str,
        id: &str,
        policy: kiosk_domain::upgrade::UpgradePolicy,
        actor: &str,
    ) -> Result<InstallationRow, Failure> {
        if !self.store.set_upgrade_policy(tenant, id, policy, actor).await? {
            return Err(Failure::not_found(format!("no installation {id:?}")));
        }
        self.installation(tenant, id).await
    }
}
