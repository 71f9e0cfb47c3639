//! Kiosk's HTTP contract as Rust types: the documents the API takes and returns, with
//! their OpenAPI schemas (utoipa). The core's use cases return these where the API
//! shows their result as is; the server serves them; clients (the test suite's, `kiosk
//! admin`) read them. No behaviour here: no I/O, no validation beyond serde's.
//!
//! Wire rules every type keeps: camelCase member names; times are `…Ms` (ms since the
//! Unix epoch); text holds no U+0000 (PostgreSQL cannot store it; every backend refuses
//! it alike).

pub mod registries;
pub mod trust;
pub mod usage;
