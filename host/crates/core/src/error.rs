//! The core's error: a `Failure` with a typed `Class` (what kind of failure, not how a
//! front end shows it), a stable slug, a detail that names the bad input, and the field
//! at fault. The server turns the class into an HTTP status in one table
//! (`kiosk_server::error`); `kiosk run` prints the detail.

pub use crate::kind::Kind;

/// What kind of failure, independent of any front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The request is malformed (a parameter out of range).
    BadRequest,
    /// No valid credentials.
    Unauthorized,
    /// The caller may not do this (role, licence).
    Forbidden,
    /// No such thing (or not the caller's to see).
    NotFound,
    /// The state changed or already is what was asked (exists, moved, same version).
    Conflict,
    /// Bigger than a limit allows.
    TooLarge,
    /// Well-formed but refused (a policy, a schema, the app's own refusal).
    Unprocessable,
    /// The caller's own rate or concurrency limit; retry later.
    RateLimited,
    /// The host cannot serve it now (no slot, storage, shutting down); retry later.
    Unavailable,
    /// Something Kiosk called failed: a registry, or the app itself (a trap, a limit).
    Upstream,
    /// Kiosk's own bug or corrupt state; the detail is in the server log only.
    Internal,
}

/// A failed use case.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct Failure {
    pub class: Class,
    /// What failed (its slug is stable, e.g. `config-invalid`).
    pub kind: Kind,
    pub detail: String,
    /// The input at fault (`version`, `config/apiKey`, `reference`).
    pub field: Option<String>,
    /// Every problem found, when there are several (schema validation).
    pub errors: Vec<String>,
    /// Seconds after which a retry may succeed (at most ~136 years: `u32`).
    pub retry_after_s: Option<u32>,
    /// The call that failed, when a call of the app did (its log lines carry it). Boxed:
    /// a `Failure` is every core `Result`'s error and stays small.
    pub call_id: Option<Box<str>>,
}

impl Failure {
    pub fn new(class: Class, kind: Kind, detail: impl Into<String>) -> Self {
        Self { class, kind, detail: detail.into(), field: None, errors: Vec::new(), retry_after_s: None, call_id: None }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = Some(call_id.into().into_boxed_str());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX));
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(Class::NotFound, Kind::NotFound, what)
    }

    pub fn unprocessable(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Class::Unprocessable, kind, detail)
    }

    pub fn conflict(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Class::Conflict, kind, detail)
    }

    pub fn forbidden(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Class::Forbidden, kind, detail)
    }

    /// Kiosk's own fault: the cause goes to the log, the caller learns only that.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(Class::Internal, Kind::Internal, "internal error; see the server log")
    }
}

/// Seconds a caller waits before retrying when the database is unavailable: a dropped
/// pooled connection is replaced at once, a restarting server takes a few seconds.
pub const STORAGE_RETRY_AFTER_S: u64 = 1;

impl From<kiosk_store::StoreError> for Failure {
    /// The database unreachable or restarting is 503 `storage-unavailable` with
    /// `Retry-After` (the request may succeed as it is); anything else is Kiosk's own
    /// fault (500). Either way the database's words stay in the log.
    fn from(e: kiosk_store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the database is unavailable");
            metrics::counter!("kiosk_storage_unavailable_total").increment(1);
            return Self::new(
                Class::Unavailable,
                Kind::StorageUnavailable,
                "the database is unavailable for the moment; retry (see the server log)",
            )
            .retry_after(STORAGE_RETRY_AFTER_S);
        }
        Self::internal(e)
    }
}

/// A use case's result.
pub type Result<T, E = Failure> = std::result::Result<T, E>;
