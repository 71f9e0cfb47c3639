//! Exactly once per client request: an invoke sent with an `Idempotency-Key` (as in
//! Stripe's API) runs with its effects held, and they are kept with the answer in one
//! transaction (`Store::record_keyed_call`). A retry with the key — on any replica,
//! within `kiosk_store::IDEMPOTENCY_RETENTION_MS` — gets that answer (same call id, same
//! usage) and runs and meters nothing; the key with another request is refused. Keys are
//! the tenant's: two tenants may use the same one.
//!
//! Two requests racing with one key may both run the app (its outbound requests too);
//! the first to commit keeps its effects and answer, the other keeps nothing and answers
//! as the first did. An app's refusal (`app-refused`) keeps its effects, as without a key,
//! and is the answer a retry gets; any other failure keeps nothing and no answer, so a
//! retry runs the call again.

use serde_json::{Value, json};

use kiosk_store::ledger::HookEffects;
use kiosk_store::{InstallationRow, KeyedAnswer, KeyedWrite, StoredAnswer};

use crate::call_logs::CallLogs;
use crate::error::{Failure, Kind, Result};
use crate::lifecycle::{InstallRequest, Invoked, Kiosk, UpgradeRequest};

/// The header's name, as the API documents it and problems name it.
pub const HEADER: &str = "Idempotency-Key";

/// The longest key, in bytes: room for a UUID with a prefix, or a client's own composite
/// key (Stripe allows 255).
pub const MAX_KEY_BYTES: usize = 255;

/// An answer, and whether it is the first one's again.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedInvoke {
    pub invoked: Invoked,
    /// `true`: an earlier request with the key ran; this is its answer.
    pub replayed: bool,
}

/// Checks a key: 1 to `MAX_KEY_BYTES` visible ASCII characters (no spaces or controls),
/// so it is stored alike on every backend and shown back safely.
pub fn check_key(key: &str) -> Result<&str> {
    let invalid = |why: String| Failure::unprocessable(Kind::IdempotencyKeyInvalid, why).field(HEADER);
    if key.is_empty() {
        return Err(invalid(format!("{HEADER} is empty: send 1 to {MAX_KEY_BYTES} visible ASCII characters")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!("{HEADER} is {} bytes long, at most {MAX_KEY_BYTES} are kept", key.len())));
    }
    if let Some(at) = key.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(invalid(format!(
            "{HEADER} has a character that is not visible ASCII at byte {at}: use letters, digits and punctuation"
        )));
    }
    Ok(key)
}

impl Kiosk {
    /// `invoke`, exactly once per `key` of the tenant (see the module documentation).
    pub async fn invoke_keyed(
        &self,
        tenant: &str,
        id: &str,
        operation: &str,
        input: &Value,
        key: &str,
    ) -> Result<KeyedInvoke> {
        let key = check_key(key)?;
        let input = input.to_string();
        let asked = self.sealer.fingerprint(&["invoke", id, operation, &input]);
        if let Some(stored) = self.store.keyed_answer(tenant, key).await? {
            return replay_invoke(stored, &asked, key);
        }
        let ran = self.invoke_held(tenant, id, operation, &input, key, &asked).await;
        match ran {
            Ok(outcome) => outcome.into_result(false),
            Err(failure) => match self.answered_meanwhile(tenant, key, &asked).await {
                Some(stored) => replay_invoke(stored, &asked, key),
                None => Err(failure),
            },
        }
    }

    /// Runs the call with its effects held and keeps them with its answer (or its
    /// refusal); what the request gets back. A failure that kept nothing is `Err`.
    async fn invoke_held(
        &self,
        tenant: &str,
        id: &str,
        operation: &str,
        input: &str,
        key: &str,
        asked: &str,
    ) -> Result<KeyedOutcome> {
        let (app, call, logged_as) = self.invocation(tenant, id, operation).await?;
        let call = call.holding_effects();
        let mut logs = CallLogs::default();
        let mut held = Vec::new();
        let run = self.runtime.invoke(&app, &call, operation, input);
        let done = logs.run_held(&mut held, &call, &logged_as, operation, run).await;
        self.keep_logs(tenant, id, logs).await;
        // An app's refusal keeps its effects and lines (the work happened), as without a
        // key, and is the request's answer; any other failure kept nothing.
        let outcome = match done {
            Ok((call_id, output, usage)) => {
                let output: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
                KeyedOutcome::Answered(Invoked { call_id, output, usage })
            }
            Err(failure) if failure.kind == Kind::AppRefused => {
                KeyedOutcome::Refused { detail: failure.detail, call_id: failure.call_id.map(String::from) }
            }
            Err(failure) => return Err(failure),
        };
        let answer = serde_json::to_string(&outcome).map_err(Failure::internal)?;
        let call_id = outcome.call_id().unwrap_or_default();
        let keyed = KeyedAnswer { tenant, key, fingerprint: asked, call_id: &call_id, answer: &answer };
        let held = HookEffects::of(&held, self.log_bounds()).keyed(Some(keyed));
        match self.store.record_keyed_call(held).await? {
            KeyedWrite::Written => Ok(outcome),
            KeyedWrite::Existing(stored) => Ok(stored_outcome(&stored, asked, key)?.replayed()),
            KeyedWrite::OverQuota(kiosk_domain::kv::QuotaHit::Tenant(quota)) => Err(Failure::unprocessable(
                Kind::TenantQuota,
                format!(
                    "the call's key-value changes would take tenant {tenant}'s installations together over its quota \
                     of {quota} bytes (kvBytes); nothing was kept"
                ),
            )),
            KeyedWrite::OverQuota(kiosk_domain::kv::QuotaHit::Installation(quota)) => Err(Failure::conflict(
                Kind::InstallationChanged,
                format!(
                    "the call's key-value changes would take installation {id} over its quota of {quota} bytes \
                     (another call of it wrote meanwhile); nothing was kept: retry with the same {HEADER}"
                ),
            )),
        }
    }

    /// The answer a copy of this request with the key got meanwhile, if one did (a racing
    /// copy that committed first: this one then failed, e.g. finding the row moved).
    async fn answered_meanwhile(&self, tenant: &str, key: &str, asked: &str) -> Option<StoredAnswer> {
        match self.store.keyed_answer(tenant, key).await {
            Ok(Some(stored)) if stored.fingerprint == asked => Some(stored),
            _ => None,
        }
    }

    /// `install`, once per `key` of the tenant: a retry gets the installation the first
    /// request created (as it is now), and nothing runs or is installed again.
    pub async fn install_keyed(
        &self,
        tenant: &str,
        request: InstallRequest,
        key: &str,
        actor: &str,
    ) -> Result<KeyedInstall> {
        let key = check_key(key)?;
        let asked = json!({
            "app": request.app,
            "version": request.version,
            "track": request.track,
            "includePrerelease": request.include_prerelease,
            "config": request.config,
            "upgradePolicy": request.upgrade_policy.as_str(),
        });
        let asked = self.sealer.fingerprint(&["install", &asked.to_string()]);
        if let Some(stored) = self.store.keyed_answer(tenant, key).await? {
            return self.replay_install(tenant, stored, &asked, key).await;
        }
        match self.install_with(tenant, request, actor, Some((key, &asked))).await {
            Ok(Ok(row)) => Ok(KeyedInstall { row, replayed: false }),
            Ok(Err(stored)) => self.replay_install(tenant, *stored, &asked, key).await,
            Err(failure) => match self.answered_meanwhile(tenant, key, &asked).await {
                Some(stored) => self.replay_install(tenant, stored, &asked, key).await,
                None => Err(failure),
            },
        }
    }

    /// `upgrade`, once per `key` of the tenant: a retry gets the installation as it is now
    /// (the first request moved it), and nothing runs or moves again.
    pub async fn upgrade_keyed(
        &self,
        tenant: &str,
        id: &str,
        request: UpgradeRequest,
        key: &str,
        actor: &str,
    ) -> Result<KeyedInstall> {
        let key = check_key(key)?;
        let asked = json!({
            "version": request.version,
            "track": request.track,
            "allowDowngrade": request.allow_downgrade,
            "allowMajor": request.allow_major,
            "includePrerelease": request.include_prerelease,
        });
        let asked = self.sealer.fingerprint(&["upgrade", id, &asked.to_string()]);
        if let Some(stored) = self.store.keyed_answer(tenant, key).await? {
            return self.replay_install(tenant, stored, &asked, key).await;
        }
        let row = self.installation(tenant, id).await?;
        match self.upgrade_row_with(row, request, actor, Some((key, &asked))).await {
            Ok(Ok(row)) => Ok(KeyedInstall { row, replayed: false }),
            Ok(Err(stored)) => self.replay_install(tenant, *stored, &asked, key).await,
            Err(failure) => match self.answered_meanwhile(tenant, key, &asked).await {
                Some(stored) => self.replay_install(tenant, stored, &asked, key).await,
                None => Err(failure),
            },
        }
    }

    async fn replay_install(&self, tenant: &str, stored: StoredAnswer, asked: &str, key: &str) -> Result<KeyedInstall> {
        reused(&stored, asked, key, "another installation, app, version or configuration")?;
        let row = self.store.installation(tenant, &stored.answer).await?.ok_or_else(|| {
            Failure::not_found(format!(
                "{HEADER} {key:?} installed {} for an earlier request, which was uninstalled since",
                stored.answer
            ))
            .field(HEADER)
        })?;
        Ok(KeyedInstall { row, replayed: true })
    }
}

/// An install's answer, and whether it is the first one's again.
#[derive(Debug, Clone)]
pub struct KeyedInstall {
    pub row: InstallationRow,
    pub replayed: bool,
}

/// Refuses a key kept for a request other than `asked` (`what` says what differs).
fn reused(stored: &StoredAnswer, asked: &str, key: &str, what: &str) -> Result<()> {
    if stored.fingerprint == asked {
        return Ok(());
    }
    Err(Failure::unprocessable(
        Kind::IdempotencyKeyReused,
        format!("{HEADER} {key:?} was used for another request ({what}) and is kept for 24 h: use a new key"),
    )
    .field(HEADER))
}

/// The kept answer for an invoke that asked `asked`, or the refusal of a reused key.
fn replay_invoke(stored: StoredAnswer, asked: &str, key: &str) -> Result<KeyedInvoke> {
    stored_outcome(&stored, asked, key)?.into_result(true)
}

/// What a keyed invoke answered: the operation's output, or the app's refusal (422
/// `app-refused`, whose effects were kept too).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum KeyedOutcome {
    Answered(Invoked),
    Refused {
        detail: String,
        call_id: Option<String>,
    },
    /// Read back from the store: the first request's (`into_result` marks it replayed).
    #[serde(skip)]
    Replayed(Box<KeyedOutcome>),
}

impl KeyedOutcome {
    fn call_id(&self) -> Option<String> {
        match self {
            Self::Answered(invoked) => Some(invoked.call_id.clone()),
            Self::Refused { call_id, .. } => call_id.clone(),
            Self::Replayed(inner) => inner.call_id(),
        }
    }

    fn replayed(self) -> Self {
        match self {
            Self::Replayed(_) => self,
            other => Self::Replayed(Box::new(other)),
        }
    }

    /// The request's answer (`replayed`: the first request's, sent again).
    fn into_result(self, replayed: bool) -> Result<KeyedInvoke> {
        match self {
            Self::Answered(invoked) => Ok(KeyedInvoke { invoked, replayed }),
            Self::Refused { detail, call_id } => {
                let refused = Failure::unprocessable(Kind::AppRefused, detail);
                Err(match call_id {
                    Some(call_id) => refused.with_call_id(call_id),
                    None => refused,
                })
            }
            Self::Replayed(inner) => inner.into_result(true),
        }
    }
}

/// The outcome kept for `asked`, or the refusal of a reused key.
fn stored_outcome(stored: &StoredAnswer, asked: &str, key: &str) -> Result<KeyedOutcome> {
    reused(stored, asked, key, "another installation, operation or input")?;
    serde_json::from_str(&stored.answer).map_err(Failure::internal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_within_the_bound() {
        assert!(check_key("order-42/retry_1").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        for bad in ["", " ", "a b", "caf\u{e9}", "tab\there", "nul\0", &"k".repeat(MAX_KEY_BYTES + 1)] {
            let e = check_key(bad).unwrap_err();
            assert_eq!(e.kind, Kind::IdempotencyKeyInvalid, "{bad:?}");
            assert_eq!(e.field.as_deref(), Some(HEADER), "{bad:?}");
        }
    }
}
