//! Kiosk's sandbox: the wasmtime engine, the WIT bindings, the compile cache, admission
//! control and calls into app components.
//!
//! Invariant: knows nothing of the database, HTTP or registries. Storage and metering
//! reach it only through the `KvStore` and `MeteringSink` traits of `kiosk-domain`.

pub mod admission;
pub mod cache;
pub mod error;
mod kv_session;
pub mod logs;
pub mod runtime;
mod sandbox;
pub mod world;
