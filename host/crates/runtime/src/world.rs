//! The one `bindgen!` site: Rust bindings for the `kiosk:app` WIT worlds.
//!
//! Every other module refers to WIT types through this module. Two worlds are served
//! side by side: `kiosk:app@0.1.0` (no network) and `kiosk:app@0.2.0` (0.1.0 plus the
//! standard `wasi:http/outgoing-handler`). Their shared record types are one set of Rust
//! types (0.2.0's `types` interface is mapped onto 0.1.0's: the same shapes), so the
//! runtime's call path is written once for both.

/// `kiosk:app@0.1.0`.
pub mod v1 {
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
}

/// `kiosk:app@0.2.0`: 0.1.0 plus `wasi:http/outgoing-handler`.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../../../wit/app@0.2.0",
        world: "app",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "kiosk:app/types": super::v1::kiosk::app::types,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use self::v1::exports::kiosk::app::{calls, lifecycle, usage};
pub use self::v1::kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
pub use self::v1::kiosk::app::{key_value, log, metering};
pub use self::v1::{App, AppPre};

/// The newest version of the WIT world this host implements; manifests' `hostApi`
/// ranges are checked against the version their component imports (`world_of`).
pub const HOST_API_VERSION: semver::Version = semver::Version::new(0, 2, 0);

/// Every world version this host serves, oldest first.
pub const WORLD_VERSIONS: [semver::Version; 2] = [semver::Version::new(0, 1, 0), semver::Version::new(0, 2, 0)];

/// The WIT package directory of 0.1.0 (for tools and tests).
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit/app@0.1.0");
/// The WIT package directory of 0.2.0 (for tools and tests).
pub const WIT_DIR_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit/app@0.2.0");

/// The world version a component was built against, read from its imports: a
/// component that imports any `kiosk:app/…@0.2.0` interface is a 0.2.0 app; anything
/// else is held to 0.1.0 (and so refused at link time if it imports `wasi:http`).
pub fn world_of<'a>(import_names: impl IntoIterator<Item = &'a str>) -> semver::Version {
    for name in import_names {
        if name.starts_with("kiosk:app/") && name.ends_with("@0.2.0") {
            return semver::Version::new(0, 2, 0);
        }
    }
    semver::Version::new(0, 1, 0)
}
