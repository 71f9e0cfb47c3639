//! Kiosk's use cases: one lifecycle under every front end (the HTTP API, `kiosk run`, the
//! demo seed, the collector).
//!
//! Invariant: no HTTP types here (no axum); errors are `Failure`s with a typed class that
//! the server maps to problem+json in one table.

pub mod collector;
pub mod config;
pub mod egress;
pub mod egress_policy;
pub mod error;
pub mod host;
pub mod lifecycle;
pub mod local;
pub mod log_trim;
pub mod operator;
pub mod seal;
pub mod upgrades;
pub mod watch;
