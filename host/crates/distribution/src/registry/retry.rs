//! Timeouts and retries of registry requests: exponential backoff with jitter on
//! transient failures, for pulls (`Registry::pull`) and oci-client pushes.

use std::time::Duration;

use oci_client::errors::OciDistributionError;
use rand::Rng;

use super::Registry;
use super::error::{Attempt, RemoteError, RemoteFailure};
use crate::artifact::ArtifactError;

/// An error of one attempt, for the retry loop.
trait AttemptError {
    fn transient(&self) -> bool;
    fn detail(&self) -> String;
}

impl AttemptError for Attempt {
    fn transient(&self) -> bool {
        self.failure.transient()
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl AttemptError for OciDistributionError {
    fn transient(&self) -> bool {
        is_transient(self)
    }
    fn detail(&self) -> String {
        describe(self)
    }
}

impl Registry {
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.transfer.backoff_base_ms.saturating_mul(1 << attempt.min(16)).min(self.transfer.backoff_max_ms);
        // Full jitter: spread retries of many replicas over the whole interval.
        Duration::from_millis(rand::rng().random_range(exp / 2..=exp.max(1)))
    }

    /// Runs `op` with the per-request timeout, retrying transient failures. The error
    /// is the last attempt's (`None`: it ran out of time) and the number of attempts.
    async fn attempts<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, (Option<E>, u32)>
    where
        E: AttemptError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            let outcome = tokio::time::timeout(Duration::from_millis(self.transfer.request_timeout_ms), op()).await;
            let error = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            let transient = error.as_ref().is_none_or(AttemptError::transient);
            let detail = error.as_ref().map_or_else(
                || format!("no answer within {} ms", self.transfer.request_timeout_ms),
                AttemptError::detail,
            );
            if !transient || attempt >= self.transfer.retries {
                tracing::warn!(registry = %self.host, %what, %detail, attempts = attempt + 1, "registry request failed");
                return Err((error, attempt + 1));
            }
            let wait = self.backoff(attempt);
            tracing::warn!(registry = %self.host, %what, %detail, attempt, ?wait, "transient registry failure; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Runs an oci-client operation (pushes) with timeouts and retries.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.attempts(what, op).await.map_err(|(error, attempts)| {
            let transient = error.as_ref().is_none_or(AttemptError::transient);
            let message = error.as_ref().map_or_else(
                || format!("no answer within {} ms", self.transfer.request_timeout_ms),
                AttemptError::detail,
            );
            let tries = if transient { format!(" (after {attempts} attempts)") } else { String::new() };
            ArtifactError::Source { source_name: self.host.clone(), message: format!("{what}: {message}{tries}") }
        })
    }

    /// Runs one pull request with timeouts and retries; failures in Kiosk's words.
    pub(super) async fn pull<T, F, Fut>(&self, source_name: &str, what: &str, op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        self.attempts(what, op).await.map_err(|(error, attempts)| {
            ArtifactError::Remote(RemoteError {
                source_name: source_name.to_string(),
                what: what.to_string(),
                failure: error.map_or(RemoteFailure::Timeout, |e| e.failure),
                attempts,
            })
        })
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RequestError(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// oci-client's error text (pushes only: the partner's own tool and registry).
fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RequestError(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}
