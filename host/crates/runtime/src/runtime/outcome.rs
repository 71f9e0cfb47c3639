//! What a completed call hands back: its outcome, and the app's refusal as the tenant
//! sees it (capped and sanitised).

use serde::Serialize;

use crate::logs::{self, LogLine};
use crate::world;
use kiosk_domain::metering::UsageEvent;

/// Longest app-error message (and trap text) shown anywhere, bytes.
pub const MAX_APP_TEXT_BYTES: usize = 4 * 1024;
/// Longest app-error code, bytes.
pub const MAX_APP_CODE_BYTES: usize = 128;

/// The app's refusal (WIT `app-error`), as the tenant will see it: capped and stripped
/// of control and bidi-override characters (guest text is hostile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("the app refused: {message} ({code})")]
pub struct AppRefusal {
    pub code: String,
    pub message: String,
}

impl From<world::AppError> for AppRefusal {
    fn from(e: world::AppError) -> Self {
        Self {
            code: logs::sanitize_capped(&e.code, MAX_APP_CODE_BYTES),
            message: logs::sanitize_capped(&e.message, MAX_APP_TEXT_BYTES),
        }
    }
}

/// A call that completed: the app's answer (which may be a refusal), the usage it
/// metered (already committed) and the log lines it wrote (the caller keeps them).
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub call_id: String,
    pub result: Result<T, AppRefusal>,
    pub usage: Vec<UsageEvent>,
    pub logs: Vec<LogLine>,
    /// The lines were committed with the call's effects (`Installation::with_log`).
    pub logs_kept: bool,
    /// The call's effects, not committed (`Installation::holding_effects`; `None` when
    /// it changed nothing, metered nothing and logged nothing, or when they were committed).
    pub held: Option<kiosk_domain::effects::CallEffects>,
}
