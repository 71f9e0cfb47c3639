//! The `Kiosk` handle every use case hangs off: one store, one runtime, one operator
//! config, and the in-memory state they share (loaded app versions, components known not
//! to run, the load and registration permits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiosk_runtime::runtime::{AppVersion, Runtime};
use kiosk_store::Store;
use kiosk_store::ledger::Ledger;

use crate::config::OperatorConfig;
use crate::seal::Sealer;

/// The actor of what Kiosk does by itself (quarantines found when the trust store is
/// rebuilt).
pub const SYSTEM: &str = "kiosk";

/// Kiosk's use cases over one store, one runtime and one operator config. Its parts are
/// private to the core: a front end reaches the store, the runtime and the ledger only
/// through a use case (`.ci/boundaries`).
pub struct Kiosk {
    pub(crate) store: Store,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) config: Arc<OperatorConfig>,
    pub(crate) sealer: Sealer,
    pub(crate) ledger: Ledger,
    /// Loaded app versions, by (app, version).
    loaded: Mutex<HashMap<(String, String), AppVersion>>,
    /// Components that could not be compiled or linked, by component digest, and
    /// components registration's check refused, by digest and limits, with why: the
    /// engine's settings are fixed for the life of the process, so such a component is
    /// refused again without compiling it again (bounded: `MAX_UNRUNNABLE`).
    unrunnable: Mutex<HashMap<String, String>>,
    /// Loads (compilations, cache reads) running at once: `MAX_LOADS`.
    loads: Arc<tokio::sync::Semaphore>,
    /// Registrations compiling and checking a component at once: one.
    registering: tokio::sync::Semaphore,
    /// This process's name in leases it takes (usage sinks).
    pub(crate) replica: Arc<str>,
    /// The usage sinks' pushers, stopped at shutdown before their leases are given back.
    pub(crate) pushers: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Components compiled or read from the cache at once. wasmtime already compiles one
/// component in parallel across the cores, so more would only queue for the same cores
/// while calls wait; two lets a cache hit proceed beside one long compilation.
const MAX_LOADS: usize = 2;

/// How many unrunnable component digests are remembered (each a digest and one message);
/// past that the memory is emptied and those digests would be compiled once more.
pub(crate) const MAX_UNRUNNABLE: usize = 1024;

impl std::fmt::Debug for Kiosk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kiosk").finish_non_exhaustive()
    }
}

impl Kiosk {
    pub fn new(
        store: Store,
        runtime: Arc<Runtime>,
        config: Arc<OperatorConfig>,
        sealer: Sealer,
        ledger: Ledger,
    ) -> Self {
        Self {
            store,
            runtime,
            config,
            sealer,
            ledger,
            loaded: Mutex::default(),
            unrunnable: Mutex::default(),
            loads: Arc::new(tokio::sync::Semaphore::new(MAX_LOADS)),
            registering: tokio::sync::Semaphore::new(1),
            replica: uuid::Uuid::new_v4().to_string().into(),
            pushers: Mutex::default(),
        }
    }

    /// Loaded app versions, by (app, version).
    pub(crate) fn loaded(&self) -> &Mutex<HashMap<(String, String), AppVersion>> {
        &self.loaded
    }

    /// Components known not to run, with why (`MAX_UNRUNNABLE`).
    pub(crate) fn unrunnable(&self) -> &Mutex<HashMap<String, String>> {
        &self.unrunnable
    }

    /// Places for loads (compilations, cache reads): `MAX_LOADS`.
    pub(crate) fn loads(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.loads
    }

    /// The one place for a registration compiling and checking a component.
    pub(crate) fn registering(&self) -> &tokio::sync::Semaphore {
        &self.registering
    }
}

/// The parts, for the test suite's white-box checks (table counts, injected faults, the
/// admission gauge): only with the `testing` feature, which no front end enables.
#[cfg(feature = "testing")]
impl Kiosk {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}
