//! Kiosk's use cases: one lifecycle under every front end (the HTTP API, `kiosk run`, the
//! demo seed, the collector).
//!
//! Invariant: no HTTP types here (no axum); errors are `Failure`s with a typed class that
//! the server maps to problem+json in one table.

pub mod call_logs;
pub mod catalog;
pub mod catalog_meta;
pub mod certificates;
pub mod collector;
pub mod config;
pub mod demo;
pub mod egress;
pub mod egress_policy;
pub mod error;
pub mod estate;
pub mod export;
pub mod host;
pub mod idempotency;
pub mod kind;
pub mod kiosk;
pub mod lifecycle;
pub mod local;
pub mod log_trim;
pub mod operator;
pub mod private_apps;
pub mod quotas;
pub mod records;
pub mod registration;
pub mod registries;
pub mod seal;
pub mod secrets;
pub mod statements;
pub mod tokens;
pub mod trust;
pub mod upgrades;
pub mod usage;
pub mod versions;
pub mod watch;

pub use kiosk::Kiosk;
