//! The runtime's entry points for the app's lifecycle exports and `calls.invoke`: each
//! is one `call` of its export.

use super::{AppVersion, CallOutcome, Installation, Runtime};
use crate::admission::Origin;
use crate::error::{CallErrorKind, CallFailure};
use crate::exports::{Answer, Export};

impl Runtime {
    /// `lifecycle.validate-config`.
    pub async fn validate_config(
        &self,
        app: &AppVersion,
        inst: &Installation,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::ValidateConfig(config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// Instantiates `app` under its limits in a fresh Store and calls nothing: fails
    /// with the limit named when the version cannot run under them (a memory or table
    /// its component declares beyond them, a start function that traps or overruns).
    /// Nothing is committed (no key-value session, and usage a start function recorded
    /// is dropped) and no call metric is recorded. Registration runs it once per
    /// version; `inst` names who asked.
    pub async fn check_instantiates(&self, app: &AppVersion, inst: &Installation) -> Result<(), CallFailure> {
        self.call(app, inst, Export::Instantiate, Origin::Host).await.map(drop)
    }

    /// `lifecycle.install`.
    pub async fn install(
        &self,
        app: &AppVersion,
        inst: &Installation,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Install(config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.configure`.
    pub async fn configure(
        &self,
        app: &AppVersion,
        inst: &Installation,
        old: &str,
        new: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Configure(old, new), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.upgrade`, called on the new version.
    pub async fn upgrade(
        &self,
        app: &AppVersion,
        inst: &Installation,
        from: &str,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Upgrade(from, config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.uninstall`; on success the installation's key-value data is purged.
    pub async fn uninstall(&self, app: &AppVersion, inst: &Installation) -> Result<CallOutcome<()>, CallFailure> {
        let outcome = self.call(app, inst, Export::Uninstall, Origin::Tenant).await.map(CallOutcome::done)?;
        if outcome.result.is_ok() {
            let scope = inst.scope();
            self.services
                .kv
                .purge(&scope)
                .await
                .map_err(|e| self.failure(app, inst, "lifecycle.uninstall", CallErrorKind::Storage(e.to_string())))?;
        }
        Ok(outcome)
    }

    /// `calls.invoke`. A successful call meters one unit of every SKU listing `operation`.
    pub async fn invoke(
        &self,
        app: &AppVersion,
        inst: &Installation,
        operation: &str,
        input: &str,
    ) -> Result<CallOutcome<String>, CallFailure> {
        let outcome = self.call(app, inst, Export::Invoke(operation, input), Origin::Tenant).await?;
        Ok(CallOutcome {
            call_id: outcome.call_id,
            result: outcome.result.map(|answer| match answer {
                Answer::Output(output) => output,
                _ => String::new(),
            }),
            usage: outcome.usage,
            logs: outcome.logs,
            logs_kept: outcome.logs_kept,
            held: outcome.held,
        })
    }
}
