//! The runtime: one wasmtime `Engine` (pooling allocator, copy-on-write memory images,
//! epoch interruption driven by a ticker thread, optional fuel), components compiled
//! once per digest through the disk cache, an `InstancePre` per component, and a fresh
//! `Store` per call owned by one tenant.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline};

use crate::admission::{Admission, AdmissionSettings, Origin};
use crate::cache::{self, CacheOutcome, CompileCache};
use crate::egress::connect::{Resolve, SystemResolver};
use crate::egress::settings::EgressSettings;
use crate::egress::{AppEgress, CallEgress, Egress, EgressRecord, InstallationEgress};
use crate::error::{CallErrorKind, CallFailure, CallSite, LoadError};
use crate::exports::{Answer, Export, RunError};
use crate::kv_session::KvSession;
use crate::logs::{self, Level, LogLine};
use crate::sandbox::{Attribution, HostState, LimitHit, StderrLimitExceeded};
use crate::world::{self, CallContext, UsageWindow};
use kiosk_domain::digest::Digest;
use kiosk_domain::effects::{CallCommitter, CallEffects, CallLines, CommitError, KvWrite, LogEntry, SeparateCommitter};
use kiosk_domain::kv::{KvScope, KvStore};
use kiosk_domain::limits::{CallLimits, SandboxLimits};
use kiosk_domain::manifest::Manifest;
use kiosk_domain::metering::{MAX_QUANTITY, MeteringSink, SinkOutcome, UsageEvent, UsageSource, now_ms};

/// How often the ticker advances the engine's epoch. Calls time out within one tick
/// (plus scheduling) of their limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

const MIB: u64 = 1024 * 1024;

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

/// A component compiled and linked, ready to instantiate.
pub struct LoadedComponent {
    pub digest: Digest,
    /// Whether it came from the disk cache.
    pub outcome: CacheOutcome,
    /// The `kiosk:app` world version it was built against (read from its imports).
    pub world: semver::Version,
    pre: Pre,
}

/// A component linked against its world version.
pub(crate) enum Pre {
    V1(world::v1::AppPre<HostState>),
    V2(world::v2::AppPre<HostState>),
}

impl LoadedComponent {
    pub(crate) fn pre(&self) -> &Pre {
        &self.pre
    }

    /// Whether the app may use outbound HTTP and receives placeholders for secrets.
    pub fn has_egress(&self) -> bool {
        matches!(self.pre, Pre::V2(_))
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.digest)
            .field("outcome", &self.outcome)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

/// One app version ready to run: its manifest, component and effective limits.
#[derive(Debug, Clone)]
pub struct AppVersion {
    pub manifest: Arc<Manifest>,
    pub component: Arc<LoadedComponent>,
    pub limits: CallLimits,
    /// Every SKU the version declares.
    pub(crate) skus: Arc<HashSet<String>>,
    /// The SKUs the guest may meter (neither per operation nor on outbound traffic:
    /// host-metered SKUs are the host's alone, so a guest cannot bill them twice).
    pub(crate) guest_skus: Arc<HashSet<String>>,
    /// What the manifest declares it may reach (0.2.0 apps).
    pub egress: Arc<AppEgress>,
}

impl AppVersion {
    /// This version with the limits one installation's calls run under (the core
    /// computes them per call from the operator's layers; they never exceed the
    /// engine's ceilings, which the pooling allocator enforces anyway).
    pub fn with_limits(&self, limits: CallLimits) -> AppVersion {
        AppVersion { limits, ..self.clone() }
    }
}

/// One tenant's installation of an app: the unit of isolation for state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Installation {
    pub tenant: String,
    pub id: String,
    /// The id the next call of this value runs under (`with_call_id`; the core names
    /// every call). Without one, each call gets a fresh UUID.
    pub call_id: Option<String>,
    /// Where a completed call's lines go: with its effects, in one write, into the
    /// installation's log under this operation name (`with_log`). `None`: they are only
    /// handed back (the installation is not recorded yet, or there is no such log).
    pub log_as: Option<String>,
    /// The tenant's layer of outbound HTTP for this installation (0.2.0 apps): its
    /// switch, its configured URLs and the secrets bound requests may carry. `None`:
    /// no outbound request is let through.
    pub egress: Option<Arc<InstallationEgress>>,
}

impl Installation {
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), id: id.into(), call_id: None, log_as: None, egress: None }
    }

    /// The same installation, its outbound requests under `egress`.
    pub fn with_egress(mut self, egress: Arc<InstallationEgress>) -> Self {
        self.egress = Some(egress);
        self
    }

    /// The same installation, a completed call's lines kept with its effects as lines
    /// of `operation` (already capped by the caller).
    pub fn with_log(mut self, operation: impl Into<String>) -> Self {
        self.log_as = Some(operation.into());
        self
    }

    /// The same installation, its calls running under `call_id` (it also keys the
    /// call's metered usage, so one id must name one call).
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = Some(call_id.into());
        self
    }

    /// The key-value and log scope of this installation.
    pub fn scope(&self) -> KvScope {
        KvScope { tenant: self.tenant.clone(), installation: self.id.clone() }
    }
}

/// Longest app-error message (and trap text) shown anywhere, bytes.
pub const MAX_APP_TEXT_BYTES: usize = 4 * 1024;
/// Longest app-error code, bytes.
pub const MAX_APP_CODE_BYTES: usize = 128;

/// The app's refusal (WIT `app-error`), as the tenant will see it: capped and stripped
/// of control and bidi-override characters (guest text is hostile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("the app refused: {message} ({code})")]
pub struct AppRefusal {
    pub code: String,
    pub message: String,
}

impl From<world::AppError> for AppRefusal {
    fn from(e: world::AppError) -> Self {
        Self {
            code: logs::sanitize_capped(&e.code, MAX_APP_CODE_BYTES),
            message: logs::sanitize_capped(&e.message, MAX_APP_TEXT_BYTES),
        }
    }
}

/// A call that completed: the app's answer (which may be a refusal), the usage it
/// metered (already committed) and the log lines it wrote (the caller keeps them).
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub call_id: String,
    pub result: Result<T, AppRefusal>,
    pub usage: Vec<UsageEvent>,
    pub logs: Vec<LogLine>,
    /// The lines were committed with the call's effects (`Installation::with_log`).
    pub logs_kept: bool,
}

/// What `usage.report` returned, split into accepted events and refused records.
#[derive(Debug, Clone, Default)]
pub struct ReportedUsage {
    pub accepted: Vec<UsageEvent>,
    pub refused: Vec<RefusedRecord>,
    /// The sink's verdict per accepted event, before `report` sorts them.
    pub(crate) verdicts: Vec<SinkOutcome>,
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

    /// Whether `shut_down` was called (the server is then not ready).
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
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

    /// `lifecycle.validate-config`.
    pub async fn validate_config(
        &self,
        app: &AppVersion,
        inst: &Installation,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::ValidateConfig(config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// Instantiates `app` under its limits in a fresh Store and calls nothing: fails
    /// with the limit named when the version cannot run under them (a memory or table
    /// its component declares beyond them, a start function that traps or overruns).
    /// Nothing is committed (no key-value session, and usage a start function recorded
    /// is dropped) and no call metric is recorded. Registration runs it once per
    /// version; `inst` names who asked.
    pub async fn check_instantiates(&self, app: &AppVersion, inst: &Installation) -> Result<(), CallFailure> {
        self.call(app, inst, Export::Instantiate, Origin::Host).await.map(drop)
    }

    /// `lifecycle.install`.
    pub async fn install(
        &self,
        app: &AppVersion,
        inst: &Installation,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Install(config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.configure`.
    pub async fn configure(
        &self,
        app: &AppVersion,
        inst: &Installation,
        old: &str,
        new: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Configure(old, new), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.upgrade`, called on the new version.
    pub async fn upgrade(
        &self,
        app: &AppVersion,
        inst: &Installation,
        from: &str,
        config: &str,
    ) -> Result<CallOutcome<()>, CallFailure> {
        self.call(app, inst, Export::Upgrade(from, config), Origin::Tenant).await.map(CallOutcome::done)
    }

    /// `lifecycle.uninstall`; on success the installation's key-value data is purged.
    pub async fn uninstall(&self, app: &AppVersion, inst: &Installation) -> Result<CallOutcome<()>, CallFailure> {
        let outcome = self.call(app, inst, Export::Uninstall, Origin::Tenant).await.map(CallOutcome::done)?;
        if outcome.result.is_ok() {
            let scope = inst.scope();
            self.services
                .kv
                .purge(&scope)
                .await
                .map_err(|e| self.failure(app, inst, "lifecycle.uninstall", CallErrorKind::Storage(e.to_string())))?;
        }
        Ok(outcome)
    }

    /// `calls.invoke`. A successful call meters one unit of every SKU listing `operation`.
    pub async fn invoke(
        &self,
        app: &AppVersion,
        inst: &Installation,
        operation: &str,
        input: &str,
    ) -> Result<CallOutcome<String>, CallFailure> {
        let outcome = self.call(app, inst, Export::Invoke(operation, input), Origin::Tenant).await?;
        Ok(CallOutcome {
            call_id: outcome.call_id,
            result: outcome.result.map(|answer| match answer {
                Answer::Output(output) => output,
                _ => String::new(),
            }),
            usage: outcome.usage,
            logs: outcome.logs,
            logs_kept: outcome.logs_kept,
        })
    }

    /// `usage.report` for `window`, called by the host (collection): every record is
    /// judged before anything is submitted (declared, guest-metered SKU; quantity
    /// 1..=2^53-1; key 1-200 bytes without NUL; at most `max-usage-events-per-call`
    /// records, else the whole report fails with a named limit); refused records come
    /// back with their reasons, and so do records the ledger refuses (a key recorded
    /// before with another quantity). Only accepted records count.
    pub async fn report(
        &self,
        app: &AppVersion,
        inst: &Installation,
        window: UsageWindow,
    ) -> Result<CallOutcome<ReportedUsage>, CallFailure> {
        let outcome = self.call(app, inst, Export::Report(window), Origin::Host).await?;
        let mut usage = outcome.usage;
        let result = match outcome.result {
            Ok(Answer::Reported(mut reported)) => {
                // The ledger's verdicts on the accepted records (already committed by `call`).
                let verdicts = std::mem::take(&mut reported.verdicts);
                let mut accepted = Vec::with_capacity(reported.accepted.len());
                for (event, verdict) in reported.accepted.drain(..).zip(verdicts) {
                    match verdict {
                        SinkOutcome::Stored | SinkOutcome::Duplicate => accepted.push(event),
                        SinkOutcome::Refused(reason) => reported.refused.push(RefusedRecord {
                            sku: event.sku.clone(),
                            quantity: event.quantity,
                            idempotency_key: event
                                .idempotency_key
                                .strip_prefix(&format!("{}/report/", inst.id))
                                .unwrap_or(&event.idempotency_key)
                                .to_string(),
                            reason,
                        }),
                    }
                }
                // What the call metered, less the report records the sink refused (keys are
                // unique within a call: `judge_report` refuses repeats).
                let refused: HashSet<String> =
                    reported.refused.iter().map(|r| format!("{}/report/{}", inst.id, r.idempotency_key)).collect();
                usage.retain(|u| u.source != UsageSource::Report || !refused.contains(&u.idempotency_key));
                reported.accepted = accepted;
                Ok(reported)
            }
            Ok(_) => Ok(ReportedUsage::default()),
            Err(refusal) => Err(refusal),
        };
        Ok(CallOutcome { call_id: outcome.call_id, result, usage, logs: outcome.logs, logs_kept: outcome.logs_kept })
    }

    /// A call that stopped before the guest ran (no log lines).
    fn failure(&self, app: &AppVersion, inst: &Installation, export: &'static str, kind: CallErrorKind) -> CallFailure {
        self.failure_of(app, inst, export, kind, &call_id_of(inst), None)
    }

    fn failure_of(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: &'static str,
        kind: CallErrorKind,
        call_id: &str,
        logs: Option<Vec<LogLine>>,
    ) -> CallFailure {
        CallFailure {
            call: Box::new(CallSite {
                tenant: inst.tenant.clone(),
                installation: inst.id.clone(),
                app: app.manifest.app.clone(),
                version: app.manifest.version.to_string(),
                digest: app.component.digest.clone(),
                export,
                call_id: call_id.to_string(),
            }),
            kind,
            logs,
        }
    }

    /// Runs one export in a fresh Store under its wall-time deadline and, if it
    /// completed, commits its key-value changes, usage and logs (in that order; the
    /// Store is gone by then).
    ///
    /// The deadline holds whatever the guest does: wasm that computes is interrupted at
    /// an epoch tick after the deadline (and yields to the executor every tick before
    /// it), and a guest waiting in a host call (a WASI sleep or poll) is a pending
    /// future that is dropped at the deadline, freeing its sandbox slot at once.
    async fn call(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: Export<'_>,
        origin: Origin,
    ) -> Result<CallOutcome<Answer>, CallFailure> {
        let started = std::time::Instant::now();
        let result = self.call_once(app, inst, export, origin).await;
        if matches!(export, Export::Instantiate) {
            // Registration's check: its app id may never reach the catalog, so it is kept
            // out of the labels (which stay bounded by the catalog's apps).
            return result;
        }
        // Labels are bounded: the app id comes from the catalog, the export is one of
        // seven, the outcome and limit names are Kiosk's (never an operation name).
        let outcome = match &result {
            Ok(done) if done.result.is_ok() => "ok",
            Ok(_) => "app-error",
            Err(failure) => failure.kind.outcome(),
        };
        let labels =
            [("app", app.manifest.app.clone()), ("operation", export.name().to_string()), ("outcome", outcome.into())];
        metrics::counter!("kiosk_calls_total", &labels).increment(1);
        metrics::histogram!("kiosk_call_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            if let Some(limit) = failure.kind.limit() {
                metrics::counter!("kiosk_limit_hits_total", "limit" => limit).increment(1);
            }
            if let CallErrorKind::Busy(refusal) = &failure.kind {
                let reason = match refusal {
                    crate::admission::Refusal::TenantConcurrency { .. } => "tenant-concurrency",
                    crate::admission::Refusal::TenantRate { .. } => "tenant-rate",
                    crate::admission::Refusal::NoSlot { .. } => "no-slot",
                };
                metrics::counter!("kiosk_admission_rejections_total", "reason" => reason).increment(1);
            }
        }
        result
    }

    /// `call`, without its measurements.
    async fn call_once(
        &self,
        app: &AppVersion,
        inst: &Installation,
        export: Export<'_>,
        origin: Origin,
    ) -> Result<CallOutcome<Answer>, CallFailure> {
        let name = export.name();
        let limits = &app.limits;
        let input_len = export.input_len() as u64;
        if input_len > limits.max_input_bytes {
            return Err(self.failure(
                app,
                inst,
                name,
                CallErrorKind::InputTooLarge { size: input_len, limit: limits.max_input_bytes },
            ));
        }
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return Err(self.failure(app, inst, name, CallErrorKind::ShuttingDown));
        }
        let _permit = self
            .admission
            .admit(&inst.tenant, origin)
            .await
            .map_err(|r| self.failure(app, inst, name, CallErrorKind::Busy(r)))?;
        let scope = inst.scope();
        let kv = if app.manifest.capabilities.key_value && !matches!(export, Export::Instantiate) {
            let snapshot = self
                .services
                .kv
                .load(&scope)
                .await
                .map_err(|e| self.failure(app, inst, name, CallErrorKind::Storage(e.to_string())))?;
            Some(KvSession::new(snapshot, limits.kv_quota_bytes, limits.kv_max_key_bytes))
        } else {
            None
        };
        let who = Arc::new(Attribution {
            tenant: inst.tenant.clone(),
            installation: inst.id.clone(),
            app: app.manifest.app.clone(),
            version: app.manifest.version.to_string(),
            call_id: call_id_of(inst),
        });
        let call_id = who.call_id.clone();
        let ctx = CallContext {
            tenant_id: who.tenant.clone(),
            installation_id: who.installation.clone(),
            app_id: who.app.clone(),
            app_version: who.version.clone(),
        };

        let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.timeout_ms);
        let gate = self.call_egress(app, inst, deadline);
        let egress_record = gate.as_ref().map(CallEgress::record);
        let (result, mut state) = {
            let host = HostState::new(limits, who, app.guest_skus.clone(), kv, gate);
            let mut store = Store::new(&self.engine, host);
            store.limiter(|s| &mut s.limiter);
            store.set_hostcall_fuel(usize::try_from(limits.max_host_copy_bytes).unwrap_or(usize::MAX));
            store.set_max_component_handles(limits.max_handles as usize);
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                Ok(if tokio::time::Instant::now() >= deadline {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Yield(1)
                })
            });
            if let Some(fuel) = limits.fuel {
                // Fuel is enabled in the engine whenever the operator sets a budget.
                let _ = store.set_fuel(fuel);
            }
            let run = tokio::time::timeout_at(deadline, crate::exports::run(app, &mut store, &ctx, export));
            let stopped = async {
                // Resolves once the runtime shuts down (never, if the sender is gone).
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let outcome = tokio::select! {
                outcome = run => Some(outcome),
                () = stopped => None,
            };
            let result = match outcome {
                None => Err(CallErrorKind::ShuttingDown),
                Some(Ok(Ok(answer))) => Ok(answer),
                Some(Ok(Err(RunError { instantiating, error }))) => Err(match self.classify(error, &store, limits) {
                    CallErrorKind::Trap { message } if instantiating => CallErrorKind::Instantiate { message },
                    other => other,
                }),
                // The guest was waiting in a host call (or between ticks) at its deadline:
                // its future is dropped here, and the Store with it below.
                Some(Err(_elapsed)) => Err(CallErrorKind::Timeout { limit_ms: limits.timeout_ms }),
            };
            (result, store.into_data())
        };
        state.collect_stderr();
        if let Some(record) = egress_record {
            // Responses still held by the guest end with its resources: their lines are
            // written as they drop, then the call's requests are taken in one piece.
            drop(std::mem::take(&mut state.table));
            state.egress = None;
            let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
            self.take_egress(app, &call_id, &mut state, record);
        }

        match result {
            Ok(answer) => {
                let lines = inst.log_as.as_ref().map(|operation| CallLines {
                    call_id: call_id.clone(),
                    operation: operation.clone(),
                    lines: state
                        .logs
                        .iter()
                        .map(|l| LogEntry { at_ms: l.at_ms, level: l.level.as_str(), message: l.message.clone() })
                        .collect(),
                });
                let logs_kept = lines.is_some();
                if matches!(export, Export::Instantiate) {
                    // A start function may have called `record-usage` while instantiating:
                    // a registration check keeps nothing, so nothing is committed.
                    return Ok(CallOutcome {
                        call_id,
                        result: answer.map_err(AppRefusal::from),
                        usage: Vec::new(),
                        logs: state.logs,
                        logs_kept: false,
                    });
                }
                let effects = CallEffects {
                    scope,
                    kv: state
                        .kv
                        .take()
                        .map(|session| KvWrite { changes: session.into_changes(), quota: limits.kv_quota_bytes }),
                    usage: std::mem::take(&mut state.usage),
                    lines,
                };
                let mut answer = answer;
                if !effects.is_empty() {
                    let usage = effects.usage.clone();
                    let verdicts = self.services.commit.commit(effects).await.map_err(|e| {
                        let kind = match e {
                            CommitError::Kv(e) => CallErrorKind::Storage(e.to_string()),
                            CommitError::Unavailable(message) => CallErrorKind::Storage(message),
                            CommitError::Metering(message) => {
                                CallErrorKind::Metering(format!("metering sink failed: {message}"))
                            }
                        };
                        self.failure_of(app, inst, name, kind, &call_id, Some(state.logs.clone()))
                    })?;
                    state.usage = usage;
                    let mut verdicts = verdicts;
                    // A report's accepted records come last (after any `record-usage` the
                    // guest made during the call); their verdicts go back to `report`.
                    if let Ok(Answer::Reported(reported)) = &mut answer {
                        let first = verdicts.len().saturating_sub(reported.accepted.len());
                        reported.verdicts = verdicts.split_off(first);
                    }
                    if let Some(SinkOutcome::Refused(reason)) =
                        verdicts.into_iter().find(|v| matches!(v, SinkOutcome::Refused(_)))
                    {
                        // Host and guest keys are unique per call: a refusal here is a bug.
                        let kind = CallErrorKind::Metering(reason);
                        return Err(self.failure_of(app, inst, name, kind, &call_id, Some(state.logs)));
                    }
                }
                Ok(CallOutcome {
                    call_id,
                    result: answer.map_err(AppRefusal::from),
                    usage: state.usage,
                    logs: state.logs,
                    logs_kept,
                })
            }
            Err(kind) => {
                // The guest ran: its lines are kept, with a last one naming the failure in
                // the words of the failure itself (what the caller's problem says).
                let mut lines = state.logs;
                lines.push(LogLine { at_ms: now_ms(), level: Level::Error, message: format!("call failed: {kind}") });
                Err(self.failure_of(app, inst, name, kind, &call_id, Some(lines)))
            }
        }
    }

    /// The gate of a call's outbound requests, for a 0.2.0 app.
    fn call_egress(&self, app: &AppVersion, inst: &Installation, deadline: tokio::time::Instant) -> Option<CallEgress> {
        if !app.component.has_egress() {
            return None;
        }
        let partner = app.manifest.app.split_once('/').map_or("", |(p, _)| p).to_string();
        Some(CallEgress {
            egress: self.egress.clone(),
            app: app.egress.clone(),
            app_id: app.manifest.app.clone(),
            partner,
            tenant: inst.tenant.clone(),
            // No layer from the core (a registration probe, a test): nothing goes out.
            installation: inst.egress.clone().unwrap_or_default(),
            deadline,
            requests: 0,
            refusals: 0,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                self.egress.settings().max_concurrent_requests_per_call as usize,
            )),
            record: Arc::default(),
        })
    }

    /// A call's outbound requests into its lines and its host-metered egress usage.
    fn take_egress(&self, app: &AppVersion, call_id: &str, state: &mut HostState, record: EgressRecord) {
        state.logs.extend(record.lines.iter().cloned());
        if record.unlogged_refusals > 0 {
            state.logs.push(LogLine {
                at_ms: now_ms(),
                level: Level::Warn,
                message: format!(
                    "kiosk: outbound: {} more refused requests not logged one by one",
                    record.unlogged_refusals
                ),
            });
        }
        state.logs.sort_by_key(|l| l.at_ms);
        for (_, sku, unit) in &app.egress.skus {
            let quantity = record.quantity(sku, *unit).min(MAX_QUANTITY);
            if quantity == 0 {
                continue;
            }
            state.usage.push(UsageEvent {
                tenant: state.who.tenant.clone(),
                installation: state.who.installation.clone(),
                app: state.who.app.clone(),
                version: state.who.version.clone(),
                sku: sku.clone(),
                quantity,
                at_ms: now_ms(),
                source: UsageSource::Host,
                idempotency_key: format!("{call_id}/egress/{sku}"),
            });
        }
    }

    /// Names the limit or cause behind a failed call.
    ///
    /// Limits wasmtime and wasmtime-wasi enforce on our behalf (host copies, handles,
    /// random bytes) surface as errors of private types; they are recognised by their
    /// messages, which `tests/sandbox.rs` pins for the wasmtime version in use.
    fn classify(&self, err: wasmtime::Error, store: &Store<HostState>, limits: &CallLimits) -> CallErrorKind {
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
        let state = store.data();
        if state.stderr.overflowed() || err.downcast_ref::<StderrLimitExceeded>().is_some() {
            return CallErrorKind::StderrLimit { limit_bytes: limits.max_log_bytes_per_call };
        }
        match state.limiter.hit {
            Some(LimitHit::Log) => return CallErrorKind::LogLimit { limit_bytes: limits.max_log_bytes_per_call },
            Some(LimitHit::Memory) => return CallErrorKind::MemoryLimit { limit_bytes: limits.memory_bytes },
            Some(LimitHit::Table) => return CallErrorKind::TableLimit { limit_elements: limits.table_elements },
            None => {}
        }
        if let Some(wasmtime::component::ResourceTableError::Full) =
            err.downcast_ref::<wasmtime::component::ResourceTableError>()
        {
            return CallErrorKind::HandleLimit { limit: limits.max_handles };
        }
        let text = format!("{err:#}");
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallErrorKind::HostCopyLimit { limit_bytes: limits.max_host_copy_bytes };
        }
        if text.contains("store handle limit exceeded") || text.contains("resource table has no free keys") {
            return CallErrorKind::HandleLimit { limit: limits.max_handles };
        }
        if text.contains("requested len") && text.contains("exceeds limit") {
            return CallErrorKind::RandomLimit { limit_bytes: limits.max_random_bytes };
        }
        CallErrorKind::Trap {
            message: match err.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => logs::sanitize_capped(&text, MAX_APP_TEXT_BYTES),
            },
        }
    }
}

/// What each pooled memory, table and fiber stack keeps mapped between calls (see
/// `engine_config`).
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;

fn engine_config(limits: &SandboxLimits) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel.is_some());
    config.max_wasm_stack((limits.max_wasm_stack_kib * 1024) as usize);
    config.memory_init_cow(true);
    // Fiber stacks hold the wasm stack plus the host frames of a call.
    config.async_stack_size((limits.max_wasm_stack_kib * 1024 + 1024 * 1024) as usize);
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
        .table_elements(limits.table_elements as usize)
        // One async fiber stack per concurrent call.
        .total_stacks(slots);
    // A slot's first 64 KiB of memory, table and fiber stack stay mapped between calls
    // and are zeroed with memset instead of being returned to the kernel (madvise) and
    // faulted back in. Measured with `benches/ladder.rs` on an idle 2-core machine, a
    // fresh-Store echo call through Kiosk: 26.1 / 28.4 µs with nothing kept, 22.2 µs at
    // 16 KiB, 21.6 / 21.5 µs at 64 KiB, 30.2 µs at 256 KiB, 43.9 µs at 1 MiB (memset of
    // what is kept outweighs the faults it saves). The guest still sees zeroed pages; the
    // cost is at most 192 KiB resident per warm slot.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(KEEP_RESIDENT_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The id a call of `inst` runs under: the one its caller gave, else a fresh UUID.
fn call_id_of(inst: &Installation) -> String {
    inst.call_id.clone().unwrap_or_else(new_call_id)
}

/// A new call id: a UUIDv7 (RFC 9562): a millisecond timestamp, then a counter seeded at
/// random and random bits (call ids are names, never secrets). Time order
/// matters to the ledger: the keys of a call's usage events start with its call id, so
/// each group's inserts land at the end of the key index instead of on a random page
/// per event (fewer pages written per commit).
pub fn new_call_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The usage window `[start, start + len)` containing `at_ms`, aligned to `len`.
pub fn window_containing(at_ms: u64, len: Duration) -> UsageWindow {
    let len = len.as_millis() as u64;
    let start = at_ms - at_ms % len;
    UsageWindow { start_ms: start, end_ms: start + len }
}
