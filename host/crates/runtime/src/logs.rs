//! Guest log lines: sanitised, capped per call, kept per installation in a bounded
//! buffer (oldest lines dropped first). Never written to the host's stdout raw.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use kiosk_domain::kv::KvScope;
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

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: Level,
    pub message: String,
}

/// Per-installation bounded log buffers.
#[derive(Debug)]
pub struct LogStore {
    capacity_bytes: u64,
    buffers: Mutex<HashMap<KvScope, (VecDeque<LogLine>, u64)>>,
}

impl LogStore {
    /// A store that keeps at most `capacity_bytes` of message text per installation.
    pub fn new(capacity_bytes: u64) -> Self {
        Self { capacity_bytes, buffers: Mutex::default() }
    }

    /// Appends a call's lines, dropping the oldest lines beyond capacity.
    pub fn append(&self, scope: &KvScope, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let (buf, bytes) = buffers.entry(scope.clone()).or_default();
        for line in lines {
            *bytes += line.message.len() as u64;
            buf.push_back(line);
        }
        while *bytes > self.capacity_bytes {
            match buf.pop_front() {
                Some(old) => *bytes -= old.message.len() as u64,
                None => break,
            }
        }
    }

    /// The lines kept for an installation, oldest first.
    pub fn lines(&self, scope: &KvScope) -> Vec<LogLine> {
        let buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        buffers.get(scope).map(|(b, _)| b.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets an installation's lines (uninstall).
    pub fn purge(&self, scope: &KvScope) {
        self.buffers.lock().unwrap_or_else(|p| p.into_inner()).remove(scope);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keeps_the_newest_lines_within_capacity() {
        let store = LogStore::new(10);
        let scope = KvScope { tenant: "t".into(), installation: "i".into() };
        let line = |m: &str| LogLine { at_ms: 0, level: Level::Info, message: m.into() };
        store.append(&scope, vec![line("aaaa"), line("bbbb"), line("cccc")]);
        let kept: Vec<_> = store.lines(&scope).into_iter().map(|l| l.message).collect();
        assert_eq!(kept, ["bbbb", "cccc"]);
    }
}
