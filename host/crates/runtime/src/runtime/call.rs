//! One call: a fresh Store under the call's limits and wall-time deadline, then the
//! commit of its effects, its metrics, and the failures it can end in.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::{AppRefusal, AppVersion, CallOutcome, Installation, Runtime};
use crate::admission::Origin;
use crate::egress::CallEgress;
use crate::error::{CallErrorKind, CallFailure, CallSite};
use crate::exports::{Answer, Export, RunError};
use crate::kv_session::KvSession;
use crate::logs::{Level, LogLine};
use crate::sandbox::{Attribution, HostState};
use crate::world::CallContext;
use kiosk_domain::effects::{CallEffects, CallLines, CommitError, KvWrite, LogEntry};
use kiosk_domain::metering::{SinkOutcome, now_ms};

impl Runtime {
    /// A call that stopped before the guest ran (no log lines).
    pub(super) fn failure(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: &'static str,
        kind: CallErrorKind,
    ) -> CallFailure {
        self.failure_of(app, inst, export, kind, &call_id_of(inst), None)
    }

    fn failure_of(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: &'static str,
        kind: CallErrorKind,
        call_id: &str,
        logs: Option<Vec<LogLine>>,
    ) -> CallFailure {
        CallFailure {
            call: Box::new(CallSite {
                tenant: inst.tenant.clone(),
                installation: inst.id.clone(),
                app: app.manifest.app.clone(),
                version: app.manifest.version.to_string(),
                digest: app.component.digest.clone(),
                export,
                call_id: call_id.to_string(),
            }),
            kind,
            logs,
        }
    }

    /// Runs one export in a fresh Store under its wall-time deadline and, if it
    /// completed, commits its key-value changes, usage and logs (in that order; the
    /// Store is gone by then).
    ///
    /// The deadline holds whatever the guest does: wasm that computes is interrupted at
    /// an epoch tick after the deadline (and yields to the executor every tick before
    /// it), and a guest waiting in a host call (a WASI sleep or poll) is a pending
    /// future that is dropped at the deadline, freeing its sandbox slot at once.
    pub(super) async fn call(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: Export<'_>,
        origin: Origin,
    ) -> Result<CallOutcome<Answer>, CallFailure> {
        let started = std::time::Instant::now();
        let result = self.call_once(app, inst, export, origin).await;
        if matches!(export, Export::Instantiate) {
            // Registration's check: its app id may never reach the catalog, so it is kept
            // out of the labels (which stay bounded by the catalog's apps).
            return result;
        }
        // Labels are bounded: the app id comes from the catalog, the export is one of
        // seven, the outcome and limit names are Kiosk's (never an operation name).
        let outcome = match &result {
            Ok(done) if done.result.is_ok() => "ok",
            Ok(_) => "app-error",
            Err(failure) => failure.kind.outcome(),
        };
        let labels =
            [("app", app.manifest.app.clone()), ("operation", export.name().to_string()), ("outcome", outcome.into())];
        metrics::counter!("kiosk_calls_total", &labels).increment(1);
        metrics::histogram!("kiosk_call_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            if let Some(limit) = failure.kind.limit() {
                metrics::counter!("kiosk_limit_hits_total", "limit" => limit).increment(1);
            }
            if let CallErrorKind::Busy(refusal) = &failure.kind {
                let reason = match refusal {
                    crate::admission::Refusal::TenantConcurrency { .. } => "tenant-concurrency",
                    crate::admission::Refusal::TenantRate { .. } => "tenant-rate",
                    crate::admission::Refusal::NoSlot { .. } => "no-slot",
                };
                metrics::counter!("kiosk_admission_rejections_total", "reason" => reason).increment(1);
            }
        }
        result
    }

    /// `call`, without its measurements.
    async fn call_once(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: Export<'_>,
        origin: Origin,
    ) -> Result<CallOutcome<Answer>, CallFailure> {
        let name = export.name();
        let limits = &app.limits;
        let input_len = export.input_len() as u64;
        if input_len > limits.max_input_bytes {
            return Err(self.failure(
                app,
                inst,
                name,
                CallErrorKind::InputTooLarge { size: input_len, limit: limits.max_input_bytes },
            ));
        }
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow_and_update() || self.is_shutting_down() {
            return Err(self.failure(app, inst, name, CallErrorKind::ShuttingDown));
        }
        let _permit = self
            .admission
            .admit(&inst.tenant, origin)
            .await
            .map_err(|r| self.failure(app, inst, name, CallErrorKind::Busy(r)))?;
        let scope = inst.scope();
        let kv = if app.manifest.capabilities.key_value && !matches!(export, Export::Instantiate) {
            let snapshot = self
                .services
                .kv
                .load(&scope)
                .await
                .map_err(|e| self.failure(app, inst, name, CallErrorKind::Storage(e.to_string())))?;
            Some(KvSession::new(snapshot, limits.kv_quota_bytes, limits.kv_max_key_bytes))
        } else {
            None
        };
        let who = Arc::new(Attribution {
            tenant: inst.tenant.clone(),
            installation: inst.id.clone(),
            app: app.manifest.app.clone(),
            version: app.manifest.version.to_string(),
            call_id: call_id_of(inst),
        });
        let call_id = who.call_id.clone();
        let ctx = CallContext {
            tenant_id: who.tenant.clone(),
            installation_id: who.installation.clone(),
            app_id: who.app.clone(),
            app_version: who.version.clone(),
        };

        let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.timeout_ms);
        let gate = self.call_egress(app, inst, deadline);
        let egress_record = gate.as_ref().map(CallEgress::record);
        let (result, mut state) = {
            let host = HostState::new(limits, who, app.guest_skus.clone(), kv, gate);
            let mut store = Store::new(&self.engine, host);
            store.limiter(|s| &mut s.limiter);
            store.set_hostcall_fuel(usize::try_from(limits.max_host_copy_bytes).unwrap_or(usize::MAX));
            store.set_max_component_handles(limits.max_handles as usize);
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                Ok(if tokio::time::Instant::now() >= deadline {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Yield(1)
                })
            });
            if let Some(fuel) = limits.fuel {
                // Fuel is enabled in the engine whenever the operator sets a budget.
                let _ = store.set_fuel(fuel);
            }
            let run = tokio::time::timeout_at(deadline, crate::exports::run(app, &mut store, &ctx, export));
            let stopped = async {
                // Resolves once the runtime shuts down (never, if the sender is gone).
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let outcome = tokio::select! {
                outcome = run => Some(outcome),
                () = stopped => None,
            };
            let result = match outcome {
                None => Err(CallErrorKind::ShuttingDown),
                Some(Ok(Ok(answer))) => Ok(answer),
                Some(Ok(Err(RunError { instantiating, error }))) => Err(match self.classify(error, &store, limits) {
                    CallErrorKind::Trap { message } if instantiating => CallErrorKind::Instantiate { message },
                    other => other,
                }),
                // The guest was waiting in a host call (or between ticks) at its deadline:
                // its future is dropped here, and the Store with it below.
                Some(Err(_elapsed)) => Err(CallErrorKind::Timeout { limit_ms: limits.timeout_ms }),
            };
            (result, store.into_data())
        };
        state.collect_stderr();
        if let Some(record) = egress_record {
            // Responses still held by the guest end with its resources: their lines are
            // written as they drop, then the call's requests are taken in one piece.
            drop(std::mem::take(&mut state.table));
            state.egress = None;
            let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
            self.take_egress(app, &call_id, &mut state, record);
        }

        match result {
            Ok(answer) => {
                let lines = inst.log_as.as_ref().map(|operation| CallLines {
                    call_id: call_id.clone(),
                    operation: operation.clone(),
                    lines: state
                        .logs
                        .iter()
                        .map(|l| LogEntry { at_ms: l.at_ms, level: l.level.as_str(), message: l.message.clone() })
                        .collect(),
                });
                let logs_kept = lines.is_some();
                if matches!(export, Export::Instantiate) {
                    // A start function may have called `record-usage` while instantiating:
                    // a registration check keeps nothing, so nothing is committed.
                    return Ok(CallOutcome {
                        call_id,
                        result: answer.map_err(AppRefusal::from),
                        usage: Vec::new(),
                        logs: state.logs,
                        logs_kept: false,
                        held: None,
                    });
                }
                let effects = CallEffects {
                    call_id: call_id.clone(),
                    scope,
                    kv: state
                        .kv
                        .take()
                        .map(|session| KvWrite { changes: session.into_changes(), quota: limits.kv_quota_bytes }),
                    usage: std::mem::take(&mut state.usage),
                    lines,
                };
                let mut answer = answer;
                if inst.hold_effects {
                    // A lifecycle hook's: the core commits them with the installation's
                    // row, or not at all (a write that lost its race keeps nothing).
                    let usage = effects.usage.clone();
                    let held = (!effects.is_empty()).then_some(effects);
                    return Ok(CallOutcome {
                        call_id,
                        result: answer.map_err(AppRefusal::from),
                        usage,
                        logs: state.logs,
                        logs_kept,
                        held,
                    });
                }
                if !effects.is_empty() {
                    let usage = effects.usage.clone();
                    let verdicts = self.services.commit.commit(effects).await.map_err(|e| {
                        let kind = match e {
                            CommitError::Kv(kiosk_domain::kv::KvStoreError::TenantQuotaExceeded { tenant, quota }) => {
                                CallErrorKind::TenantKvQuota { tenant, quota }
                            }
                            CommitError::Kv(e) => CallErrorKind::Storage(e.to_string()),
                            CommitError::Unavailable(message) => CallErrorKind::Storage(message),
                            CommitError::Metering(message) => {
                                CallErrorKind::Metering(format!("metering sink failed: {message}"))
                            }
                        };
                        self.failure_of(app, inst, name, kind, &call_id, Some(state.logs.clone()))
                    })?;
                    state.usage = usage;
                    let mut verdicts = verdicts;
                    // A report's accepted records come last (after any `record-usage` the
                    // guest made during the call); their verdicts go back to `report`.
                    if let Ok(Answer::Reported(reported)) = &mut answer {
                        let first = verdicts.len().saturating_sub(reported.accepted.len());
                        reported.verdicts = verdicts.split_off(first);
                    }
                    if let Some(SinkOutcome::Refused(reason)) =
                        verdicts.into_iter().find(|v| matches!(v, SinkOutcome::Refused(_)))
                    {
                        // Host and guest keys are unique per call: a refusal here is a bug.
                        let kind = CallErrorKind::Metering(reason);
                        return Err(self.failure_of(app, inst, name, kind, &call_id, Some(state.logs)));
                    }
                }
                Ok(CallOutcome {
                    call_id,
                    result: answer.map_err(AppRefusal::from),
                    usage: state.usage,
                    logs: state.logs,
                    logs_kept,
                    held: None,
                })
            }
            Err(kind) => {
                // The guest ran: its lines are kept, with a last one naming the failure in
                // the words of the failure itself (what the caller's problem says).
                let mut lines = state.logs;
                lines.push(LogLine { at_ms: now_ms(), level: Level::Error, message: format!("call failed: {kind}") });
                Err(self.failure_of(app, inst, name, kind, &call_id, Some(lines)))
            }
        }
    }
}

/// The id a call of `inst` runs under: the one its caller gave, else a fresh UUID.
fn call_id_of(inst: &Installation) -> String {
    inst.call_id.clone().unwrap_or_else(new_call_id)
}

/// A new call id: a UUIDv7 (RFC 9562): a millisecond timestamp, then a counter seeded at
/// random and random bits (call ids are names, never secrets). Time order
/// matters to the ledger: the keys of a call's usage events start with its call id, so
/// each group's inserts land at the end of the key index instead of on a random page
/// per event (fewer pages written per commit).
pub fn new_call_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
