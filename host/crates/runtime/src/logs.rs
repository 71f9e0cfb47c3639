//! Guest log lines: sanitised and capped per call, handed back with the call's outcome
//! or failure (the core keeps them in the database). Never written to the host's
//! stdout raw.

use serde::Serialize;

pub use kiosk_domain::text::{sanitize, sanitize_capped};

/// Severity, as in the WIT `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// The level's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: Level,
    pub message: String,
}
