//! Call logs: the lines of a request's calls gathered while they run and written to the
//! installation's log after them (or to the server log when no installation is left),
//! reading them back, and what a failed or refused call tells its caller
//! (`call_failure`, `refusal_failure`).

use kiosk_domain::metering::UsageEvent;
use kiosk_runtime::error::CallFailure;
use kiosk_runtime::logs::LogLine;
use kiosk_runtime::runtime::{AppRefusal, CallOutcome, Installation};
use kiosk_store::InstallationRow;
use kiosk_store::logs::{LogBounds, LogLineRow, NewLogLine};

use crate::error::{Class, Failure, Kind};
use crate::kiosk::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Longest operation name kept with a log line, bytes (the rest is cut).
const MAX_LOG_OPERATION_BYTES: usize = 160;

/// The lines of one call, waiting to be written once the call is over.
#[derive(Debug)]
pub(crate) struct CallLog {
    pub(crate) call_id: String,
    pub(crate) operation: String,
    pub(crate) lines: Vec<LogLine>,
}

/// The calls of one request, in order, and their lines.
#[derive(Debug, Default)]
pub(crate) struct CallLogs(pub(crate) Vec<CallLog>);

impl CallLogs {
    /// A fresh call of `tenant`'s installation `id`: the installation to call with,
    /// named by a new call id.
    pub(crate) fn call(tenant: &str, id: &str) -> (Installation, String) {
        let call_id = kiosk_runtime::runtime::new_call_id();
        (Installation::new(tenant, id).with_call_id(call_id.clone()), call_id)
    }

    /// A fresh call of a recorded installation whose lines, if it completes, are kept
    /// with its effects in one write (as lines of `operation`).
    pub(crate) fn logged_call(tenant: &str, id: &str, operation: &str) -> (Installation, String) {
        let (call, call_id) = Self::call(tenant, id);
        (call.with_log(kiosk_runtime::logs::sanitize_capped(operation, MAX_LOG_OPERATION_BYTES)), call_id)
    }

    /// Runs one call of the app, keeping its lines whatever the result: the answer and
    /// its usage, or a failure carrying the call id (the app's refusal as `step`).
    pub(crate) async fn run<T>(
        &mut self,
        call: &Installation,
        operation: &str,
        step: &str,
        future: impl std::future::Future<Output = std::result::Result<CallOutcome<T>, CallFailure>>,
    ) -> Result<(String, T, Vec<UsageEvent>)> {
        use tracing::Instrument as _;
        let operation = kiosk_runtime::logs::sanitize_capped(operation, MAX_LOG_OPERATION_BYTES);
        let span = tracing::info_span!("call", call_id = call.call_id.as_deref().unwrap_or(""), operation = %operation);
        match future.instrument(span).await {
            Ok(outcome) => {
                let call_id = outcome.call_id;
                if !outcome.logs_kept {
                    self.0.push(CallLog { call_id: call_id.clone(), operation, lines: outcome.logs });
                }
                match outcome.result {
                    Ok(answer) => Ok((call_id, answer, outcome.usage)),
                    Err(refusal) => Err(refusal_failure(step, &refusal).with_call_id(call_id)),
                }
            }
            Err(mut failure) => {
                let call_id = failure.call.call_id.clone();
                let tail = failure.logs.as_deref().map(log_tail).unwrap_or_default();
                if let Some(lines) = failure.logs.take() {
                    self.0.push(CallLog { call_id: call_id.clone(), operation, lines });
                }
                let mut failure = call_failure(failure).with_call_id(call_id);
                // The app's own failure (a trap, a limit): what it printed last — a
                // Python or JavaScript traceback — is one read away, in the problem.
                if failure.class == Class::Upstream && !tail.is_empty() {
                    failure.detail = format!("{}; the app's last lines: {tail}", failure.detail);
                }
                Err(failure)
            }
        }
    }
}

impl CallLogs {
    /// `run` for a call whose effects the runtime holds (`Installation::holding_effects`):
    /// they are added to `held`, for the core to commit with the installation's row.
    pub(crate) async fn run_held<T>(
        &mut self,
        held: &mut Vec<kiosk_domain::effects::CallEffects>,
        call: &Installation,
        operation: &str,
        step: &str,
        future: impl std::future::Future<Output = std::result::Result<CallOutcome<T>, CallFailure>>,
    ) -> Result<(String, T, Vec<UsageEvent>)> {
        let future = async {
            let mut outcome = future.await;
            if let Ok(done) = &mut outcome
                && let Some(effects) = done.held.take()
            {
                held.push(effects);
            }
            outcome
        };
        self.run(call, operation, step, future).await
    }
}

impl Kiosk {
    /// How much of each installation's log is kept (operator settings).
    pub fn log_bounds(&self) -> LogBounds {
        crate::host::log_bounds(&self.config)
    }

    /// Adds one line of Kiosk's own to an installation's log (as a call of its own, e.g.
    /// `auto-upgrade`), where the tenant, the partner and the operator read it.
    pub(crate) async fn note(&self, tenant: &str, id: &str, operation: &str, line: LogLine) {
        let call_id = kiosk_runtime::runtime::new_call_id();
        self.keep_logs(tenant, id, CallLogs(vec![CallLog { call_id, operation: operation.into(), lines: vec![line] }]))
            .await;
    }

    /// Writes the lines of a request's calls to the installation's log (after the calls:
    /// no wasmtime Store is alive). A failure to write is the server log's, not the
    /// caller's: the calls' effects are already committed, and lines are diagnostics.
    pub(crate) async fn keep_logs(&self, tenant: &str, id: &str, logs: CallLogs) {
        for call in logs.0 {
            if call.lines.is_empty() {
                continue;
            }
            let lines: Vec<NewLogLine> = call
                .lines
                .iter()
                .map(|l| NewLogLine {
                    at_ms: i64::try_from(l.at_ms).unwrap_or(i64::MAX),
                    level: l.level.as_str().to_string(),
                    message: l.message.clone(),
                })
                .collect();
            match self.store.append_logs(tenant, id, &call.call_id, &call.operation, &lines, self.log_bounds()).await {
                Ok(true) => {}
                // Uninstalled while the call ran: its lines go with it.
                Ok(false) => tracing::debug!(call_id = call.call_id, "installation gone: log lines dropped"),
                Err(e) => tracing::error!(error = %e, call_id = call.call_id, "log lines could not be written"),
            }
        }
    }

    /// Lines of calls that left no installation behind (a failed install): they go to
    /// the server log with their call id, the one the caller's problem names.
    pub(crate) fn log_orphans(tenant: &str, id: &str, logs: CallLogs) {
        for call in logs.0 {
            for line in call.lines {
                tracing::info!(
                    tenant,
                    installation = id,
                    call_id = call.call_id,
                    operation = call.operation,
                    level = line.level.as_str(),
                    message = line.message,
                    "guest log line of a call whose installation was not recorded"
                );
            }
        }
    }

    /// An installation's log lines after cursor `since` (exclusive), oldest first: at
    /// most `limit` (the front end bounds it).
    pub async fn logs(&self, row: &InstallationRow, since: i64, limit: i64) -> Result<Vec<LogLineRow>> {
        Ok(self.store.logs(&row.tenant, &row.id, since, limit).await?)
    }
}

/// Lines of a failed call shown in its problem: at most this many, newest last.
const MAX_TAIL_LINES: usize = 8;
/// Bytes of them shown in its problem (the newest kept).
const MAX_TAIL_BYTES: usize = 1024;

/// The last lines a failed call logged (already sanitised by the runtime), without the
/// runtime's own closing "call failed" line (the problem says it), joined by ` | ` and
/// cut to the newest `MAX_TAIL_BYTES`.
fn log_tail(lines: &[LogLine]) -> String {
    let own: Vec<&str> = lines.iter().map(|l| l.message.as_str()).filter(|m| !m.starts_with("call failed: ")).collect();
    let tail = own[own.len().saturating_sub(MAX_TAIL_LINES)..].join(" | ");
    if tail.len() <= MAX_TAIL_BYTES {
        return tail;
    }
    let mut start = tail.len() - MAX_TAIL_BYTES;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &tail[start..])
}

/// A call that did not complete: admission refusals are rate-limited (the tenant's own
/// limits) or unavailable (no sandbox slot), with a retry time; a call too big for its
/// limits is too large; a host storage or metering failure is unavailable; the app's own
/// failure (a limit it hit, a trap) is upstream. Every detail names the limit.
pub fn call_failure(e: CallFailure) -> Failure {
    use kiosk_runtime::admission::Refusal;
    use kiosk_runtime::error::CallErrorKind as K;
    match &e.kind {
        K::Busy(refusal) => {
            let (class, kind) = match refusal {
                Refusal::TenantConcurrency { .. } => (Class::RateLimited, Kind::TenantConcurrencyLimit),
                Refusal::TenantRate { .. } => (Class::RateLimited, Kind::TenantRateLimit),
                Refusal::NoSlot { .. } => (Class::Unavailable, Kind::NoSandboxSlot),
            };
            Failure::new(class, kind, refusal.to_string()).retry_after(refusal.retry_after_s())
        }
        K::ShuttingDown => Failure::new(Class::Unavailable, Kind::ShuttingDown, e.to_string()).retry_after(1),
        K::InputTooLarge { .. } => Failure::new(Class::TooLarge, Kind::InputTooLarge, e.to_string()),
        K::TenantKvQuota { .. } => Failure::unprocessable(Kind::TenantQuota, format!("{}: {}", e.call, e.kind)),
        // The host's own storage failed: its text (database errors) stays in the log.
        K::Storage(_) => {
            tracing::error!(failure = %e, "a call could not commit its key-value changes");
            Failure::new(
                Class::Unavailable,
                Kind::StorageUnavailable,
                format!(
                    "{}: the host's storage is unavailable, nothing the call did was kept; see the server log",
                    e.call
                ),
            )
            .retry_after(1)
        }
        K::Metering(_) => {
            tracing::error!(failure = %e, "a call's usage was not recorded");
            Failure::new(
                Class::Unavailable,
                Kind::UsageNotRecorded,
                format!(
                    "{}: the call's usage could not be recorded, so the call does not count; see the server log",
                    e.call
                ),
            )
            .retry_after(1)
        }
        _ => Failure::new(Class::Upstream, Kind::AppFailed, e.to_string()),
    }
}

/// The app refused on purpose (its WIT error): its message reaches the caller.
pub fn refusal_failure(step: &str, r: &AppRefusal) -> Failure {
    Failure::unprocessable(Kind::AppRefused, format!("{step}: the app refused: {} ({})", r.message, r.code))
}
