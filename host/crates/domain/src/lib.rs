//! Kiosk's shared vocabulary: what every other crate speaks. Content digests, the app
//! manifest and its config schema, sandbox limits, usage events and the metering sink
//! trait, the key-value store trait, and the rules for showing untrusted text.
//!
//! Invariant: no I/O and no engine here — no wasmtime, sqlx, axum or network crates.

pub mod catalog_meta;
pub mod digest;
pub mod effects;
pub mod egress;
pub mod ids;
pub mod kv;
pub mod limits;
pub mod manifest;
pub mod metering;
pub mod net;
pub mod resolve;
pub mod text;
pub mod upgrade;
