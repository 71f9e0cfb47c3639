//! The one `bindgen!` site: Rust bindings for the `kiosk:app` WIT world.
//!
//! Every other module refers to WIT types through this module, so a new world version
//! (`wit/app@0.2.0`) is added here, beside the old one, and nowhere else.

wasmtime::component::bindgen!({
    path: "../../../wit/app@0.1.0",
    world: "app",
    // Host imports may trap the call (e.g. the per-call log cap); each returns
    // `wasmtime::Result<_>` so the host can stop a guest cleanly.
    imports: { default: trappable },
    // Exports run with `call_async`: a guest waiting in a host call (a WASI sleep or
    // poll) is a pending future that its deadline drops.
    exports: { default: async },
});

pub use self::exports::kiosk::app::{calls, lifecycle, usage};
pub use self::kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
pub use self::kiosk::app::{key_value, log, metering};

/// The version of the WIT world this host implements; manifests' `hostApi` ranges are
/// checked against it.
pub const HOST_API_VERSION: semver::Version = semver::Version::new(0, 1, 0);

/// The WIT package directory the bindings are generated from (for tools and tests).
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit/app@0.1.0");
