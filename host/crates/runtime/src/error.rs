//! Errors at the runtime's boundary. Three kinds are kept apart:
//! - `AppError` (WIT) — the app refused on purpose; its message reaches the tenant;
//! - `CallFailure` — the call did not complete (a limit, a trap, the host's storage);
//! - `LoadError` — a component could not be compiled, cached or linked.
//!
//! API errors (problem+json) are built from these at the HTTP edge.

use kiosk_domain::digest::Digest;

/// What stopped a call. Every variant names the limit or the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallErrorKind {
    #[error("timed out: the call exceeded its wall-time limit of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    #[error("ran out of fuel: the call exceeded its budget of {fuel} fuel units")]
    FuelExhausted { fuel: u64 },
    #[error("memory limit reached: linear memory may not grow beyond {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    #[error("table limit reached: tables may not grow beyond {limit_elements} elements")]
    TableLimit { limit_elements: u64 },
    #[error("stack overflow: the call exceeded the wasm stack limit of {limit_kib} KiB")]
    StackOverflow { limit_kib: u64 },
    #[error("log limit reached: the call wrote more than {limit_bytes} bytes of log text")]
    LogLimit { limit_bytes: u64 },
    #[error("stderr limit reached: the call wrote more than {limit_bytes} bytes to stderr")]
    StderrLimit { limit_bytes: u64 },
    #[error("random bytes limit reached: one wasi:random call may ask for at most {limit_bytes} bytes")]
    RandomLimit { limit_bytes: u64 },
    #[error("handle limit reached: the call may hold at most {limit} resource handles")]
    HandleLimit { limit: u32 },
    #[error("host copy limit reached: one host call or result may copy at most {limit_bytes} bytes out of the guest")]
    HostCopyLimit { limit_bytes: u64 },
    #[error("report too large: {records} usage records, the limit is {limit} per report")]
    ReportTooLarge { records: u64, limit: u32 },
    #[error("the host is shutting down; the call was stopped and nothing it did was kept")]
    ShuttingDown,
    #[error("not admitted: {0}")]
    Busy(crate::admission::Refusal),
    #[error("input too large: {size} bytes, the limit is {limit} bytes")]
    InputTooLarge { size: u64, limit: u64 },
    #[error("output too large: {size} bytes, the limit is {limit} bytes")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("the app trapped: {message}")]
    Trap { message: String },
    #[error("the app could not be instantiated: {message}")]
    Instantiate { message: String },
    #[error("{0}")]
    Storage(String),
    /// The call's key-value changes would take its tenant's installations together over
    /// the tenant's quota: nothing of the call was kept.
    #[error(
        "the key-value quota of tenant {tenant} ({quota} bytes over all its installations) would be exceeded; nothing the call did was kept"
    )]
    TenantKvQuota { tenant: String, quota: u64 },
    #[error("{0}")]
    Metering(String),
}

impl CallErrorKind {
    /// The limit this failure names, as a metric label (`None`: not a limit).
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            Self::Timeout { .. } => "timeout",
            Self::FuelExhausted { .. } => "fuel",
            Self::MemoryLimit { .. } => "memory",
            Self::TableLimit { .. } => "table",
            Self::StackOverflow { .. } => "stack",
            Self::LogLimit { .. } => "log",
            Self::StderrLimit { .. } => "stderr",
            Self::RandomLimit { .. } => "random",
            Self::HandleLimit { .. } => "handles",
            Self::HostCopyLimit { .. } => "host-copy",
            Self::ReportTooLarge { .. } => "report-records",
            Self::TenantKvQuota { .. } => "tenant-kv-bytes",
            Self::InputTooLarge { .. } => "input",
            Self::OutputTooLarge { .. } => "output",
            _ => return None,
        })
    }

    /// The outcome label of a call that failed so: `limit`, `trap`, `refused` (not
    /// admitted, input too large), `shutting-down` or `host-error` (storage, metering).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Busy(_) | Self::InputTooLarge { .. } => "refused",
            Self::ShuttingDown => "shutting-down",
            Self::Trap { .. } | Self::Instantiate { .. } => "trap",
            Self::Storage(_) | Self::Metering(_) => "host-error",
            _ => "limit",
        }
    }
}

/// A call that did not complete, with who and what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {kind}")]
pub struct CallFailure {
    /// Which call failed (boxed: keeps `Result<_, CallFailure>` small on the hot path).
    pub call: Box<CallSite>,
    pub kind: CallErrorKind,
    /// The lines the guest logged, with a last one naming the failure, when the guest
    /// ran; `None` when the call was refused before it started (admission, input size,
    /// shutting down).
    pub logs: Option<Vec<crate::logs::LogLine>>,
}

/// Who and what a call was for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{export} of {app}@{version} ({digest}) for tenant {tenant}, installation {installation}")]
pub struct CallSite {
    pub tenant: String,
    pub installation: String,
    pub app: String,
    pub version: String,
    pub digest: Digest,
    /// The WIT export that was called, e.g. `calls.invoke`.
    pub export: &'static str,
    /// The call's id (its log lines and metered usage carry it).
    pub call_id: String,
}

/// A component could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component {digest} could not be compiled: {message}")]
    Compile { digest: Digest, message: String },
    #[error("component {digest} does not implement the kiosk:app@{world} world: {message}")]
    NotAnApp { digest: Digest, world: semver::Version, message: String },
    #[error("compile cache at {path}: {message}")]
    Cache { path: String, message: String },
}
