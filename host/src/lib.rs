//! Kiosk: a WebAssembly plugin host for marketplace apps. The `kiosk` binary (command
//! line) over the workspace's crates; the modules below re-export them under the paths
//! the tests and benchmarks use.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view and code map.

mod admin;
mod catalog_export;
pub mod cli;
mod new;

pub use kiosk_core::{collector, config, seal, upgrades, watch};
pub use kiosk_distribution::{artifact, publish, registry, trust};
pub use kiosk_domain::{digest, effects, kv, limits, manifest, metering, net, text, upgrade};
pub use kiosk_runtime::{admission, cache, egress, error, logs, runtime, world};
pub use kiosk_server as server;
pub use kiosk_store as store;
pub use kiosk_store::ledger;
