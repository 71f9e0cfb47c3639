//! The runtime: one wasmtime `Engine` (pooling allocator, copy-on-write memory images,
//! epoch interruption driven by a ticker thread, optional fuel), components compiled
//! once per digest through the disk cache, an `InstancePre` per component, and a fresh
//! `Store` per call owned by one tenant.

mod app;
mod call;
mod classify;
mod engine;
mod invoke;
mod outbound;
mod outcome;
mod report;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::admission::{Admission, AdmissionSettings};
use crate::cache::{self, CacheOutcome, CompileCache};
use crate::egress::connect::{Resolve, SystemResolver};
use crate::egress::settings::EgressSettings;
use crate::egress::{AppEgress, Egress};
use crate::error::LoadError;
use crate::sandbox::HostState;
use crate::world;
use engine::{EpochTicker, engine_config};
use kiosk_domain::digest::Digest;
use kiosk_domain::effects::{CallCommitter, SeparateCommitter};
use kiosk_domain::kv::KvStore;
use kiosk_domain::limits::SandboxLimits;
use kiosk_domain::manifest::Manifest;
use kiosk_domain::metering::MeteringSink;

pub(crate) use app::Pre;
pub use app::{AppVersion, Installation, LoadedComponent};
pub use call::new_call_id;
pub use engine::EPOCH_TICK;
pub use outcome::{AppRefusal, CallOutcome, MAX_APP_CODE_BYTES, MAX_APP_TEXT_BYTES};
pub use report::{RefusedRecord, ReportedUsage, window_containing};

/// Where a call's effects go once it completes.
#[derive(Clone)]
pub struct Services {
    /// Loads an installation's key-value snapshot before a call.
    pub kv: Arc<dyn KvStore>,
    /// Keeps a completed call's key-value changes, usage and lines, in one write.
    pub commit: Arc<dyn CallCommitter>,
}

impl Services {
    /// Services over a key-value store and a metering sink committed one after the
    /// other (the command line and tests; the server commits through its ledger).
    pub fn separate(kv: Arc<dyn KvStore>, metering: Arc<dyn MeteringSink>) -> Self {
        Self { kv: kv.clone(), commit: Arc::new(SeparateCommitter { kv, metering }) }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Operator settings of the runtime.
#[derive(Clone, Default)]
pub struct RuntimeSettings {
    pub limits: SandboxLimits,
    /// Admission control (per-tenant concurrency and rate, slot wait).
    pub admission: AdmissionSettings,
    /// Directory of the compile cache; `None` compiles in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Outbound HTTP of 0.2.0 apps (`[egress]`).
    pub egress: EgressSettings,
    /// How outbound requests resolve names (`None`: the system's resolver).
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for RuntimeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeSettings")
            .field("limits", &self.limits)
            .field("admission", &self.admission)
            .field("cache_dir", &self.cache_dir)
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

/// The runtime.
pub struct Runtime {
    engine: Engine,
    /// `kiosk:app@0.1.0`: WASI p2 and Kiosk's imports (no network).
    linker: Linker<HostState>,
    /// `kiosk:app@0.2.0`: 0.1.0's imports plus `wasi:http` (through `egress`).
    linker_v2: Linker<HostState>,
    egress: Arc<Egress>,
    cache: Option<CompileCache>,
    limits: SandboxLimits,
    admission: Admission,
    services: Services,
    /// Set once by `shut_down`: running calls end, new ones are refused.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Set once by `drain`: new calls are refused, running ones go on.
    draining: std::sync::atomic::AtomicBool,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid sandbox limits: {0}")]
    Limits(String),
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl Runtime {
    /// Starts a runtime: engine, linker, compile cache and epoch ticker.
    pub fn new(settings: RuntimeSettings, services: Services) -> Result<Self, RuntimeError> {
        let limits = settings.limits;
        limits.validate().map_err(RuntimeError::Limits)?;
        settings.admission.validate().map_err(RuntimeError::Limits)?;
        let admission = Admission::new(settings.admission, limits.max_concurrent_instances);
        let engine = Engine::new(&engine_config(&limits)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        world::v1::App::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(engine_error)?;
        let mut linker_v2 = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker_v2).map_err(engine_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker_v2).map_err(engine_error)?;
        {
            use world::v2::kiosk::app::{key_value, log, metering};
            metering::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker_v2, |s| s).map_err(engine_error)?;
            key_value::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker_v2, |s| s).map_err(engine_error)?;
            log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker_v2, |s| s).map_err(engine_error)?;
        }
        let resolver = settings.resolver.clone().unwrap_or_else(|| Arc::new(SystemResolver));
        let egress = Arc::new(Egress::new(settings.egress.clone(), resolver).map_err(RuntimeError::Limits)?);
        // What the pooling allocator validates a component against when it is loaded.
        let pool = format!(
            "memory-mib={} table-elements={} tables={} memories={} instances={}",
            limits.memory_mib, limits.table_elements, limits.tables, limits.memories, limits.instances
        );
        let cache = settings.cache_dir.as_deref().map(|dir| CompileCache::open(dir, &engine, &pool)).transpose()?;
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            linker_v2,
            egress,
            cache,
            limits,
            admission,
            services,
            shutdown: tokio::sync::watch::Sender::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            _ticker: ticker,
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops the runtime: calls in flight end now with `ShuttingDown` (their effects
    /// dropped, as for any failed call) and new calls are refused, so a graceful server
    /// shutdown never waits for a guest's deadline.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Sandbox slots held by calls now.
    pub fn slots_in_use(&self) -> usize {
        (self.limits.max_concurrent_instances as usize).saturating_sub(self.admission.free_slots())
    }

    /// Stops taking calls (refused with `ShuttingDown`) while calls in flight run on to
    /// their end or deadline: the first step of a graceful stop (`shut_down` ends them).
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether `drain` or `shut_down` was called (the server is then not ready).
    pub fn is_shutting_down(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst) || *self.shutdown.borrow()
    }

    /// No call runs or waits for a sandbox slot (tenants' calls, reports and hooks alike).
    pub fn is_idle(&self) -> bool {
        self.slots_in_use() == 0 && self.admission.tenant_calls().running == 0
    }

    /// Admission control of this runtime's calls.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The services calls commit to.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Compiles (or loads from the disk cache) and links a component.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedComponent, LoadError> {
        let digest = Digest::of(wasm);
        let (component, outcome) = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, wasm, &digest)?,
            None => (cache::compile(&self.engine, wasm, &digest)?, CacheOutcome::Compiled),
        };
        let world = {
            let ty = component.component_type();
            let names: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
            world::world_of(names.iter().map(String::as_str))
        };
        let pre = self.link(&component, &digest, &world)?;
        Ok(LoadedComponent { digest, outcome, world, pre })
    }

    /// Drops the compiled artefact of `digest` from the disk cache (if there is one).
    pub fn forget_compiled(&self, digest: &Digest) {
        if let Some(cache) = &self.cache {
            cache.remove(digest);
        }
    }

    fn link(&self, component: &Component, digest: &Digest, version: &semver::Version) -> Result<Pre, LoadError> {
        let not_an_app = |e: wasmtime::Error| LoadError::NotAnApp {
            digest: digest.clone(),
            world: version.clone(),
            message: format!("{e:#}"),
        };
        if version.minor >= 2 {
            let pre = self.linker_v2.instantiate_pre(component).map_err(not_an_app)?;
            Ok(Pre::V2(world::v2::AppPre::new(pre).map_err(not_an_app)?))
        } else {
            // A 0.1.0 app that imports `wasi:http` fails here, the import named.
            let pre = self.linker.instantiate_pre(component).map_err(|e| {
                let mut refused = not_an_app(e);
                if let LoadError::NotAnApp { message, .. } = &mut refused
                    && message.contains("`wasi:http/")
                {
                    message.push_str(
                        " (kiosk:app@0.1.0 apps have no network: build against kiosk:app@0.2.0, hostApi >=0.2.0, \
                         to call out)",
                    );
                }
                refused
            })?;
            Ok(Pre::V1(world::v1::AppPre::new(pre).map_err(not_an_app)?))
        }
    }

    /// Binds a loaded component to its manifest, with the limits its calls will run under.
    pub fn prepare(&self, manifest: Manifest, component: Arc<LoadedComponent>) -> AppVersion {
        let limits = self.limits.for_app(&manifest.limits);
        let skus = Arc::new(manifest.sku_ids().map(str::to_string).collect());
        let guest_skus = Arc::new(manifest.skus.iter().filter(|s| !s.host_metered()).map(|s| s.id.clone()).collect());
        let egress = Arc::new(AppEgress::of(&manifest));
        AppVersion { manifest: Arc::new(manifest), component, limits, skus, guest_skus, egress }
    }
}
