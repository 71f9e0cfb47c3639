//! The ledger as the runtime sees it: the metering sink (usage submitted by a call) and
//! the call committer (a call's key-value changes, usage and lines), both answering
//! only once what they were given is durable.

use kiosk_domain::effects::{CallCommitter, CallEffects, CommitError};
use kiosk_domain::metering::{MeteringSink, MeteringSinkError, SinkOutcome, UsageEvent};

use super::{Ledger, Recorded};
use crate::logs::LogBounds;

/// The runtime's metering sink on top of the ledger: `submit` returns after the commit,
/// so a call's answer is sent only once its usage is durable.
#[derive(Debug, Clone)]
pub struct LedgerSink {
    pub ledger: Ledger,
}

fn sink_outcome(o: Recorded) -> SinkOutcome {
    match o {
        Recorded::Recorded => SinkOutcome::Stored,
        Recorded::Duplicate => SinkOutcome::Duplicate,
        Recorded::Conflict { recorded_quantity } => {
            SinkOutcome::Refused(format!("idempotency key already recorded with quantity {recorded_quantity}"))
        }
        Recorded::Refused { reason } => SinkOutcome::Refused(reason.to_string()),
    }
}

#[async_trait::async_trait]
impl MeteringSink for LedgerSink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        let outcomes = self.ledger.record(events.to_vec()).await.map_err(|e| {
            tracing::error!(error = %e, "the ledger failed to record a call's usage");
            MeteringSinkError("the usage ledger is unavailable; see the server log".into())
        })?;
        Ok(outcomes.into_iter().map(sink_outcome).collect())
    }
}

/// The runtime's committer on top of the ledger: a call's key-value changes, usage and
/// lines in one group-committed transaction, durable before the call's answer is sent.
#[derive(Debug, Clone)]
pub struct LedgerCommitter {
    pub ledger: Ledger,
    /// How much of each installation's log is kept.
    pub logs: LogBounds,
}

#[async_trait::async_trait]
impl CallCommitter for LedgerCommitter {
    async fn commit(&self, effects: CallEffects) -> Result<Vec<SinkOutcome>, CommitError> {
        let scope = effects.scope.clone();
        match self.ledger.commit_call(effects, self.logs).await {
            Ok(Ok(outcomes)) => Ok(outcomes.into_iter().map(sink_outcome).collect()),
            Ok(Err(hit)) => Err(CommitError::Kv(hit.into_error(&scope))),
            Err(e) => {
                tracing::error!(error = %e, "the ledger failed to commit a call's effects");
                Err(CommitError::Unavailable("the database did not commit the call; see the server log".into()))
            }
        }
    }
}
