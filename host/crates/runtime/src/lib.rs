//! Kiosk's sandbox: the wasmtime engine, the WIT bindings, the compile cache, admission
//! control and calls into app components.
//!
//! Invariant: knows nothing of the database, HTTP serving or registries. Storage and
//! metering reach it only through the `KvStore` and `MeteringSink` traits of
//! `kiosk-domain`; its only sockets are those of apps' outbound HTTP, opened by `egress`.

pub mod admission;
pub mod cache;
pub mod egress;
pub mod error;
mod exports;
/// A guest's `usage.report` records judged, for the fuzz targets (tests/fuzz/).
pub use exports::judge_report;
mod kv_session;
pub mod logs;
pub mod runtime;
mod sandbox;
mod sandbox_v2;
pub mod world;
