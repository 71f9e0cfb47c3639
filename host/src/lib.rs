//! Kiosk: a WebAssembly plugin host for marketplace apps.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view and code map.

pub mod admission;
pub mod artifact;
pub mod blobs;
pub mod cache;
pub mod cli;
pub mod collector;
pub mod config;
pub mod digest;
pub mod error;
pub mod kv;
pub mod ledger;
pub mod limits;
pub mod logs;
pub mod manifest;
pub mod metering;
pub mod publish;
pub mod registry;
pub mod runtime;
mod sandbox;
pub mod server;
pub mod store;
pub mod trust;
pub mod world;
