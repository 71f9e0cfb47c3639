//! What a completed call leaves behind — its key-value changes, the usage it metered
//! and the lines it logged — and the one trait they are committed through.
//!
//! A call's effects are committed together, once its Store is gone, in one write: the
//! server's implementation (`kiosk-store`'s ledger writer) puts the effects of every
//! call that completed meanwhile into one transaction (group commit), so a busy server
//! pays one commit for many calls, and a call that changed nothing, metered nothing and
//! logged nothing writes nothing at all.

use std::sync::Arc;

use crate::kv::{KvChanges, KvScope, KvStore, KvStoreError};
use crate::metering::{MeteringSink, SinkOutcome, UsageEvent};

/// One log line of a call, as it is kept (the runtime sanitised and capped it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    pub message: String,
}

/// A call's lines and where they go: the installation's log, under the call's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLines {
    pub call_id: String,
    /// What the call was (`invoke:<operation>`, `report`, …), already capped.
    pub operation: String,
    pub lines: Vec<LogEntry>,
}

/// Key-value changes and the quota the scope must stay within after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    pub changes: KvChanges,
    pub quota: u64,
}

/// Everything one completed call asks to keep. The key-value changes and the usage are
/// kept together or not at all; the lines go with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEffects {
    /// The call's id: the ledger applies one call's effects at most once (a retry after a
    /// lost `COMMIT` reply finds them applied).
    pub call_id: String,
    pub scope: KvScope,
    pub kv: Option<KvWrite>,
    pub usage: Vec<UsageEvent>,
    /// `None`: the caller keeps the lines itself (the installation is not recorded yet,
    /// or there is no installation log, as in `kiosk run`).
    pub lines: Option<CallLines>,
}

impl CallEffects {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.kv.as_ref().is_none_or(|kv| kv.changes.is_empty())
            && self.usage.is_empty()
            && self.lines.as_ref().is_none_or(|l| l.lines.is_empty())
    }
}

/// Why a call's effects were not kept (none of them were).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The key-value changes would take the scope over its quota (another call of the
    /// same installation wrote meanwhile).
    #[error(transparent)]
    Kv(#[from] KvStoreError),
    /// The usage could not be recorded (the message is for the server log).
    #[error("metering sink failed: {0}")]
    Metering(String),
    /// The host's storage failed: nothing of the call was kept (the message is for the
    /// server log).
    #[error("the host's storage failed: {0}")]
    Unavailable(String),
}

/// Commits calls' effects durably; returns once they are durable, with the sink's
/// verdict per usage event (in order).
#[async_trait::async_trait]
pub trait CallCommitter: Send + Sync {
    async fn commit(&self, effects: CallEffects) -> Result<Vec<SinkOutcome>, CommitError>;
}

/// A committer over a separate key-value store and metering sink (the command line and
/// tests): the changes first, then the usage; the lines are not kept (the caller has
/// them). Not atomic across the two, which is why the server does not use it.
#[derive(Clone)]
pub struct SeparateCommitter {
    pub kv: Arc<dyn KvStore>,
    pub metering: Arc<dyn MeteringSink>,
}

impl std::fmt::Debug for SeparateCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeparateCommitter").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl CallCommitter for SeparateCommitter {
    async fn commit(&self, effects: CallEffects) -> Result<Vec<SinkOutcome>, CommitError> {
        if let Some(kv) = effects.kv.filter(|kv| !kv.changes.is_empty()) {
            self.kv.commit(&effects.scope, kv.changes, kv.quota).await?;
        }
        if effects.usage.is_empty() {
            return Ok(Vec::new());
        }
        self.metering.submit(&effects.usage).await.map_err(|e| CommitError::Metering(e.0))
    }
}
