//! The lifecycle of installations — install, configure, upgrade, uninstall, invoke,
//! report — and the licence checks they make, once for every front end: the HTTP API,
//! `kiosk run`, the demo seed and the collector all call `Kiosk`.
//!
//! Every use case takes already-authorised inputs (the front end checked the caller) and
//! the actor to audit; every failure is a `Failure` naming the bad input.
//!
//! Beside it: the `Kiosk` handle (`kiosk`), trust (`trust`), registration and loading
//! (`registration`), secrets (`secrets`), call logs (`call_logs`) and version
//! resolution (`versions`, over `kiosk_domain::resolve`); their public items are
//! re-exported here.

use serde_json::{Value, json};

use kiosk_domain::ids::AppId;
use kiosk_domain::manifest::ConfigSchema;
use kiosk_domain::metering::UsageEvent;
use kiosk_domain::upgrade::UpgradePolicy;
use kiosk_runtime::error::{CallErrorKind, CallFailure};
use kiosk_runtime::runtime::{AppVersion, CallOutcome, Installation};
use kiosk_store::ledger::HookEffects;
use kiosk_store::{Changed, EntitlementRow, InstallationRow, LifecycleRefused};

use crate::call_logs::{CallLog, CallLogs};
use crate::error::{Failure, Kind};
use crate::operator::Purpose;

pub use crate::call_logs::{call_failure, refusal_failure};
pub use crate::kiosk::{Kiosk, SYSTEM};
pub use crate::registration::{Registered, artifact_failure};
pub use crate::secrets::RegistrySecret;
pub use crate::trust::{find_for, revoked_reason};
pub use crate::versions::{installable, resolve_version, resolve_version_among, upgrade_target};
pub use kiosk_domain::resolve::{Candidates, Line, UpgradeRequest};

type Result<T, E = Failure> = std::result::Result<T, E>;

/// What an install asks for.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// `partner/name`.
    pub app: String,
    /// An exact version, or a semver range such as `^1.4`.
    pub version: Option<String>,
    /// A track such as `1.4`: the highest version in it.
    pub track: Option<String>,
    /// Let a range, a track or no version at all pick a prerelease (`2.0.0-rc.1`); an
    /// exact prerelease version needs no flag.
    pub include_prerelease: bool,
    pub config: Option<Value>,
    /// The installation id; a new UUID when absent. Only local front ends (`kiosk run`)
    /// choose one; the HTTP API never does.
    pub id: Option<String>,
    /// How far Kiosk upgrades the installation by itself (`none` by default).
    pub upgrade_policy: UpgradePolicy,
}

/// An invoke's answer: the operation's output and the usage it metered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Invoked {
    /// The call's id (its log lines carry it).
    pub call_id: String,
    pub output: Value,
    pub usage: Vec<UsageEvent>,
}

impl Kiosk {
    /// Refuses a tenant without a valid licence for an app that requires one: checked at
    /// install, upgrade and on every call, so a revoked or expired licence stops the
    /// installation's calls too.
    pub async fn check_entitlement(&self, tenant: &str, app: &AppVersion) -> Result<()> {
        if !app.manifest.licensing.requires_entitlement {
            return Ok(());
        }
        let entitlement = self.store.entitlement(tenant, &app.manifest.app).await?;
        Self::entitled(tenant, app, entitlement.as_ref())
    }

    /// `check_entitlement` with the licence already read (`Store::call_context`).
    fn entitled(tenant: &str, app: &AppVersion, entitlement: Option<&EntitlementRow>) -> Result<()> {
        // A tenant's own private app needs no licence from anyone.
        let own = app.manifest.app_id().is_some_and(|id| id.private_owner() == Some(tenant));
        if !app.manifest.licensing.requires_entitlement || own {
            return Ok(());
        }
        let forbidden = |kind, detail: String| Failure::forbidden(kind, detail).field("app");
        match entitlement {
            None => Err(forbidden(
                Kind::EntitlementMissing,
                format!("tenant {tenant} has no licence for {}", app.manifest.app),
            )),
            Some(e) if e.revoked => Err(forbidden(
                Kind::EntitlementRevoked,
                format!("the licence of tenant {tenant} for {} was revoked", app.manifest.app),
            )),
            Some(e) if e.expires_ms.is_some_and(|x| x <= kiosk_domain::metering::now_ms() as i64) => Err(forbidden(
                Kind::EntitlementExpired,
                format!("the licence of tenant {tenant} for {} has expired", app.manifest.app),
            )),
            Some(_) => Ok(()),
        }
    }

    // --- installations ----------------------------------------------------------------

    pub async fn installation(&self, tenant: &str, id: &str) -> Result<InstallationRow> {
        self.store.installation(tenant, id).await?.ok_or_else(|| Failure::not_found(format!("no installation {id:?}")))
    }

    /// Installs an app for `tenant`: resolve the version → load it → check the licence →
    /// validate the config → `validate-config` and `install` hooks → record. Nothing is
    /// left behind on failure (the hooks' key-value data is removed).
    pub async fn install(&self, tenant: &str, request: InstallRequest, actor: &str) -> Result<InstallationRow> {
        match self.install_with(tenant, request, actor, None).await? {
            Ok(row) => Ok(row),
            Err(_) => Err(Failure::internal("an install without an idempotency key found one")),
        }
    }

    /// `install`; with `keyed` (the client's key and what it asked), the key and the new
    /// installation's id are kept with the row, unless a request with the key committed
    /// first: then nothing is kept and its answer comes back (`Err`).
    pub(crate) async fn install_with(
        &self,
        tenant: &str,
        request: InstallRequest,
        actor: &str,
        keyed: Option<(&str, &str)>,
    ) -> Result<std::result::Result<InstallationRow, Box<kiosk_store::StoredAnswer>>> {
        let id = AppId::parse(&request.app).map_err(|e| Failure::not_found(e.to_string()).field("app"))?;
        // Another tenant's private app does not exist for this one.
        if id.private_owner().is_some_and(|owner| owner != tenant) {
            return Err(Failure::not_found(format!("no app {:?}", request.app)).field("app"));
        }
        let (app_id, versions) = self.app_versions(id.partner(), id.name()).await?;
        let candidates = Candidates { include_prerelease: request.include_prerelease, ..Candidates::default() };
        let row = resolve_version_among(
            &app_id,
            &versions,
            request.version.as_deref(),
            request.track.as_deref(),
            candidates,
        )?;
        let app = self.app_version(&row).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        self.check_installation_quota(tenant).await?;
        let (config, secret_pointers) = resolve_config(&app, request.config).await?;
        let inst_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let inst = Installation::new(tenant, &inst_id);
        let config_text = crate::egress::hook_config(&app, &config, &secret_pointers);
        let operator = self.operator_egress(&app).await?;
        let egress = crate::egress::installation_egress(&app, &config, &secret_pointers, None, &operator);
        // The hooks' key-value changes and usage are held and kept with the row, or not at all.
        let attach = |call: Installation| match &egress {
            Some(layer) => call.with_egress(layer.clone()).holding_effects(),
            None => call.holding_effects(),
        };
        let mut logs = CallLogs::default();
        let mut held = Vec::new();
        let outcome: Result<()> = async {
            let (call, _) = CallLogs::call(tenant, &inst_id);
            let call = attach(call);
            logs.run_held(
                &mut held,
                &call,
                "validate-config",
                "validate-config",
                self.runtime.validate_config(&app, &call, &config_text),
            )
            .await?;
            let (call, _) = CallLogs::call(tenant, &inst_id);
            let call = attach(call);
            logs.run_held(&mut held, &call, "install", "install", self.runtime.install(&app, &call, &config_text))
                .await?;
            Ok(())
        }
        .await;
        let now = kiosk_domain::metering::now_ms() as i64;
        let mut record = InstallationRow {
            id: inst.id.clone(),
            tenant: tenant.to_string(),
            app: app_id,
            version: row.version.clone(),
            config: String::new(),
            secrets: Vec::new(),
            created_ms: now,
            updated_ms: now,
            row_version: 0,
            upgrade_policy: request.upgrade_policy,
        };
        self.set_config(&mut record, &config, &secret_pointers);
        // The version is checked again as the row is written: a yank or a quarantine
        // committed while the hooks ran wins.
        let answer = keyed.map(|(key, fingerprint)| kiosk_store::KeyedAnswer {
            tenant,
            key,
            fingerprint,
            call_id: &inst_id,
            answer: &inst_id,
        });
        let mut first = None;
        let recorded = match outcome {
            Ok(()) => {
                let effects = HookEffects::of(&held, self.log_bounds()).keyed(answer);
                match self.store.record_install(&record, actor, effects).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(LifecycleRefused::KeyUsed(used))) => {
                        first = Some(used);
                        Ok(())
                    }
                    Ok(Err(LifecycleRefused::NotInstallable(now))) => installable(&record.app, &now.0),
                    Ok(Err(refused)) => Err(self.lost(&record, "install", refused).await),
                    Err(e) => Err(Failure::from(e)),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            Self::log_orphans(tenant, &inst.id, logs);
            self.store.delete_installation_data(tenant, &inst.id).await?;
            return Err(e);
        }
        if let Some(used) = first {
            // A copy of this request with the key was installed first: this one is undone.
            Self::log_orphans(tenant, &inst.id, logs);
            self.store.delete_installation_data(tenant, &inst.id).await?;
            return Ok(Err(used));
        }
        self.keep_logs(tenant, &inst.id, logs).await;
        Ok(Ok(record))
    }

    /// Replaces an installation's configuration: secret values the new config leaves
    /// out keep their current value; `validate-config` and `configure` hooks run first.
    /// The row is written only if nothing else wrote it while the hooks ran
    /// (`installation-changed` otherwise).
    pub async fn configure(&self, tenant: &str, id: &str, config: Value, actor: &str) -> Result<InstallationRow> {
        let mut row = self.installation(tenant, id).await?;
        let app = self.installed_app(&row).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        let old = self.full_config(&row)?;
        let mut new = config;
        if new.is_object() {
            for (ptr, v) in self.open_secrets(&row)? {
                if new.pointer(&ptr).is_none() {
                    kiosk_domain::manifest::put_pointer(&mut new, &ptr, v);
                }
            }
        }
        let old_pointers: Vec<String> = self.open_secrets(&row)?.keys().cloned().collect();
        let (config, secret_pointers) = resolve_config(&app, Some(new)).await?;
        let old_text = crate::egress::hook_config(&app, &old, &old_pointers);
        let new_text = crate::egress::hook_config(&app, &config, &secret_pointers);
        // The hooks' requests go where the new configuration says.
        let switch = self.egress_switch(&app, tenant, id).await?;
        let operator = self.operator_egress(&app).await?;
        let egress = crate::egress::installation_egress(&app, &config, &secret_pointers, switch.as_ref(), &operator);
        // The hooks' key-value changes and usage are held and kept with the row, or not at all.
        let attach = |call: Installation| match &egress {
            Some(layer) => call.with_egress(layer.clone()).holding_effects(),
            None => call.holding_effects(),
        };
        let mut logs = CallLogs::default();
        let mut held = Vec::new();
        let hooks: Result<()> = async {
            let (call, _) = CallLogs::call(tenant, id);
            let call = attach(call);
            let validate = self.runtime.validate_config(&app, &call, &new_text);
            logs.run_held(&mut held, &call, "validate-config", "validate-config", validate).await?;
            let (call, _) = CallLogs::call(tenant, id);
            let call = attach(call);
            let configure = self.runtime.configure(&app, &call, &old_text, &new_text);
            logs.run_held(&mut held, &call, "configure", "configure", configure).await?;
            Ok(())
        }
        .await;
        self.keep_logs(tenant, id, logs).await;
        hooks?;
        self.set_config(&mut row, &config, &secret_pointers);
        let effects = HookEffects::of(&held, self.log_bounds());
        if let Err(refused) = self.store.record_configure(&row, "installation.configure", actor, effects).await? {
            return Err(self.lost(&row, "configure", refused).await);
        }
        self.installation(tenant, id).await
    }

    /// Moves an installation to another version (`upgrade_target`: a downgrade needs
    /// `allow_downgrade`, another major version `allow_major`) through the new version's
    /// `upgrade` hook. The row is written only if nothing else wrote it while the hook
    /// ran (`installation-changed` otherwise).
    pub async fn upgrade(
        &self,
        tenant: &str,
        id: &str,
        request: UpgradeRequest,
        actor: &str,
    ) -> Result<InstallationRow> {
        let row = self.installation(tenant, id).await?;
        self.upgrade_row(row, request, actor).await
    }

    /// `upgrade` of the installation as `row` read it: the write applies only if the
    /// row is still at that row version (an automatic upgrade decided on this row).
    pub(crate) async fn upgrade_row(
        &self,
        row: InstallationRow,
        request: UpgradeRequest,
        actor: &str,
    ) -> Result<InstallationRow> {
        match self.upgrade_row_with(row, request, actor, None).await? {
            Ok(row) => Ok(row),
            Err(_) => Err(Failure::internal("an upgrade without an idempotency key found one")),
        }
    }

    /// `upgrade_row`; with `keyed` (the client's key and what it asked) the key is kept
    /// with the row, unless a request with the key committed first (its answer: `Err`).
    pub(crate) async fn upgrade_row_with(
        &self,
        mut row: InstallationRow,
        request: UpgradeRequest,
        actor: &str,
        keyed: Option<(&str, &str)>,
    ) -> Result<std::result::Result<InstallationRow, Box<kiosk_store::StoredAnswer>>> {
        let (tenant, id) = (row.tenant.clone(), row.id.clone());
        let (tenant, id) = (tenant.as_str(), id.as_str());
        let versions = self.store.versions(&row.app).await?;
        let from = semver::Version::parse(&row.version).map_err(Failure::internal)?;
        let target = upgrade_target(&row.app, &versions, &from, &request)?;
        let app = self.app_version(&target).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        let (config, secret_pointers) = resolve_config(&app, Some(self.full_config(&row)?)).await?;
        let (call, _) = CallLogs::call(tenant, id);
        let switch = self.egress_switch(&app, tenant, id).await?;
        let operator = self.operator_egress(&app).await?;
        let call = match crate::egress::installation_egress(&app, &config, &secret_pointers, switch.as_ref(), &operator)
        {
            Some(layer) => call.with_egress(layer),
            None => call,
        };
        // The hook's key-value changes and usage are held and kept with the row, or not at all.
        let call = call.holding_effects();
        let mut logs = CallLogs::default();
        let mut held = Vec::new();
        let (from_text, config_text) = (from.to_string(), crate::egress::hook_config(&app, &config, &secret_pointers));
        let upgrade = self.runtime.upgrade(&app, &call, &from_text, &config_text);
        let hook = logs.run_held(&mut held, &call, "upgrade", "upgrade", upgrade).await;
        self.keep_logs(tenant, id, logs).await;
        hook?;
        row.version = target.version.clone();
        self.set_config(&mut row, &config, &secret_pointers);
        // Checked again as the row is written (a yank or quarantine during the hook wins,
        // and so does a configure, upgrade or uninstall that wrote first); the old version
        // keeps running.
        let answer = keyed.map(|(key, fingerprint)| kiosk_store::KeyedAnswer {
            tenant,
            key,
            fingerprint,
            call_id: id,
            answer: id,
        });
        let effects = HookEffects::of(&held, self.log_bounds()).keyed(answer);
        match self.store.record_upgrade(&row, actor, effects).await? {
            Ok(()) => {}
            Err(LifecycleRefused::NotInstallable(blocked)) => installable(&row.app, &blocked.0)?,
            Err(LifecycleRefused::KeyUsed(used)) => return Ok(Err(used)),
            Err(refused) => return Err(self.lost(&row, "upgrade", refused).await),
        }
        Ok(Ok(self.installation(tenant, id).await?))
    }

    /// Removes an installation. The app's hook is asked, but never keeps the tenant in: a
    /// refusal, a trap or a limit is recorded (audit) and returned as `Some(detail)`, and
    /// the installation goes anyway. Only what a retry can fix (admission, shutdown, the
    /// host's storage) stops the uninstall. The installation is claimed before the hook
    /// runs (`Store::claim_uninstall`): a configure, upgrade or uninstall that wrote it
    /// since it was read makes this one `installation-changed` without asking the app, and
    /// none writes it while the hook runs.
    pub async fn uninstall(&self, tenant: &str, id: &str, actor: &str) -> Result<Option<String>> {
        let row = self.installation(tenant, id).await?;
        // Claimed before the hook runs: an uninstall that would lose its race is refused
        // here, without asking the app; after the claim no configure, upgrade or other
        // uninstall writes the row, so this one cannot lose.
        // The claim lapses after twice the longest call the operator allows, and a minute:
        // only an uninstall whose process died holds it that long.
        let hold_ms = self.config.sandbox.timeout_ms.saturating_mul(2).saturating_add(60_000);
        let until = (kiosk_domain::metering::now_ms().saturating_add(hold_ms)).min(i64::MAX as u64) as i64;
        if let Err(Changed) = self.store.claim_uninstall(tenant, id, row.row_version, until).await? {
            return Err(self.changed(&row, "uninstall").await);
        }
        let (inst, call_id) = CallLogs::call(tenant, id);
        let loaded = match self.installed_app(&row).await {
            Ok(app) => Ok(self.admit_call(tenant, &app, Purpose::Leave).await?),
            Err(e) => Err(e),
        };
        let hook_failure = match loaded {
            Err(e) => Some(format!("the app could not be loaded: {}", e.detail)),
            Ok(app) => {
                let mut logs = CallLogs::default();
                // Secrets that cannot be opened leave the hook without outbound requests;
                // an uninstall never fails on them.
                let inst = self.with_row_egress(&app, &row, inst.clone()).await.unwrap_or_else(|_| inst.clone());
                let outcome = self.runtime.uninstall(&app, &inst).await;
                // Kept while the installation stays (a stopped uninstall); the removal
                // below takes them with it.
                let outcome = match outcome {
                    Ok(mut done) => {
                        let lines = std::mem::take(&mut done.logs);
                        logs.0.push(CallLog { call_id: call_id.clone(), operation: "uninstall".into(), lines });
                        Ok(done)
                    }
                    Err(mut e) => {
                        if let Some(lines) = e.logs.take() {
                            logs.0.push(CallLog { call_id: call_id.clone(), operation: "uninstall".into(), lines });
                        }
                        Err(e)
                    }
                };
                self.keep_logs(tenant, id, logs).await;
                match outcome {
                    Ok(done) => done.result.err().map(|r| format!("the app refused: {} ({})", r.message, r.code)),
                    Err(e) => match e.kind {
                        CallErrorKind::Busy(_) | CallErrorKind::ShuttingDown | CallErrorKind::Storage(_) => {
                            // Stopped: the claim is given back, the installation stays as it was.
                            self.store.release_uninstall(tenant, id).await?;
                            return Err(call_failure(e).with_call_id(call_id));
                        }
                        kind => Some(format!("the hook failed: {kind}")),
                    },
                }
            }
        };
        let removed =
            self.store.delete_installation_noting(tenant, id, row.row_version, actor, hook_failure.as_deref());
        match removed.await {
            Ok(Ok(())) => Ok(hook_failure),
            // Held by the claim, the row cannot have changed; if it did, or the removal
            // failed, the claim is given back and the installation stays as it was.
            Ok(Err(Changed)) => {
                self.store.release_uninstall(tenant, id).await?;
                Err(self.changed(&row, "uninstall").await)
            }
            Err(e) => {
                if let Err(release) = self.store.release_uninstall(tenant, id).await {
                    tracing::error!(error = %release, tenant, installation = id, "an uninstall's claim could not be given back: it lapses");
                }
                Err(e.into())
            }
        }
    }

    /// The failure of a lifecycle write that wrote nothing: it lost a race, or its hooks'
    /// key-value changes no longer fit the installation's quota (another call wrote).
    async fn lost(&self, read: &InstallationRow, step: &str, refused: LifecycleRefused) -> Failure {
        match refused {
            LifecycleRefused::InstallationQuota(quota) => Failure::unprocessable(
                Kind::TenantQuota,
                format!(
                    "tenant {} has {quota} installations, its quota (installations): uninstall one, or ask the \
                     operator for a higher quota",
                    read.tenant
                ),
            )
            .field("app"),
            LifecycleRefused::OverQuota(kiosk_domain::kv::QuotaHit::Tenant(quota)) => Failure::unprocessable(
                Kind::TenantQuota,
                format!(
                    "the {step} hooks' key-value changes would take tenant {}'s installations together over its \
                     quota of {quota} bytes (kvBytes); nothing was written",
                    read.tenant
                ),
            ),
            LifecycleRefused::OverQuota(kiosk_domain::kv::QuotaHit::Installation(quota)) => Failure::conflict(
                Kind::InstallationChanged,
                format!(
                    "the {step} hooks' key-value changes would take installation {} over its quota of {quota} bytes \
                     (another call of it wrote meanwhile); nothing was written: retry",
                    read.id
                ),
            ),
            LifecycleRefused::NotInstallable(now) => match installable(&read.app, &now.0) {
                Err(failure) => failure,
                Ok(()) => self.changed(read, step).await,
            },
            LifecycleRefused::Changed | LifecycleRefused::KeyUsed(_) => self.changed(read, step).await,
        }
    }

    /// The failure of a lifecycle write that lost a race: the installation was written
    /// (or removed) by another request after `read` was read.
    async fn changed(&self, read: &InstallationRow, step: &str) -> Failure {
        // Held by an uninstall: this one, or one whose process stopped (its claim lapses).
        if let Ok(Some(until)) = self.store.uninstall_claim(&read.tenant, &read.id).await {
            let wait_s = (until.saturating_sub(kiosk_domain::metering::now_ms() as i64) / 1000).max(1);
            return Failure::conflict(
                Kind::InstallationChanged,
                format!(
                    "installation {} is being uninstalled, so {step} wrote nothing; if that uninstall stopped, its \
                     claim lapses within {wait_s} s: retry then",
                    read.id
                ),
            )
            .retry_after(u64::try_from(wait_s).unwrap_or(1));
        }
        let now = match self.store.installation(&read.tenant, &read.id).await {
            Ok(Some(now)) => format!("now at row version {} on {}", now.row_version, now.version),
            Ok(None) => "it was uninstalled".to_string(),
            Err(e) => {
                tracing::error!(error = %e, "reading a changed installation failed");
                "it could not be read again".to_string()
            }
        };
        Failure::conflict(
            Kind::InstallationChanged,
            format!(
                "installation {} changed while this request ran ({step} read it at row version {}, {now}); nothing \
                 was written: read it again and retry",
                read.id, read.row_version
            ),
        )
    }

    /// Calls `operation` of an installation with `input` (JSON). The licence is checked
    /// on every call.
    pub async fn invoke(&self, tenant: &str, id: &str, operation: &str, input: &Value) -> Result<Invoked> {
        let (app, call, logged_as) = self.invocation(tenant, id, operation).await?;
        let input = input.to_string();
        let mut logs = CallLogs::default();
        let done = logs.run(&call, &logged_as, operation, self.runtime.invoke(&app, &call, operation, &input)).await;
        self.keep_logs(tenant, id, logs).await;
        let (call_id, output, usage) = done?;
        let output: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
        Ok(Invoked { call_id, output, usage })
    }

    /// What a call of `operation` runs (the admitted version, the installation with its
    /// egress, the name its log lines carry), from one read of the database (installation,
    /// limits, switches, licence); its effects are written by one group commit after it.
    pub(crate) async fn invocation(
        &self,
        tenant: &str,
        id: &str,
        operation: &str,
    ) -> Result<(AppVersion, Installation, String)> {
        let context = self
            .store
            .call_context(tenant, id)
            .await?
            .ok_or_else(|| Failure::not_found(format!("no installation {id:?}")))?;
        let app = self.installed_app(&context.installation).await?;
        let app = self.admit_under(tenant, &app, Purpose::Run, &context.policy)?;
        Self::entitled(tenant, &app, context.entitlement.as_ref())?;
        let logged_as = format!("invoke:{operation}");
        let (call, _) = CallLogs::logged_call(tenant, id, &logged_as);
        let call =
            self.with_egress_of(&app, &context.installation, context.egress.as_ref(), &context.operator_egress, call)?;
        Ok((app, call, logged_as))
    }
}

/// What one `usage.report` call gave.
#[derive(Debug, Clone)]
pub struct Reported {
    pub accepted: Vec<UsageEvent>,
    pub refused: Vec<kiosk_runtime::runtime::RefusedRecord>,
}

impl Kiosk {
    /// Asks an installation for its usage in `window` now (the collector does this once
    /// per window; `kiosk run` after its call).
    pub async fn report(&self, row: &InstallationRow, window: kiosk_runtime::world::UsageWindow) -> Result<Reported> {
        let app = self.installed_app(row).await?;
        let app = self.admit_call(&row.tenant, &app, Purpose::Run).await?;
        let (call, _) = CallLogs::logged_call(&row.tenant, &row.id, "report");
        let call = self.with_row_egress(&app, row, call).await?;
        let mut logs = CallLogs::default();
        let done = logs.run(&call, "report", "report", self.runtime.report(&app, &call, window)).await;
        self.keep_logs(&row.tenant, &row.id, logs).await;
        let (_, report, _) = done?;
        Ok(Reported { accepted: report.accepted, refused: report.refused })
    }
}

impl Kiosk {
    /// `usage.report` for the collector, which judges the outcome itself: the runtime's
    /// answer as it is, the call's lines kept.
    pub async fn collect_report(
        &self,
        app: &AppVersion,
        row: &InstallationRow,
        window: kiosk_runtime::world::UsageWindow,
    ) -> std::result::Result<CallOutcome<kiosk_runtime::runtime::ReportedUsage>, CallFailure> {
        use tracing::Instrument as _;
        let (call, call_id) = CallLogs::logged_call(&row.tenant, &row.id, "report");
        // Secrets that cannot be opened leave the report without outbound requests.
        let call = self.with_row_egress(app, row, call.clone()).await.unwrap_or(call);
        let span = tracing::info_span!("call", call_id = call_id.as_str(), operation = "report");
        let mut outcome = self.runtime.report(app, &call, window).instrument(span).await;
        let lines = match &mut outcome {
            Ok(done) if done.logs_kept => Vec::new(),
            Ok(done) => std::mem::take(&mut done.logs),
            Err(failure) => failure.logs.take().unwrap_or_default(),
        };
        let logs = CallLogs(vec![CallLog { call_id, operation: "report".into(), lines }]);
        self.keep_logs(&row.tenant, &row.id, logs).await;
        outcome
    }
}

/// How long validating one configuration may take. The schema's patterns run in linear
/// time and its size is capped at registration, so this is a backstop, not a tuning knob.
const CONFIG_VALIDATION_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies defaults and validates `config` against the app's schema, off the async
/// workers (a blocking thread) and within `CONFIG_VALIDATION_BUDGET`. Returns the
/// resolved config and the JSON pointers of its secrets.
pub async fn resolve_config(app: &AppVersion, config: Option<Value>) -> Result<(Value, Vec<String>)> {
    let schema_json = app.manifest.config.clone();
    let work = tokio::task::spawn_blocking(move || {
        let schema = ConfigSchema::compile(&schema_json).map_err(Failure::internal)?;
        let config = config.unwrap_or_else(|| json!({}));
        let resolved = schema.resolve(config).map_err(|e| {
            let mut err = Failure::unprocessable(Kind::ConfigInvalid, e.to_string());
            err.field = e.problems.first().map(|p| format!("config{}", p.split(':').next().unwrap_or("")));
            err.errors = e.problems;
            err
        })?;
        let secrets = schema.secret_pointers(&resolved);
        Ok((resolved, secrets))
    });
    match tokio::time::timeout(CONFIG_VALIDATION_BUDGET, work).await {
        Ok(joined) => joined.map_err(Failure::internal)?,
        Err(_) => Err(Failure::unprocessable(
            Kind::ConfigValidationTimeout,
            format!(
                "validating the configuration against the schema of {} took longer than {} ms",
                app.manifest.app,
                CONFIG_VALIDATION_BUDGET.as_millis()
            ),
        )
        .field("config")),
    }
}
