//! The runtime: one wasmtime `Engine` (pooling allocator, copy-on-write memory images,
//! epoch interruption driven by a ticker thread, optional fuel), components compiled
//! once per digest through the disk cache, an `InstancePre` per component, and a fresh
//! `Store` per call owned by one tenant.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::cache::{self, CacheOutcome, CompileCache};
use crate::digest::Digest;
use crate::error::{CallErrorKind, CallFailure, CallSite, LoadError};
use crate::kv::{KvScope, KvSession, KvStore};
use crate::limits::{CallLimits, SandboxLimits};
use crate::logs::{Level, LogLine, LogStore};
use crate::manifest::Manifest;
use crate::metering::{MeteringSink, UsageEvent, UsageSource, now_ms};
use crate::sandbox::{Attribution, HostState, LimitHit};
use crate::world::{self, App, AppPre, CallContext, UsageWindow};

/// How often the ticker advances the engine's epoch. Calls time out within one tick
/// (plus scheduling) of their limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

const MIB: u64 = 1024 * 1024;

/// Where a call's effects go once it completes.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub logs: Arc<LogStore>,
    pub metering: Arc<dyn MeteringSink>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Operator settings of the runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    pub limits: SandboxLimits,
    /// Directory of the compile cache; `None` compiles in memory only.
    pub cache_dir: Option<PathBuf>,
}

/// A component compiled and linked, ready to instantiate.
pub struct LoadedComponent {
    pub digest: Digest,
    /// Whether it came from the disk cache.
    pub outcome: CacheOutcome,
    pre: AppPre<HostState>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.digest)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// One app version ready to run: its manifest, component and effective limits.
#[derive(Debug, Clone)]
pub struct AppVersion {
    pub manifest: Arc<Manifest>,
    pub component: Arc<LoadedComponent>,
    pub limits: CallLimits,
    skus: Arc<HashSet<String>>,
}

/// One tenant's installation of an app: the unit of isolation for state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Installation {
    pub tenant: String,
    pub id: String,
}

impl Installation {
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), id: id.into() }
    }

    /// The key-value and log scope of this installation.
    pub fn scope(&self) -> KvScope {
        KvScope { tenant: self.tenant.clone(), installation: self.id.clone() }
    }
}

/// The app's refusal (WIT `app-error`), as the tenant will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("the app refused: {message} ({code})")]
pub struct AppRefusal {
    pub code: String,
    pub message: String,
}

impl From<world::AppError> for AppRefusal {
    fn from(e: world::AppError) -> Self {
        Self { code: e.code, message: e.message }
    }
}

/// A call that completed: the app's answer (which may be a refusal), and the usage and
/// log lines it produced (already committed and stored).
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub result: Result<T, AppRefusal>,
    pub usage: Vec<UsageEvent>,
    pub logs: Vec<LogLine>,
}

/// What `usage.report` returned, split into accepted events and refused records.
#[derive(Debug, Clone, Default)]
pub struct ReportedUsage {
    pub accepted: Vec<UsageEvent>,
    pub refused: Vec<RefusedRecord>,
}

/// A reported usage record the host refused, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedRecord {
    pub sku: String,
    pub quantity: u64,
    pub idempotency_key: String,
    pub reason: String,
}

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
#[derive(Debug)]
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("kiosk-epoch".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    limits: SandboxLimits,
    services: Services,
    call_prefix: String,
    call_seq: AtomicU64,
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
        let engine = Engine::new(&engine_config(&limits)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        App::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = settings.cache_dir.as_deref().map(|dir| CompileCache::open(dir, &engine)).transpose()?;
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            cache,
            limits,
            services,
            call_prefix: uuid::Uuid::new_v4().simple().to_string(),
            call_seq: AtomicU64::new(0),
            _ticker: ticker,
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
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
        let pre = self.link(&component, &digest)?;
        Ok(LoadedComponent { digest, outcome, pre })
    }

    fn link(&self, component: &Component, digest: &Digest) -> Result<AppPre<HostState>, LoadError> {
        let not_an_app = |e: wasmtime::Error| LoadError::NotAnApp {
            digest: digest.clone(),
            world: world::HOST_API_VERSION,
            message: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(component).map_err(not_an_app)?;
        AppPre::new(pre).map_err(not_an_app)
    }

    /// Binds a loaded component to its manifest, with the limits its calls will run under.
    pub fn prepare(&self, manifest: Manifest, component: Arc<LoadedComponent>) -> AppVersion {
        let limits = self.limits.for_app(&manifest.limits);
        let skus = Arc::new(manifest.sku_ids().map(str::to_string).collect());
        AppVersion { manifest: Arc::new(manifest), component, limits, skus }
    }

    /// `lifecycle.validate-config`.
    pub fn validate_config(
        &self,
        app: &AppVersion,
        inst: &Installation,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, "lifecycle.validate-config", config.len(), |a, s, c| {
            a.kiosk_app_lifecycle().call_validate_config(s, c, config)
        })
    }

    /// `lifecycle.install`.
    pub fn install(&self, app: &AppVersion, inst: &Installation, config: &str) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, "lifecycle.install", config.len(), |a, s, c| {
            a.kiosk_app_lifecycle().call_install(s, c, config)
        })
    }

    /// `lifecycle.configure`.
    pub fn configure(
        &self,
        app: &AppVersion,
        inst: &Installation,
        old: &str,
        new: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, "lifecycle.configure", old.len() + new.len(), |a, s, c| {
            a.kiosk_app_lifecycle().call_configure(s, c, old, new)
        })
    }

    /// `lifecycle.upgrade`, called on the new version.
    pub fn upgrade(
        &self,
        app: &AppVersion,
        inst: &Installation,
        from: &str,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, "lifecycle.upgrade", config.len(), |a, s, c| {
            a.kiosk_app_lifecycle().call_upgrade(s, c, from, config)
        })
    }

    /// `lifecycle.uninstall`; on success the installation's key-value data and logs are purged.
    pub fn uninstall(&self, app: &AppVersion, inst: &Installation) -> Result<CallOutcome<()>, CallFailure> {
        let outcome =
            self.call(app, inst, "lifecycle.uninstall", 0, |a, s, c| a.kiosk_app_lifecycle().call_uninstall(s, c))?;
        if outcome.result.is_ok() {
            let scope = inst.scope();
            self.services
                .kv
                .purge(&scope)
                .map_err(|e| self.failure(app, inst, "lifecycle.uninstall", CallErrorKind::Storage(e.to_string())))?;
            self.services.logs.purge(&scope);
        }
        Ok(outcome)
    }

    /// `calls.invoke`. A successful call meters one unit of every SKU listing `operation`.
    pub fn invoke(
        &self,
        app: &AppVersion,
        inst: &Installation,
        operation: &str,
        input: &str,
    ) -> Result<CallOutcome<String>, CallFailure> {
        let max_output = app.limits.max_output_bytes;
        self.call(app, inst, "calls.invoke", operation.len() + input.len(), |a, s, c| {
            let result = a.kiosk_app_calls().call_invoke(&mut *s, c, operation, input)?;
            if let Ok(output) = &result {
                if output.len() as u64 > max_output {
                    return Err(wasmtime::Error::new(CallErrorKind::OutputTooLarge {
                        size: output.len() as u64,
                        limit: max_output,
                    }));
                }
                let host_metered = app.manifest.skus_for_operation(operation).map(|sku| UsageEvent {
                    tenant: c.tenant_id.clone(),
                    installation: c.installation_id.clone(),
                    app: c.app_id.clone(),
                    version: c.app_version.clone(),
                    sku: sku.id.clone(),
                    quantity: 1,
                    at_ms: now_ms(),
                    source: UsageSource::Host,
                    idempotency_key: format!("{}/host/{}", s.data().who.call_id, sku.id),
                });
                let events: Vec<_> = host_metered.collect();
                s.data_mut().usage.extend(events);
            }
            Ok(result)
        })
    }

    /// `usage.report` for `window`. Records with an undeclared SKU or zero quantity are
    /// refused (and listed); the rest are submitted to the metering sink.
    pub fn report(
        &self,
        app: &AppVersion,
        inst: &Installation,
        window: UsageWindow,
    ) -> Result<CallOutcome<ReportedUsage>, CallFailure> {
        self.call(app, inst, "usage.report", 0, |a, s, c| {
            let records = match a.kiosk_app_usage().call_report(&mut *s, c, window)? {
                Ok(records) => records,
                Err(e) => return Ok(Err(e)),
            };
            let mut reported = ReportedUsage::default();
            for r in records {
                let reason = if !app.skus.contains(&r.sku) {
                    Some(format!("SKU {:?} is not declared by {}@{}", r.sku, c.app_id, c.app_version))
                } else if r.quantity == 0 {
                    Some("quantity must be positive".to_string())
                } else if r.idempotency_key.is_empty() {
                    Some("idempotency key must not be empty".to_string())
                } else {
                    None
                };
                match reason {
                    Some(reason) => reported.refused.push(RefusedRecord {
                        sku: r.sku,
                        quantity: r.quantity,
                        idempotency_key: r.idempotency_key,
                        reason,
                    }),
                    None => reported.accepted.push(UsageEvent {
                        tenant: c.tenant_id.clone(),
                        installation: c.installation_id.clone(),
                        app: c.app_id.clone(),
                        version: c.app_version.clone(),
                        sku: r.sku,
                        quantity: r.quantity,
                        at_ms: window.start_ms,
                        source: UsageSource::Report,
                        idempotency_key: format!("{}/report/{}", c.installation_id, r.idempotency_key),
                    }),
                }
            }
            s.data_mut().usage.extend(reported.accepted.iter().cloned());
            Ok(Ok(reported))
        })
    }

    fn failure(&self, app: &AppVersion, inst: &Installation, export: &'static str, kind: CallErrorKind) -> CallFailure {
        CallFailure {
            call: Box::new(CallSite {
                tenant: inst.tenant.clone(),
                installation: inst.id.clone(),
                app: app.manifest.app.clone(),
                version: app.manifest.version.to_string(),
                digest: app.component.digest.clone(),
                export,
            }),
            kind,
        }
    }

    /// Runs one export in a fresh Store and, if it completed, commits its key-value
    /// changes, usage and logs (in that order; the Store is gone by then).
    fn call<T>(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: &'static str,
        input_len: usize,
        f: impl FnOnce(&App, &mut Store<HostState>, &CallContext) -> wasmtime::Result<Result<T, world::AppError>>,
    ) -> Result<CallOutcome<T>, CallFailure> {
        let limits = &app.limits;
        if input_len as u64 > limits.max_input_bytes {
            return Err(self.failure(
                app,
                inst,
                export,
                CallErrorKind::InputTooLarge { size: input_len as u64, limit: limits.max_input_bytes },
            ));
        }
        let scope = inst.scope();
        let kv = if app.manifest.capabilities.key_value {
            let snapshot = self
                .services
                .kv
                .load(&scope)
                .map_err(|e| self.failure(app, inst, export, CallErrorKind::Storage(e.to_string())))?;
            Some(KvSession::new(snapshot, limits.kv_quota_bytes, limits.kv_max_key_bytes))
        } else {
            None
        };
        let who = Arc::new(Attribution {
            tenant: inst.tenant.clone(),
            installation: inst.id.clone(),
            app: app.manifest.app.clone(),
            version: app.manifest.version.to_string(),
            call_id: format!("{}-{}", self.call_prefix, self.call_seq.fetch_add(1, Ordering::Relaxed)),
        });
        let ctx = CallContext {
            tenant_id: who.tenant.clone(),
            installation_id: who.installation.clone(),
            app_id: who.app.clone(),
            app_version: who.version.clone(),
        };

        let (result, mut state) = {
            let mut store = Store::new(&self.engine, HostState::new(limits, who, app.skus.clone(), kv));
            store.limiter(|s| &mut s.limiter);
            store.set_epoch_deadline(limits.timeout_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1);
            store.epoch_deadline_trap();
            if let Some(fuel) = limits.fuel {
                // Fuel is enabled in the engine whenever the operator sets a budget.
                let _ = store.set_fuel(fuel);
            }
            let result = match app.component.pre.instantiate(&mut store) {
                Ok(instance) => {
                    f(&instance, &mut store, &ctx).map_err(|e| self.classify(e, store.data().limiter.hit, limits))
                }
                Err(e) => Err(match self.classify(e, store.data().limiter.hit, limits) {
                    CallErrorKind::Trap { message } => CallErrorKind::Instantiate { message },
                    other => other,
                }),
            };
            (result, store.into_data())
        };
        state.collect_stderr();

        match result {
            Ok(result) => {
                if let Some(session) = state.kv.take() {
                    let changes = session.into_changes();
                    if !changes.is_empty() {
                        self.services
                            .kv
                            .commit(&scope, changes, limits.kv_quota_bytes)
                            .map_err(|e| self.failure(app, inst, export, CallErrorKind::Storage(e.to_string())))?;
                    }
                }
                if !state.usage.is_empty() {
                    self.services
                        .metering
                        .submit(&state.usage)
                        .map_err(|e| self.failure(app, inst, export, CallErrorKind::Metering(e.to_string())))?;
                }
                self.services.logs.append(&scope, state.logs.clone());
                Ok(CallOutcome { result: result.map_err(AppRefusal::from), usage: state.usage, logs: state.logs })
            }
            Err(kind) => {
                let mut lines = state.logs;
                lines.push(LogLine {
                    at_ms: now_ms(),
                    level: Level::Error,
                    message: format!("kiosk: {export} failed: {kind}"),
                });
                self.services.logs.append(&scope, lines);
                Err(self.failure(app, inst, export, kind))
            }
        }
    }

    /// Names the limit or cause behind a failed call.
    fn classify(&self, err: wasmtime::Error, hit: Option<LimitHit>, limits: &CallLimits) -> CallErrorKind {
        if let Some(kind) = err.downcast_ref::<CallErrorKind>() {
            return kind.clone();
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                return CallErrorKind::Timeout { limit_ms: limits.timeout_ms };
            }
            Some(Trap::OutOfFuel) => {
                return CallErrorKind::FuelExhausted { fuel: limits.fuel.unwrap_or(0) };
            }
            Some(Trap::StackOverflow) => {
                return CallErrorKind::StackOverflow { limit_kib: self.limits.max_wasm_stack_kib };
            }
            _ => {}
        }
        match hit {
            Some(LimitHit::Log) => CallErrorKind::LogLimit { limit_bytes: limits.max_log_bytes_per_call },
            Some(LimitHit::Memory) => CallErrorKind::MemoryLimit { limit_bytes: limits.memory_bytes },
            Some(LimitHit::Table) => CallErrorKind::TableLimit { limit_elements: limits.table_elements },
            None => CallErrorKind::Trap {
                message: match err.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => format!("{err:#}"),
                },
            },
        }
    }
}

fn engine_config(limits: &SandboxLimits) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel.is_some());
    config.max_wasm_stack((limits.max_wasm_stack_kib * 1024) as usize);
    config.memory_init_cow(true);
    let slots = limits.max_concurrent_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * limits.instances)
        .total_memories(slots * limits.memories)
        .total_tables(slots * limits.tables)
        .max_core_instances_per_component(limits.instances)
        .max_memories_per_component(limits.memories)
        .max_tables_per_component(limits.tables)
        .max_memory_size((limits.memory_mib * MIB) as usize)
        .table_elements(limits.table_elements as usize);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The usage window `[start, start + len)` containing `at_ms`, aligned to `len`.
pub fn window_containing(at_ms: u64, len: Duration) -> UsageWindow {
    let len = len.as_millis() as u64;
    let start = at_ms - at_ms % len;
    UsageWindow { start_ms: start, end_ms: start + len }
}
