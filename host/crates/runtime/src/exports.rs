//! Calling one export of an app, in either world version: instantiate in the call's
//! Store, call, then check what came back (output size, report records) and add the
//! host-metered usage. The two worlds' bindings are distinct types with the same
//! shapes (0.2.0's shared types are 0.1.0's), so `call_export!` names each export once.

use std::collections::HashSet;

use wasmtime::Store;

use crate::error::CallErrorKind;
use crate::logs;
use crate::runtime::{AppVersion, CallOutcome, RefusedRecord, ReportedUsage};
use crate::sandbox::HostState;
use crate::world::{self, CallContext, UsageWindow};
use kiosk_domain::metering::{MAX_IDEMPOTENCY_KEY_BYTES, MAX_QUANTITY, UsageEvent, UsageSource, now_ms};

/// What an export returned, before Kiosk checks it.
enum Returned {
    Done(Result<(), world::AppError>),
    Output(Result<String, world::AppError>),
    Report(Result<Vec<world::UsageRecord>, world::AppError>),
}

/// Calls `$export` on `$instance` (either world's bindings).
macro_rules! call_export {
    ($instance:expr, $store:expr, $ctx:expr, $export:expr) => {{
        let instance = $instance;
        let lifecycle = instance.kiosk_app_lifecycle();
        match $export {
            Export::ValidateConfig(config) => {
                Returned::Done(lifecycle.call_validate_config(&mut *$store, $ctx, config).await?)
            }
            Export::Install(config) => Returned::Done(lifecycle.call_install(&mut *$store, $ctx, config).await?),
            Export::Configure(old, new) => {
                Returned::Done(lifecycle.call_configure(&mut *$store, $ctx, old, new).await?)
            }
            Export::Upgrade(from, config) => {
                Returned::Done(lifecycle.call_upgrade(&mut *$store, $ctx, from, config).await?)
            }
            Export::Uninstall => Returned::Done(lifecycle.call_uninstall(&mut *$store, $ctx).await?),
            Export::Instantiate => Returned::Done(Ok(())),
            Export::Invoke(operation, input) => {
                Returned::Output(instance.kiosk_app_calls().call_invoke(&mut *$store, $ctx, operation, input).await?)
            }
            Export::Report(window) => {
                Returned::Report(instance.kiosk_app_usage().call_report(&mut *$store, $ctx, window).await?)
            }
        }
    }};
}

/// Instantiates the component in `store` and calls one export.
pub(crate) async fn run(
    app: &AppVersion,
    store: &mut Store<HostState>,
    ctx: &CallContext,
    export: Export<'_>,
) -> Result<Result<Answer, world::AppError>, RunError> {
    let call = |e| RunError { instantiating: false, error: e };
    let returned = match app.component.pre() {
        crate::runtime::Pre::V1(pre) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(RunError::instantiating)?;
            let returned: wasmtime::Result<Returned> = async { Ok(call_export!(&instance, store, ctx, export)) }.await;
            returned.map_err(call)?
        }
        crate::runtime::Pre::V2(pre) => {
            let instance = pre.instantiate_async(&mut *store).await.map_err(RunError::instantiating)?;
            let returned: wasmtime::Result<Returned> = async { Ok(call_export!(&instance, store, ctx, export)) }.await;
            returned.map_err(call)?
        }
    };
    let answer = match (returned, export) {
        (Returned::Done(result), _) => result.map(|()| Answer::Done),
        (Returned::Output(Ok(output)), Export::Invoke(operation, _)) => {
            let max_output = app.limits.max_output_bytes;
            if output.len() as u64 > max_output {
                return Err(call(wasmtime::Error::new(CallErrorKind::OutputTooLarge {
                    size: output.len() as u64,
                    limit: max_output,
                })));
            }
            let call_id = store.data().who.call_id.clone();
            let host_metered: Vec<UsageEvent> = app
                .manifest
                .skus_for_operation(operation)
                .map(|sku| UsageEvent {
                    tenant: ctx.tenant_id.clone(),
                    installation: ctx.installation_id.clone(),
                    app: ctx.app_id.clone(),
                    version: ctx.app_version.clone(),
                    sku: sku.id.clone(),
                    quantity: 1,
                    at_ms: now_ms(),
                    source: UsageSource::Host,
                    idempotency_key: format!("{call_id}/host/{}", sku.id),
                })
                .collect();
            store.data_mut().usage.extend(host_metered);
            Ok(Answer::Output(output))
        }
        (Returned::Output(result), _) => result.map(Answer::Output),
        (Returned::Report(Err(e)), _) => Err(e),
        (Returned::Report(Ok(records)), Export::Report(window)) => {
            let limit = app.limits.max_usage_events_per_call;
            if records.len() as u64 > u64::from(limit) {
                return Err(call(wasmtime::Error::new(CallErrorKind::ReportTooLarge {
                    records: records.len() as u64,
                    limit,
                })));
            }
            let reported = judge_report(&app.skus, &app.guest_skus, ctx, window, records);
            store.data_mut().usage.extend(reported.accepted.iter().cloned());
            Ok(Answer::Reported(reported))
        }
        (Returned::Report(Ok(_)), _) => Ok(Answer::Done),
    };
    Ok(answer)
}

/// Judges a report's records: accepted events and refused records with reasons.
/// `skus`: every SKU the version declares; `guest_skus`: those the guest may meter.
/// Public (through the crate root) for the fuzz targets: a guest's records are hostile.
pub fn judge_report(
    skus: &HashSet<String>,
    guest_skus: &HashSet<String>,
    ctx: &CallContext,
    window: UsageWindow,
    records: Vec<world::UsageRecord>,
) -> ReportedUsage {
    let mut reported = ReportedUsage::default();
    let mut seen = HashSet::new();
    for r in records {
        let reason = if !skus.contains(&r.sku) {
            Some(format!(
                "SKU {:?} is not declared by {}@{}",
                logs::sanitize_capped(&r.sku, 200),
                ctx.app_id,
                ctx.app_version
            ))
        } else if !guest_skus.contains(&r.sku) {
            Some(format!("SKU {:?} is metered by the host for its operations; the app may not report it", r.sku))
        } else if r.quantity == 0 || r.quantity > MAX_QUANTITY {
            Some(format!("quantity {} is outside 1..={MAX_QUANTITY}", r.quantity))
        } else if r.idempotency_key.is_empty() || r.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            Some(format!(
                "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes, found {}",
                r.idempotency_key.len()
            ))
        } else if r.idempotency_key.contains('\0') {
            Some("idempotency key must not contain NUL (U+0000)".to_string())
        } else if !seen.insert(r.idempotency_key.clone()) {
            Some("idempotency key appears twice in this report".to_string())
        } else {
            None
        };
        let shown_key = logs::sanitize_capped(&r.idempotency_key, MAX_IDEMPOTENCY_KEY_BYTES);
        match reason {
            Some(reason) => reported.refused.push(RefusedRecord {
                sku: logs::sanitize_capped(&r.sku, 200),
                quantity: r.quantity,
                idempotency_key: shown_key,
                reason,
            }),
            None => reported.accepted.push(UsageEvent {
                tenant: ctx.tenant_id.clone(),
                installation: ctx.installation_id.clone(),
                app: ctx.app_id.clone(),
                version: ctx.app_version.clone(),
                sku: r.sku,
                quantity: r.quantity,
                at_ms: window.start_ms,
                source: UsageSource::Report,
                idempotency_key: format!("{}/report/{}", ctx.installation_id, r.idempotency_key),
            }),
        }
    }
    reported
}

/// The export a call runs, with its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Export<'a> {
    ValidateConfig(&'a str),
    Install(&'a str),
    Configure(&'a str, &'a str),
    Upgrade(&'a str, &'a str),
    Uninstall,
    Invoke(&'a str, &'a str),
    Report(UsageWindow),
    /// Instantiation only (no export is called): whether a version can run at all.
    Instantiate,
}

impl Export<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::ValidateConfig(_) => "lifecycle.validate-config",
            Self::Install(_) => "lifecycle.install",
            Self::Configure(..) => "lifecycle.configure",
            Self::Upgrade(..) => "lifecycle.upgrade",
            Self::Uninstall => "lifecycle.uninstall",
            Self::Invoke(..) => "calls.invoke",
            Self::Report(_) => "usage.report",
            Self::Instantiate => "instantiate",
        }
    }

    pub(crate) fn input_len(&self) -> usize {
        match self {
            Self::ValidateConfig(c) | Self::Install(c) => c.len(),
            Self::Configure(old, new) => old.len().saturating_add(new.len()),
            Self::Upgrade(_, config) => config.len(),
            Self::Invoke(operation, input) => operation.len().saturating_add(input.len()),
            Self::Uninstall | Self::Report(_) | Self::Instantiate => 0,
        }
    }
}

/// What a completed export answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Done,
    Output(String),
    Reported(ReportedUsage),
}

/// A call that stopped before the export returned.
pub(crate) struct RunError {
    pub(crate) instantiating: bool,
    pub(crate) error: wasmtime::Error,
}

impl RunError {
    pub(crate) fn instantiating(error: wasmtime::Error) -> Self {
        Self { instantiating: true, error }
    }
}

impl CallOutcome<Answer> {
    pub(crate) fn done(self) -> CallOutcome<()> {
        CallOutcome {
            call_id: self.call_id,
            result: self.result.map(drop),
            usage: self.usage,
            logs: self.logs,
            logs_kept: self.logs_kept,
            held: self.held,
        }
    }
}
