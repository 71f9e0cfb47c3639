//! The lifecycle of app versions and installations — register, install, configure,
//! upgrade, uninstall, invoke — once, for every front end: the HTTP API, `kiosk run`,
//! the demo seed and the collector all call `Kiosk`.
//!
//! Every use case takes already-authorised inputs (the front end checked the caller) and
//! the actor to audit; every failure is a `Failure` naming the bad input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use kiosk_distribution::artifact::{ArtifactError, ArtifactRef, BlobSource, VerifiedArtifact, fetch_verified};
use kiosk_distribution::registry::RegistrySettings;
use kiosk_distribution::trust::{self, CertState, TrustStore};
use kiosk_domain::digest::Digest;
use kiosk_domain::ids::AppId;
use kiosk_domain::manifest::{ConfigSchema, Manifest};
use kiosk_domain::metering::UsageEvent;
use kiosk_domain::upgrade::UpgradePolicy;
use kiosk_runtime::error::{CallErrorKind, CallFailure, LoadError};
use kiosk_runtime::logs::LogLine;
use kiosk_runtime::runtime::{AppRefusal, AppVersion, CallOutcome, Installation, LoadedComponent, Runtime};
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::ledger::Ledger;
use kiosk_store::logs::{LogBounds, LogLineRow, NewLogLine};
use kiosk_store::{Changed, EntitlementRow, InstallationRow, NotInstallable, Store, UpgradeRefused, VersionRow};

use crate::config::OperatorConfig;
use crate::error::{Class, Failure};
use crate::operator::Purpose;
use crate::seal::Sealer;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// The actor of what Kiosk does by itself (quarantines found when the trust store is
/// rebuilt).
pub const SYSTEM: &str = "kiosk";

/// Kiosk's use cases over one store, one runtime and one operator config.
pub struct Kiosk {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub config: Arc<OperatorConfig>,
    pub sealer: Sealer,
    pub ledger: Ledger,
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
}

/// Components compiled or read from the cache at once. wasmtime already compiles one
/// component in parallel across the cores, so more would only queue for the same cores
/// while calls wait; two lets a cache hit proceed beside one long compilation.
const MAX_LOADS: usize = 2;

/// How many unrunnable component digests are remembered (each a digest and one message);
/// past that the memory is emptied and those digests would be compiled once more.
const MAX_UNRUNNABLE: usize = 1024;

impl std::fmt::Debug for Kiosk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kiosk").finish_non_exhaustive()
    }
}

/// A registered version, as registration reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub app: String,
    pub version: String,
    pub digest: String,
    pub component_digest: String,
    pub signer: String,
}

/// What an install asks for.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// `partner/name`.
    pub app: String,
    /// An exact version, or a semver range such as `^1.4`.
    pub version: Option<String>,
    /// A track such as `1.4`: the highest version in it.
    pub track: Option<String>,
    /// Let a range, a track or no version at all pick a prerelease (`2.0.0-rc.1`); an
    /// exact prerelease version needs no flag.
    pub include_prerelease: bool,
    pub config: Option<Value>,
    /// The installation id; a new UUID when absent. Only local front ends (`kiosk run`)
    /// choose one; the HTTP API never does.
    pub id: Option<String>,
    /// How far Kiosk upgrades the installation by itself (`none` by default).
    pub upgrade_policy: UpgradePolicy,
}

/// What an upgrade asks for. Without `version` or `track`: the highest installable
/// version above the current one on its compatibility line (`Line`), or
/// above it anywhere with `allow_major`.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRequest {
    pub version: Option<String>,
    pub track: Option<String>,
    /// Allow moving to a lower version.
    pub allow_downgrade: bool,
    /// Allow moving to another compatibility line (another major version; for 0.x,
    /// another minor).
    pub allow_major: bool,
    /// As `InstallRequest::include_prerelease`.
    pub include_prerelease: bool,
}

/// An invoke's answer: the operation's output and the usage it metered.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The call's id (its log lines carry it).
    pub call_id: String,
    pub output: Value,
    pub usage: Vec<UsageEvent>,
}

/// Longest operation name kept with a log line, bytes (the rest is cut).
const MAX_LOG_OPERATION_BYTES: usize = 160;

/// The lines of one call, waiting to be written once the call is over.
#[derive(Debug)]
struct CallLog {
    call_id: String,
    operation: String,
    lines: Vec<LogLine>,
}

/// The calls of one request, in order, and their lines.
#[derive(Debug, Default)]
struct CallLogs(Vec<CallLog>);

impl CallLogs {
    /// A fresh call of `tenant`'s installation `id`: the installation to call with,
    /// named by a new call id.
    fn call(tenant: &str, id: &str) -> (Installation, String) {
        let call_id = kiosk_runtime::runtime::new_call_id();
        (Installation::new(tenant, id).with_call_id(call_id.clone()), call_id)
    }

    /// A fresh call of a recorded installation whose lines, if it completes, are kept
    /// with its effects in one write (as lines of `operation`).
    fn logged_call(tenant: &str, id: &str, operation: &str) -> (Installation, String) {
        let (call, call_id) = Self::call(tenant, id);
        (call.with_log(kiosk_runtime::logs::sanitize_capped(operation, MAX_LOG_OPERATION_BYTES)), call_id)
    }

    /// Runs one call of the app, keeping its lines whatever the result: the answer and
    /// its usage, or a failure carrying the call id (the app's refusal as `step`).
    async fn run<T>(
        &mut self,
        call: &Installation,
        operation: &str,
        step: &str,
        future: impl std::future::Future<Output = std::result::Result<CallOutcome<T>, CallFailure>>,
    ) -> Result<(String, T, Vec<UsageEvent>)> {
        use tracing::Instrument as _;
        let operation = kiosk_runtime::logs::sanitize_capped(operation, MAX_LOG_OPERATION_BYTES);
        let span = tracing::info_span!("call", call_id = call.call_id.as_deref().unwrap_or(""), operation = %operation);
        match future.instrument(span).await {
            Ok(outcome) => {
                let call_id = outcome.call_id;
                if !outcome.logs_kept {
                    self.0.push(CallLog { call_id: call_id.clone(), operation, lines: outcome.logs });
                }
                match outcome.result {
                    Ok(answer) => Ok((call_id, answer, outcome.usage)),
                    Err(refusal) => Err(refusal_failure(step, &refusal).with_call_id(call_id)),
                }
            }
            Err(mut failure) => {
                let call_id = failure.call.call_id.clone();
                let tail = failure.logs.as_deref().map(log_tail).unwrap_or_default();
                if let Some(lines) = failure.logs.take() {
                    self.0.push(CallLog { call_id: call_id.clone(), operation, lines });
                }
                let mut failure = call_failure(failure).with_call_id(call_id);
                // The app's own failure (a trap, a limit): what it printed last — a
                // Python or JavaScript traceback — is one read away, in the problem.
                if failure.class == Class::Upstream && !tail.is_empty() {
                    failure.detail = format!("{}; the app's last lines: {tail}", failure.detail);
                }
                Err(failure)
            }
        }
    }
}

/// Registry credentials, sealed at rest.
#[derive(Serialize, Deserialize, Default)]
pub struct RegistrySecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for RegistrySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySecret").finish_non_exhaustive()
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
        }
    }

    // --- trust and registries ---------------------------------------------------------

    /// The trust store: certificates in the database plus those of the operator config.
    /// Rebuilding it also quarantines what a signer found revoked or removed signed
    /// (`reconcile`).
    pub async fn trust(&self) -> Result<TrustStore> {
        let mut trust = self.config.trust_store().map_err(Failure::internal)?;
        for row in self.store.certificate_rows().await? {
            trust.add_fingerprint(&row.partner, &row.cert, &row.fingerprint).map_err(Failure::internal)?;
        }
        self.reconcile(&trust).await?;
        Ok(trust)
    }

    /// Quarantines the versions of every signer the trust store finds revoked or no
    /// longer registered, and releases those whose signer is trusted again.
    async fn reconcile(&self, trust: &TrustStore) -> Result<()> {
        let distrusted: HashMap<String, String> =
            self.store.distrusted_certs().await?.into_iter().map(|d| (d.fingerprint, d.state)).collect();
        let mut signers: Vec<(String, String)> =
            self.store.version_signers().await?.into_iter().map(|(p, f, _)| (p, f)).collect();
        signers.dedup();
        let now = SystemTime::now();
        for (partner, fpr) in signers {
            let finding = match find_for(trust, &partner, &fpr).map(|c| trust::cert_state(c, now)) {
                Some(state @ CertState::Revoked { .. }) => {
                    Some(("revoked", revoked_reason(&fpr, &state), "certificate.found-revoked"))
                }
                Some(_) => None,
                None => Some((
                    "missing",
                    format!("signing certificate {fpr} is no longer registered for partner {partner}"),
                    "certificate.found-missing",
                )),
            };
            match finding {
                Some((state, reason, action)) => {
                    if let Some(quarantined) =
                        self.store.distrust(&partner, &fpr, state, &reason, action, SYSTEM).await?
                    {
                        tracing::warn!(partner, fingerprint = fpr, state, versions = ?quarantined, "signer distrusted: versions quarantined");
                    }
                }
                None if distrusted.contains_key(&fpr) => self.store.trust_again(&partner, &fpr, SYSTEM).await?,
                None => {}
            }
        }
        Ok(())
    }

    /// Settings for `host`: the operator API's entry, else the config file's; `None`
    /// if the operator configured neither.
    pub async fn registry_settings(&self, host: &str) -> Result<Option<RegistrySettings>> {
        let Some(row) = self.store.registries().await?.into_iter().find(|r| r.host.eq_ignore_ascii_case(host)) else {
            return Ok(self.config.configured_registry(host).cloned());
        };
        let secret: RegistrySecret = match &row.secret {
            Some(sealed) => {
                let plain = self.sealer.open(sealed, &format!("registry/{host}")).map_err(Failure::internal)?;
                serde_json::from_slice(&plain).map_err(Failure::internal)?
            }
            None => RegistrySecret::default(),
        };
        Ok(Some(RegistrySettings {
            host: row.host,
            insecure: row.insecure,
            ca_bundle: None,
            ca_pem: row.ca_pem,
            username: row.username,
            password: secret.password,
            token: secret.token,
            partners: row.partners,
            blob_hosts: row.blob_hosts,
            token_hosts: row.token_hosts,
            private_addresses: row.private_addresses,
        }))
    }

    // --- registration -----------------------------------------------------------------

    /// Registers `partner/name` from `reference` (`host/repository:tag`), a registry the
    /// operator configured, under a repository prefix the operator assigned the partner.
    /// The allowlist is decided before any network I/O.
    pub async fn register_from_registry(
        &self,
        partner: &str,
        name: &str,
        reference: &str,
        actor: &str,
    ) -> Result<Registered> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("name"))?.to_string();
        let reference = reference.trim();
        let parsed = ArtifactRef::parse(reference)
            .map_err(|detail| Failure::unprocessable("invalid-reference", detail).field("reference"))?;
        let (host, repository, tag) = match &parsed {
            ArtifactRef::Layout { .. } => {
                return Err(Failure::unprocessable(
                    "layout-not-allowed",
                    "oci-layout: directories are an operator's source (CLI, demo seed), not a partner's: \
                     register from a registry the operator configured, host/repository:tag",
                )
                .field("reference"));
            }
            ArtifactRef::Registry { host, repository, tag } => (host, repository, tag),
        };
        let settings = self.allowed_registry(partner, host, repository).await?;
        let registry =
            kiosk_distribution::registry::Registry::new(&settings, self.config.transfer).map_err(Failure::internal)?;
        let source = registry.repository(repository);
        self.register(&source, &app, tag, reference, actor).await
    }

    /// The operator's settings of `host` if partner `partner` may register from
    /// `repository` there: the host is configured (API or config file) and the
    /// repository is under a prefix the operator assigned the partner on it. Else
    /// `registry-not-allowed` naming the rule (field `reference`). No network I/O.
    pub async fn allowed_registry(&self, partner: &str, host: &str, repository: &str) -> Result<RegistrySettings> {
        let not_allowed = |detail: String| Failure::unprocessable("registry-not-allowed", detail).field("reference");
        let Some(settings) = self.registry_settings(host).await? else {
            return Err(not_allowed(format!(
                "registry {host} is not configured by the operator: partners register only from registries the \
                 operator configured"
            )));
        };
        if !settings.allows(partner, repository) {
            let prefixes = settings.prefixes(partner);
            return Err(not_allowed(if prefixes.is_empty() {
                format!(
                    "repository {repository} on {host}: the operator assigned partner {partner} no repository prefix \
                     on this registry"
                )
            } else {
                format!(
                    "repository {repository} on {host} is outside the repository prefixes assigned to partner \
                     {partner} there ({})",
                    prefixes.join(", ")
                )
            }));
        }
        Ok(settings)
    }

    /// Registers `app@tag` from `source` (a registry repository, or an OCI layout the
    /// operator chose): verified against the trust store and the operator's size caps,
    /// pinned to the digest already registered for the tag if there is one.
    pub async fn register(
        &self,
        source: &impl BlobSource,
        app: &str,
        tag: &str,
        reference: &str,
        actor: &str,
    ) -> Result<Registered> {
        self.register_loading(source, app, tag, reference, actor).await.map(|(registered, _)| registered)
    }

    /// `register`, keeping the version it loaded in memory (a local build about to be
    /// run: the demo seed and `kiosk run` register a handful, and their load's cache
    /// outcome is what `kiosk run` reports).
    pub async fn register_and_keep(
        &self,
        source: &impl BlobSource,
        app: &str,
        tag: &str,
        reference: &str,
        actor: &str,
    ) -> Result<Registered> {
        let (registered, loaded) = self.register_loading(source, app, tag, reference, actor).await?;
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert((app.to_string(), tag.to_string()), loaded);
        Ok(registered)
    }

    async fn register_loading(
        &self,
        source: &impl BlobSource,
        app: &str,
        tag: &str,
        reference: &str,
        actor: &str,
    ) -> Result<(Registered, AppVersion)> {
        self.check_partner_enabled(app).await?;
        let trust = self.trust().await?;
        let existing = self.store.version(app, tag).await?;
        let pinned = existing.as_ref().and_then(|v| Digest::parse(&v.manifest_digest));
        let fetched =
            fetch_verified(source, app, tag, &trust, &self.config.artifacts, &HOST_API_VERSION, pinned.as_ref()).await;
        let artifact = match fetched {
            Ok(artifact) => {
                metrics::counter!("kiosk_registry_pulls_total", "outcome" => "verified").increment(1);
                artifact
            }
            Err(e) => {
                let failure = artifact_failure(e);
                // The failure's kind is one of Kiosk's slugs: a bounded label.
                let outcome = if failure.kind.starts_with("registry-") { "unavailable" } else { "refused" };
                metrics::counter!("kiosk_registry_pulls_total", "outcome" => outcome).increment(1);
                if outcome == "refused" {
                    metrics::counter!("kiosk_verification_failures_total", "reason" => failure.kind).increment(1);
                }
                return Err(failure);
            }
        };
        if existing.is_some() {
            return Err(Failure::conflict("version-exists", format!("{app}@{tag} is already registered")));
        }
        // Compiled (and cached) now, and instantiated once under the operator's limits:
        // a version that cannot run is refused here, naming the limit, and its first
        // install does not wait for the compiler.
        // (The compiled artefact stays in the disk cache, not in memory: a version takes
        // memory once a tenant uses it.)
        let loaded = self.runnable(app, tag, &artifact).await?;
        let registered = self.record_version(app, tag, &artifact, reference, actor).await?;
        Ok((registered, loaded))
    }

    /// The verified artifact of `app@tag` compiled, linked and instantiated once under
    /// the limits its calls would run under before any tenant's override (the config
    /// file's ceilings and defaults, the operator's defaults and caps for the app, the
    /// manifest). Else `component-not-runnable` (422, field `reference`) naming the
    /// cause or limit; busy or shutting down are the runtime's usual 503s.
    async fn runnable(&self, app: &str, tag: &str, artifact: &VerifiedArtifact) -> Result<AppVersion> {
        let not_runnable = |detail: String| {
            Failure::unprocessable("component-not-runnable", format!("{app}@{tag}: {detail}")).field("reference")
        };
        // One registration compiles at a time, so registrations hold at most one of the
        // `MAX_LOADS` places and tenants' first calls always have the other.
        let _registering = self.registering.acquire().await.map_err(Failure::internal)?;
        // A component refused under these very limits is refused again without being
        // compiled or instantiated; other limits (the operator changed them) try again.
        let limits = self.registration_limits(app, artifact.manifest.limits).await?;
        let probe_key = format!("{} {limits:?}", artifact.component_digest);
        if let Some(why) = self.unrunnable.lock().unwrap_or_else(|p| p.into_inner()).get(&probe_key) {
            return Err(not_runnable(format!("{why} (refused before: not compiled again until Kiosk restarts)")));
        }
        let component = self
            .load_component(artifact.component_digest.as_str(), artifact.component.clone())
            .await
            .map_err(|f| if f.kind == "component-not-runnable" { not_runnable(f.detail) } else { f })?;
        let world = component.world.clone();
        if !artifact.manifest.host_api.matches(&world) {
            return Err(not_runnable(format!(
                "the component implements kiosk:app@{world}, which the manifest's hostApi {} excludes",
                artifact.manifest.host_api
            )));
        }
        let version = self.runtime.prepare(artifact.manifest.clone(), component).with_limits(limits);
        let probe = Installation::new("-", "registration");
        self.runtime.check_instantiates(&version, &probe).await.map_err(|e| match e.kind {
            CallErrorKind::Busy(_) | CallErrorKind::ShuttingDown => call_failure(e),
            kind => {
                // Refused: its compiled artefact would sit in the cache for nothing, and the
                // refusal is remembered instead.
                self.runtime.forget_compiled(&artifact.component_digest);
                let why = format!("cannot run under the operator's limits: {kind}");
                self.remember_unrunnable(probe_key, why.clone());
                not_runnable(why)
            }
        })?;
        Ok(version)
    }

    /// The compiled and linked component `digest` (`bytes`), from the disk cache when it
    /// is there; a component that cannot be compiled or linked is refused
    /// (`component-not-runnable`) and remembered, so it is not compiled again.
    async fn load_component(&self, digest: &str, bytes: Vec<u8>) -> Result<Arc<LoadedComponent>> {
        let refused = |detail: String| Failure::unprocessable("component-not-runnable", detail);
        if let Some(why) = self.unrunnable.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Err(refused(format!("{why} (refused before: not compiled again until Kiosk restarts)")));
        }
        // The permit goes with the blocking task: a caller that gives up (a dropped
        // request) does not free a place while its compilation still runs.
        let permit = self.loads.clone().acquire_owned().await.map_err(Failure::internal)?;
        let runtime = self.runtime.clone();
        let load = move || {
            let _permit = permit;
            runtime.load(&bytes)
        };
        match tokio::task::spawn_blocking(load).await.map_err(Failure::internal)? {
            Ok(loaded) => Ok(Arc::new(loaded)),
            Err(e @ LoadError::Cache { .. }) => Err(Failure::internal(e)),
            Err(e) => {
                let why = e.to_string();
                self.remember_unrunnable(digest.to_string(), why.clone());
                Err(refused(why))
            }
        }
    }

    /// Remembers why `key` (a component digest, or a digest and the limits it was
    /// refused under) cannot run.
    fn remember_unrunnable(&self, key: String, why: String) {
        metrics::counter!("kiosk_components_refused_total").increment(1);
        let mut unrunnable = self.unrunnable.lock().unwrap_or_else(|p| p.into_inner());
        if unrunnable.len() >= MAX_UNRUNNABLE {
            unrunnable.clear();
        }
        unrunnable.insert(key, why);
    }

    async fn record_version(
        &self,
        app: &str,
        tag: &str,
        artifact: &VerifiedArtifact,
        reference: &str,
        actor: &str,
    ) -> Result<Registered> {
        if self.store.version(app, tag).await?.is_some() {
            return Err(Failure::conflict("version-exists", format!("{app}@{tag} is already registered")));
        }
        let manifest_json = String::from_utf8_lossy(&artifact.manifest_bytes).into_owned();
        self.store
            .register_version(
                &artifact.manifest,
                &manifest_json,
                artifact.digest.as_str(),
                artifact.component_digest.as_str(),
                &artifact.component,
                &artifact.signers.manifest.fingerprint,
                reference,
                actor,
            )
            .await?;
        Ok(Registered {
            app: app.to_string(),
            version: tag.to_string(),
            digest: artifact.digest.as_str().to_string(),
            component_digest: artifact.component_digest.as_str().to_string(),
            signer: artifact.signers.manifest.fingerprint.clone(),
        })
    }

    // --- versions ---------------------------------------------------------------------

    /// The versions of `partner/name`, or 404 if it has none.
    pub async fn app_versions(&self, partner: &str, name: &str) -> Result<(String, Vec<VersionRow>)> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("app"))?.to_string();
        let versions = self.store.versions(&app).await?;
        if versions.is_empty() {
            return Err(Failure::not_found(format!("no app {app:?}")).field("app"));
        }
        Ok((app, versions))
    }

    /// The runnable form of a registered version (compiled once, then cached).
    pub async fn app_version(&self, row: &VersionRow) -> Result<AppVersion> {
        let key = (row.app.clone(), row.version.clone());
        if let Some(app) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(app.clone());
        }
        let manifest = Manifest::parse(row.manifest.as_bytes(), &HOST_API_VERSION)
            .map_err(|e| Failure::unprocessable("host-api-mismatch", e.to_string()).field("hostApi"))?;
        let bytes = self
            .store
            .component(&row.component_digest)
            .await?
            .ok_or_else(|| Failure::internal(format!("component {} missing", row.component_digest)))?;
        let loaded = self.load_component(&row.component_digest, bytes).await?;
        let app = self.runtime.prepare(manifest, loaded);
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(key, app.clone());
        Ok(app)
    }

    /// The version an installation runs, ready to call.
    pub async fn installed_app(&self, row: &InstallationRow) -> Result<AppVersion> {
        // A version's row never changes what runs (its tag is pinned to its digest; yank
        // and quarantine stop new installs, never running installations), so a version
        // loaded once is called without reading its row again. An upgrade moves the
        // installation to another key.
        let key = (row.app.clone(), row.version.clone());
        if let Some(app) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(app.clone());
        }
        let version = self
            .store
            .version(&row.app, &row.version)
            .await?
            .ok_or_else(|| Failure::internal(format!("installed version {}@{} missing", row.app, row.version)))?;
        self.app_version(&version).await
    }

    /// Refuses a tenant without a valid licence for an app that requires one: checked at
    /// install, upgrade and on every call, so a revoked or expired licence stops the
    /// installation's calls too.
    pub async fn check_entitlement(&self, tenant: &str, app: &AppVersion) -> Result<()> {
        if !app.manifest.licensing.requires_entitlement {
            return Ok(());
        }
        let entitlement = self.store.entitlement(tenant, &app.manifest.app).await?;
        Self::entitled(tenant, app, entitlement.as_ref())
    }

    /// `check_entitlement` with the licence already read (`Store::call_context`).
    fn entitled(tenant: &str, app: &AppVersion, entitlement: Option<&EntitlementRow>) -> Result<()> {
        if !app.manifest.licensing.requires_entitlement {
            return Ok(());
        }
        let forbidden = |kind, detail: String| Failure::forbidden(kind, detail).field("app");
        match entitlement {
            None => Err(forbidden(
                "entitlement-missing",
                format!("tenant {tenant} has no licence for {}", app.manifest.app),
            )),
            Some(e) if e.revoked => Err(forbidden(
                "entitlement-revoked",
                format!("the licence of tenant {tenant} for {} was revoked", app.manifest.app),
            )),
            Some(e) if e.expires_ms.is_some_and(|x| x <= kiosk_domain::metering::now_ms() as i64) => Err(forbidden(
                "entitlement-expired",
                format!("the licence of tenant {tenant} for {} has expired", app.manifest.app),
            )),
            Some(_) => Ok(()),
        }
    }

    // --- secrets ----------------------------------------------------------------------

    /// The installation's secrets by JSON pointer (rows sealed before pointers were used
    /// keyed top-level secrets by name: `apiKey` reads as `/apiKey`).
    pub fn open_secrets(&self, row: &InstallationRow) -> Result<Map<String, Value>> {
        let plain = self.sealer.open(&row.secrets, &format!("{}/{}", row.tenant, row.id)).map_err(Failure::internal)?;
        let stored: Map<String, Value> = serde_json::from_slice(&plain).map_err(Failure::internal)?;
        Ok(stored
            .into_iter()
            .map(
                |(k, v)| {
                    if k.starts_with('/') {
                        (k, v)
                    } else {
                        (format!("/{}", k.replace('~', "~0").replace('/', "~1")), v)
                    }
                },
            )
            .collect())
    }

    /// The JSON pointers of the secrets that are set (never their values).
    pub fn secrets_set(&self, row: &InstallationRow) -> Vec<String> {
        self.open_secrets(row).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Stores `config` on the row: the public part as JSON, the secret part sealed.
    fn set_config(&self, row: &mut InstallationRow, config: &Value, secret_pointers: &[String]) {
        let (public, secrets) = split_secrets(config, secret_pointers);
        row.config = public.to_string();
        row.secrets =
            self.sealer.seal(Value::Object(secrets).to_string().as_bytes(), &format!("{}/{}", row.tenant, row.id));
    }

    /// The full config the app sees: public part plus opened secrets.
    fn full_config(&self, row: &InstallationRow) -> Result<Value> {
        let mut config: Value = serde_json::from_str(&row.config).map_err(Failure::internal)?;
        for (ptr, v) in self.open_secrets(row)? {
            kiosk_domain::manifest::put_pointer(&mut config, &ptr, v);
        }
        Ok(config)
    }

    // --- logs -------------------------------------------------------------------------

    /// How much of each installation's log is kept (operator settings).
    pub fn log_bounds(&self) -> LogBounds {
        crate::host::log_bounds(&self.config)
    }

    /// Writes the lines of a request's calls to the installation's log (after the calls:
    /// no wasmtime Store is alive). A failure to write is the server log's, not the
    /// caller's: the calls' effects are already committed, and lines are diagnostics.
    /// Adds one line of Kiosk's own to an installation's log (as a call of its own, e.g.
    /// `auto-upgrade`), where the tenant, the partner and the operator read it.
    pub(crate) async fn note(&self, tenant: &str, id: &str, operation: &str, line: LogLine) {
        let call_id = kiosk_runtime::runtime::new_call_id();
        self.keep_logs(tenant, id, CallLogs(vec![CallLog { call_id, operation: operation.into(), lines: vec![line] }]))
            .await;
    }

    async fn keep_logs(&self, tenant: &str, id: &str, logs: CallLogs) {
        for call in logs.0 {
            if call.lines.is_empty() {
                continue;
            }
            let lines: Vec<NewLogLine> = call
                .lines
                .iter()
                .map(|l| NewLogLine {
                    at_ms: i64::try_from(l.at_ms).unwrap_or(i64::MAX),
                    level: l.level.as_str().to_string(),
                    message: l.message.clone(),
                })
                .collect();
            match self.store.append_logs(tenant, id, &call.call_id, &call.operation, &lines, self.log_bounds()).await {
                Ok(true) => {}
                // Uninstalled while the call ran: its lines go with it.
                Ok(false) => tracing::debug!(call_id = call.call_id, "installation gone: log lines dropped"),
                Err(e) => tracing::error!(error = %e, call_id = call.call_id, "log lines could not be written"),
            }
        }
    }

    /// Lines of calls that left no installation behind (a failed install): they go to
    /// the server log with their call id, the one the caller's problem names.
    fn log_orphans(tenant: &str, id: &str, logs: CallLogs) {
        for call in logs.0 {
            for line in call.lines {
                tracing::info!(
                    tenant,
                    installation = id,
                    call_id = call.call_id,
                    operation = call.operation,
                    level = line.level.as_str(),
                    message = line.message,
                    "guest log line of a call whose installation was not recorded"
                );
            }
        }
    }

    /// An installation's log lines after cursor `since` (exclusive), oldest first: at
    /// most `limit` (the front end bounds it).
    pub async fn logs(&self, row: &InstallationRow, since: i64, limit: i64) -> Result<Vec<LogLineRow>> {
        Ok(self.store.logs(&row.tenant, &row.id, since, limit).await?)
    }

    // --- installations ----------------------------------------------------------------

    pub async fn installation(&self, tenant: &str, id: &str) -> Result<InstallationRow> {
        self.store.installation(tenant, id).await?.ok_or_else(|| Failure::not_found(format!("no installation {id:?}")))
    }

    /// Installs an app for `tenant`: resolve the version → load it → check the licence →
    /// validate the config → `validate-config` and `install` hooks → record. Nothing is
    /// left behind on failure (the hooks' key-value data is removed).
    pub async fn install(&self, tenant: &str, request: InstallRequest, actor: &str) -> Result<InstallationRow> {
        let id = AppId::parse(&request.app).map_err(|e| Failure::not_found(e.to_string()).field("app"))?;
        let (app_id, versions) = self.app_versions(id.partner(), id.name()).await?;
        let candidates = Candidates { include_prerelease: request.include_prerelease, ..Candidates::default() };
        let row = resolve_version_among(
            &app_id,
            &versions,
            request.version.as_deref(),
            request.track.as_deref(),
            candidates,
        )?;
        let app = self.app_version(&row).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        let (config, secret_pointers) = resolve_config(&app, request.config).await?;
        let inst_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let inst = Installation::new(tenant, &inst_id);
        let config_text = crate::egress::hook_config(&app, &config, &secret_pointers);
        let operator = self.operator_egress(&app).await?;
        let egress = crate::egress::installation_egress(&app, &config, &secret_pointers, None, &operator);
        let attach = |call: Installation| match &egress {
            Some(layer) => call.with_egress(layer.clone()),
            None => call,
        };
        let mut logs = CallLogs::default();
        let outcome: Result<()> = async {
            let (call, _) = CallLogs::call(tenant, &inst_id);
            let call = attach(call);
            logs.run(
                &call,
                "validate-config",
                "validate-config",
                self.runtime.validate_config(&app, &call, &config_text),
            )
            .await?;
            let (call, _) = CallLogs::call(tenant, &inst_id);
            let call = attach(call);
            logs.run(&call, "install", "install", self.runtime.install(&app, &call, &config_text)).await?;
            Ok(())
        }
        .await;
        let now = kiosk_domain::metering::now_ms() as i64;
        let mut record = InstallationRow {
            id: inst.id.clone(),
            tenant: tenant.to_string(),
            app: app_id,
            version: row.version.clone(),
            config: String::new(),
            secrets: Vec::new(),
            created_ms: now,
            updated_ms: now,
            row_version: 0,
            upgrade_policy: request.upgrade_policy,
        };
        self.set_config(&mut record, &config, &secret_pointers);
        // The version is checked again as the row is written: a yank or a quarantine
        // committed while the hooks ran wins.
        let recorded = match outcome {
            Ok(()) => match self.store.install_if_installable(&record, actor).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(NotInstallable(now))) => installable(&record.app, &now),
                Err(e) => Err(Failure::from(e)),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            Self::log_orphans(tenant, &inst.id, logs);
            self.store.delete_installation_data(tenant, &inst.id).await?;
            return Err(e);
        }
        self.keep_logs(tenant, &inst.id, logs).await;
        Ok(record)
    }

    /// Replaces an installation's configuration: secret values the new config leaves
    /// out keep their current value; `validate-config` and `configure` hooks run first.
    /// The row is written only if nothing else wrote it while the hooks ran
    /// (`installation-changed` otherwise).
    pub async fn configure(&self, tenant: &str, id: &str, config: Value, actor: &str) -> Result<InstallationRow> {
        let mut row = self.installation(tenant, id).await?;
        let app = self.installed_app(&row).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        let old = self.full_config(&row)?;
        let mut new = config;
        if new.is_object() {
            for (ptr, v) in self.open_secrets(&row)? {
                if new.pointer(&ptr).is_none() {
                    kiosk_domain::manifest::put_pointer(&mut new, &ptr, v);
                }
            }
        }
        let old_pointers: Vec<String> = self.open_secrets(&row)?.keys().cloned().collect();
        let (config, secret_pointers) = resolve_config(&app, Some(new)).await?;
        let old_text = crate::egress::hook_config(&app, &old, &old_pointers);
        let new_text = crate::egress::hook_config(&app, &config, &secret_pointers);
        // The hooks' requests go where the new configuration says.
        let switch = self.egress_switch(&app, tenant, id).await?;
        let operator = self.operator_egress(&app).await?;
        let egress = crate::egress::installation_egress(&app, &config, &secret_pointers, switch.as_ref(), &operator);
        let attach = |call: Installation| match &egress {
            Some(layer) => call.with_egress(layer.clone()),
            None => call,
        };
        let mut logs = CallLogs::default();
        let hooks: Result<()> = async {
            let (call, _) = CallLogs::call(tenant, id);
            let call = attach(call);
            logs.run(&call, "validate-config", "validate-config", self.runtime.validate_config(&app, &call, &new_text))
                .await?;
            let (call, _) = CallLogs::call(tenant, id);
            let call = attach(call);
            logs.run(&call, "configure", "configure", self.runtime.configure(&app, &call, &old_text, &new_text))
                .await?;
            Ok(())
        }
        .await;
        self.keep_logs(tenant, id, logs).await;
        hooks?;
        self.set_config(&mut row, &config, &secret_pointers);
        if let Err(Changed) = self.store.update_installation(&row, "installation.configure", actor).await? {
            return Err(self.changed(&row, "configure").await);
        }
        self.installation(tenant, id).await
    }

    /// Moves an installation to another version (`upgrade_target`: a downgrade needs
    /// `allow_downgrade`, another major version `allow_major`) through the new version's
    /// `upgrade` hook. The row is written only if nothing else wrote it while the hook
    /// ran (`installation-changed` otherwise).
    pub async fn upgrade(
        &self,
        tenant: &str,
        id: &str,
        request: UpgradeRequest,
        actor: &str,
    ) -> Result<InstallationRow> {
        let row = self.installation(tenant, id).await?;
        self.upgrade_row(row, request, actor).await
    }

    /// `upgrade` of the installation as `row` read it: the write applies only if the
    /// row is still at that row version (an automatic upgrade decided on this row).
    pub(crate) async fn upgrade_row(
        &self,
        mut row: InstallationRow,
        request: UpgradeRequest,
        actor: &str,
    ) -> Result<InstallationRow> {
        let (tenant, id) = (row.tenant.clone(), row.id.clone());
        let (tenant, id) = (tenant.as_str(), id.as_str());
        let versions = self.store.versions(&row.app).await?;
        let from = semver::Version::parse(&row.version).map_err(Failure::internal)?;
        let target = upgrade_target(&row.app, &versions, &from, &request)?;
        let app = self.app_version(&target).await?;
        let app = self.admit_call(tenant, &app, Purpose::Run).await?;
        self.check_entitlement(tenant, &app).await?;
        let (config, secret_pointers) = resolve_config(&app, Some(self.full_config(&row)?)).await?;
        let (call, _) = CallLogs::call(tenant, id);
        let switch = self.egress_switch(&app, tenant, id).await?;
        let operator = self.operator_egress(&app).await?;
        let call = match crate::egress::installation_egress(&app, &config, &secret_pointers, switch.as_ref(), &operator)
        {
            Some(layer) => call.with_egress(layer),
            None => call,
        };
        let mut logs = CallLogs::default();
        let (from_text, config_text) = (from.to_string(), crate::egress::hook_config(&app, &config, &secret_pointers));
        let hook =
            logs.run(&call, "upgrade", "upgrade", self.runtime.upgrade(&app, &call, &from_text, &config_text)).await;
        self.keep_logs(tenant, id, logs).await;
        hook?;
        row.version = target.version.clone();
        self.set_config(&mut row, &config, &secret_pointers);
        // Checked again as the row is written (a yank or quarantine during the hook wins,
        // and so does a configure, upgrade or uninstall that wrote first); the old version
        // keeps running.
        match self.store.upgrade_installation(&row, actor).await? {
            Ok(()) => {}
            Err(UpgradeRefused::NotInstallable(blocked)) => installable(&row.app, &blocked.0)?,
            Err(UpgradeRefused::Changed(Changed)) => return Err(self.changed(&row, "upgrade").await),
        }
        self.installation(tenant, id).await
    }

    /// Removes an installation. The app's hook is asked, but never keeps the tenant in: a
    /// refusal, a trap or a limit is recorded (audit) and returned as `Some(detail)`, and
    /// the installation goes anyway. Only what a retry can fix (admission, shutdown, the
    /// host's storage) stops the uninstall, and so does a configure or upgrade that wrote
    /// the installation while the hook ran (`installation-changed`).
    pub async fn uninstall(&self, tenant: &str, id: &str, actor: &str) -> Result<Option<String>> {
        let row = self.installation(tenant, id).await?;
        let (inst, call_id) = CallLogs::call(tenant, id);
        let loaded = match self.installed_app(&row).await {
            Ok(app) => Ok(self.admit_call(tenant, &app, Purpose::Leave).await?),
            Err(e) => Err(e),
        };
        let hook_failure = match loaded {
            Err(e) => Some(format!("the app could not be loaded: {}", e.detail)),
            Ok(app) => {
                let mut logs = CallLogs::default();
                // Secrets that cannot be opened leave the hook without outbound requests;
                // an uninstall never fails on them.
                let inst = self.with_row_egress(&app, &row, inst.clone()).await.unwrap_or_else(|_| inst.clone());
                let outcome = self.runtime.uninstall(&app, &inst).await;
                // Kept while the installation stays (a stopped uninstall); the removal
                // below takes them with it.
                let outcome = match outcome {
                    Ok(mut done) => {
                        let lines = std::mem::take(&mut done.logs);
                        logs.0.push(CallLog { call_id: call_id.clone(), operation: "uninstall".into(), lines });
                        Ok(done)
                    }
                    Err(mut e) => {
                        if let Some(lines) = e.logs.take() {
                            logs.0.push(CallLog { call_id: call_id.clone(), operation: "uninstall".into(), lines });
                        }
                        Err(e)
                    }
                };
                self.keep_logs(tenant, id, logs).await;
                match outcome {
                    Ok(done) => done.result.err().map(|r| format!("the app refused: {} ({})", r.message, r.code)),
                    Err(e) => match e.kind {
                        CallErrorKind::Busy(_) | CallErrorKind::ShuttingDown | CallErrorKind::Storage(_) => {
                            return Err(call_failure(e).with_call_id(call_id));
                        }
                        kind => Some(format!("the hook failed: {kind}")),
                    },
                }
            }
        };
        if let Err(Changed) =
            self.store.delete_installation_noting(tenant, id, row.row_version, actor, hook_failure.as_deref()).await?
        {
            return Err(self.changed(&row, "uninstall").await);
        }
        Ok(hook_failure)
    }

    /// The failure of a lifecycle write that lost a race: the installation was written
    /// (or removed) by another request after `read` was read.
    async fn changed(&self, read: &InstallationRow, step: &str) -> Failure {
        let now = match self.store.installation(&read.tenant, &read.id).await {
            Ok(Some(now)) => format!("now at row version {} on {}", now.row_version, now.version),
            Ok(None) => "it was uninstalled".to_string(),
            Err(e) => {
                tracing::error!(error = %e, "reading a changed installation failed");
                "it could not be read again".to_string()
            }
        };
        Failure::conflict(
            "installation-changed",
            format!(
                "installation {} changed while this request ran ({step} read it at row version {}, {now}); nothing \
                 was written: read it again and retry",
                read.id, read.row_version
            ),
        )
    }

    /// Calls `operation` of an installation with `input` (JSON). The licence is checked
    /// on every call.
    pub async fn invoke(&self, tenant: &str, id: &str, operation: &str, input: &Value) -> Result<Invoked> {
        // One read of the database before the call (installation, limits, switches,
        // licence), one group-committed write after it.
        let context = self
            .store
            .call_context(tenant, id)
            .await?
            .ok_or_else(|| Failure::not_found(format!("no installation {id:?}")))?;
        let app = self.installed_app(&context.installation).await?;
        let app = self.admit_under(tenant, &app, Purpose::Run, &context.policy)?;
        Self::entitled(tenant, &app, context.entitlement.as_ref())?;
        let logged_as = format!("invoke:{operation}");
        let (call, _) = CallLogs::logged_call(tenant, id, &logged_as);
        let call =
            self.with_egress_of(&app, &context.installation, context.egress.as_ref(), &context.operator_egress, call)?;
        let input = input.to_string();
        let mut logs = CallLogs::default();
        let done = logs.run(&call, &logged_as, operation, self.runtime.invoke(&app, &call, operation, &input)).await;
        self.keep_logs(tenant, id, logs).await;
        let (call_id, output, usage) = done?;
        let output: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
        Ok(Invoked { call_id, output, usage })
    }
}

/// What one `usage.report` call gave.
#[derive(Debug, Clone)]
pub struct Reported {
    pub accepted: Vec<UsageEvent>,
    pub refused: Vec<kiosk_runtime::runtime::RefusedRecord>,
}

impl Kiosk {
    /// Asks an installation for its usage in `window` now (the collector does this once
    /// per window; `kiosk run` after its call).
    pub async fn report(&self, row: &InstallationRow, window: kiosk_runtime::world::UsageWindow) -> Result<Reported> {
        let app = self.installed_app(row).await?;
        let app = self.admit_call(&row.tenant, &app, Purpose::Run).await?;
        let (call, _) = CallLogs::logged_call(&row.tenant, &row.id, "report");
        let call = self.with_row_egress(&app, row, call).await?;
        let mut logs = CallLogs::default();
        let done = logs.run(&call, "report", "report", self.runtime.report(&app, &call, window)).await;
        self.keep_logs(&row.tenant, &row.id, logs).await;
        let (_, report, _) = done?;
        Ok(Reported { accepted: report.accepted, refused: report.refused })
    }
}

impl Kiosk {
    /// `usage.report` for the collector, which judges the outcome itself: the runtime's
    /// answer as it is, the call's lines kept.
    pub async fn collect_report(
        &self,
        app: &AppVersion,
        row: &InstallationRow,
        window: kiosk_runtime::world::UsageWindow,
    ) -> std::result::Result<CallOutcome<kiosk_runtime::runtime::ReportedUsage>, CallFailure> {
        use tracing::Instrument as _;
        let (call, call_id) = CallLogs::logged_call(&row.tenant, &row.id, "report");
        // Secrets that cannot be opened leave the report without outbound requests.
        let call = self.with_row_egress(app, row, call.clone()).await.unwrap_or(call);
        let span = tracing::info_span!("call", call_id = call_id.as_str(), operation = "report");
        let mut outcome = self.runtime.report(app, &call, window).instrument(span).await;
        let lines = match &mut outcome {
            Ok(done) if done.logs_kept => Vec::new(),
            Ok(done) => std::mem::take(&mut done.logs),
            Err(failure) => failure.logs.take().unwrap_or_default(),
        };
        let logs = CallLogs(vec![CallLog { call_id, operation: "report".into(), lines }]);
        self.keep_logs(&row.tenant, &row.id, logs).await;
        outcome
    }
}

pub fn find_for<'a>(trust: &'a TrustStore, partner: &str, fingerprint: &str) -> Option<&'a sequoia_openpgp::Cert> {
    trust.certificates().find(|(p, c)| *p == partner && c.fingerprint().to_hex() == fingerprint).map(|(_, c)| c)
}

pub fn revoked_reason(fingerprint: &str, state: &CertState) -> String {
    match state {
        CertState::Revoked { reason: Some(reason), .. } => {
            format!("signing certificate {fingerprint} was revoked ({reason})")
        }
        _ => format!("signing certificate {fingerprint} was revoked"),
    }
}

/// The failure for a refused artifact. Registry failures are Kiosk's words
/// (`RemoteFailure`): a remote body or error text never reaches the answer.
pub fn artifact_failure(e: ArtifactError) -> Failure {
    let (class, kind) = match &e {
        ArtifactError::TagNotFound { .. } => (Class::NotFound, "tag-not-found"),
        ArtifactError::MovedTag { .. } => (Class::Conflict, "moved-tag"),
        ArtifactError::Signature(_) => (Class::Unprocessable, "signature-refused"),
        ArtifactError::Manifest(kiosk_domain::manifest::ManifestError::HostApi { .. }) => {
            (Class::Unprocessable, "host-api-mismatch")
        }
        ArtifactError::Manifest(_) => (Class::Unprocessable, "manifest-invalid"),
        ArtifactError::Remote(r) if r.failure.is_policy() => (Class::Unprocessable, "registry-not-allowed"),
        ArtifactError::Remote(r) if r.failure.is_refusal() => (Class::Upstream, "registry-refused"),
        ArtifactError::Remote(_) | ArtifactError::Source { .. } => (Class::Upstream, "registry-unavailable"),
        _ => (Class::Unprocessable, "artifact-refused"),
    };
    Failure::new(class, kind, e.to_string()).field("reference")
}

/// Refuses a version that takes no new installs or upgrades: yanked, or quarantined
/// (the failure names why, e.g. the revoked certificate that signed it).
pub fn installable(app: &str, v: &VersionRow) -> Result<()> {
    if v.quarantined {
        let why = v.quarantine_reason.as_deref().unwrap_or("quarantined");
        return Err(Failure::unprocessable(
            "version-quarantined",
            format!("{app}@{} is quarantined ({why}): no new installs or upgrades", v.version),
        )
        .field("version"));
    }
    if v.yanked {
        return Err(Failure::unprocessable(
            "version-yanked",
            format!("{app}@{} is yanked: no new installs", v.version),
        )
        .field("version"));
    }
    Ok(())
}

/// A compatibility line, after semver's caret rule: one major version (`2.x`), or for
/// 0.x one minor version (`0.3.x`; 0.0.x is one line too, `0.0.x`). Versions on a line
/// are meant to be compatible; moving to another line is a major upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    major: u64,
    minor: Option<u64>,
}

impl Line {
    pub fn of(v: &semver::Version) -> Self {
        Self { major: v.major, minor: (v.major == 0).then_some(v.minor) }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "{}.{minor}.x", self.major),
            None => write!(f, "{}.x", self.major),
        }
    }
}

/// What a range, a track or an absent version may land on, besides what it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidates<'a> {
    /// Admit prereleases, each judged as the release it precedes (`2.0.0-rc.1` as `2.0.0`).
    pub include_prerelease: bool,
    /// Only versions above this one.
    pub above: Option<&'a semver::Version>,
    /// Only versions on this line.
    pub line: Option<Line>,
}

impl Candidates<'_> {
    fn admit(&self, req: &semver::VersionReq, v: &semver::Version) -> bool {
        admits(req, v, self.include_prerelease)
            && self.above.is_none_or(|above| v > above)
            && self.line.is_none_or(|line| Line::of(v) == line)
    }
}

/// Whether `req` admits `v`. A release: when it matches. A prerelease: when the range
/// itself names a prerelease of the same major.minor.patch (semver's own rule:
/// `>=2.0.0-rc.1` admits `2.0.0-rc.2`, never `2.1.0-rc.1`; `*`, `^1`, `=1.4` admit no
/// prerelease), or, with `include_prerelease`, when the release it precedes matches (so
/// `^1` never admits `2.0.0-rc.1`, and `2` or `*` do).
fn admits(req: &semver::VersionReq, v: &semver::Version, include_prerelease: bool) -> bool {
    req.matches(v)
        || include_prerelease && !v.pre.is_empty() && req.matches(&semver::Version::new(v.major, v.minor, v.patch))
}

/// Picks the version an install asks for, and what the catalog calls `latest` (no
/// version, no track), with the default candidates (no prereleases):
/// `resolve_version_among`.
pub fn resolve_version(
    app: &str,
    versions: &[VersionRow],
    version: Option<&str>,
    track: Option<&str>,
) -> Result<VersionRow> {
    resolve_version_among(app, versions, version, track, Candidates::default())
}

/// Picks a version:
/// - an exact version (`1.4.34`, `2.0.0-rc.1`) is that version, a prerelease too; refused
///   if yanked or quarantined (`candidates` does not apply);
/// - a range (`^1.4`), a track (`1.4`, read as `=1.4`) or nothing (`*`) picks the highest
///   version among `candidates` that it admits (`admits`: prereleases only when the range
///   names one, or with `include_prerelease`) and that is neither yanked nor quarantined.
pub fn resolve_version_among<'a>(
    app: &str,
    versions: &[VersionRow],
    version: Option<&str>,
    track: Option<&str>,
    candidates: Candidates<'a>,
) -> Result<VersionRow> {
    let unprocessable = |kind, detail: String, field: &str| Failure::unprocessable(kind, detail).field(field);
    if let Some(exact) = version.filter(|v| semver::Version::parse(v).is_ok()) {
        let v = versions
            .iter()
            .find(|v| v.version == exact)
            .ok_or_else(|| Failure::not_found(format!("{app} has no version {exact}")).field("version"))?;
        installable(app, v)?;
        return Ok(v.clone());
    }
    let (req, field) = match (version, track) {
        (Some(range), None) => (
            semver::VersionReq::parse(range)
                .map_err(|e| unprocessable("invalid-range", format!("version {range:?}: {e}"), "version"))?,
            "version",
        ),
        (None, Some(track)) => (
            semver::VersionReq::parse(&format!("={track}"))
                .map_err(|e| unprocessable("invalid-track", format!("track {track:?}: {e}"), "track"))?,
            "track",
        ),
        (None, None) => (semver::VersionReq::STAR, "version"),
        (Some(_), Some(_)) => {
            return Err(unprocessable("invalid-request", "give either version or track, not both".into(), "track"));
        }
    };
    let matching = |candidates: Candidates<'a>| {
        let req = &req;
        versions.iter().filter_map(move |v| {
            semver::Version::parse(&v.version).ok().filter(|sv| candidates.admit(req, sv)).map(|sv| (sv, v))
        })
    };
    if let Some((_, v)) = matching(candidates).filter(|(_, v)| !v.yanked && !v.quarantined).max_by(|a, b| a.0.cmp(&b.0))
    {
        return Ok(v.clone());
    }
    // Nothing installable: name the quarantine if that is what stands in the way.
    if let Some((_, v)) = matching(candidates).filter(|(_, v)| !v.yanked).max_by(|a, b| a.0.cmp(&b.0)) {
        installable(app, v)?;
    }
    let mut scope = req.to_string();
    if let Some(above) = candidates.above {
        scope.push_str(&format!(" above {above}"));
    }
    if let Some(line) = candidates.line {
        scope.push_str(&format!(" in {line}"));
    }
    let mut detail = format!("no version of {app} that is neither yanked nor quarantined matches {scope}");
    let with_prereleases = Candidates { include_prerelease: true, ..candidates };
    if !candidates.include_prerelease && matching(with_prereleases).any(|(_, v)| !v.yanked && !v.quarantined) {
        detail.push_str(" (prereleases are skipped unless includePrerelease is set or the version is named exactly)");
    }
    Err(unprocessable("no-matching-version", detail, field))
}

/// The version an upgrade from `from` moves to:
/// - without version or track: the highest installable version above `from` on its line
///   (above it anywhere with `allow_major`); none is 409 `no-newer-version`, naming a
///   newer version on another line if there is one. It never downgrades;
/// - with an exact version, a track or a range: what `resolve_version_among` picks. The
///   version the installation is on is 409 `same-version`; a lower one needs
///   `allow_downgrade` (else 422 `downgrade-refused`), one on another line `allow_major`
///   (else 422 `major-upgrade-refused`), whichever the direction.
pub fn upgrade_target(
    app: &str,
    versions: &[VersionRow],
    from: &semver::Version,
    request: &UpgradeRequest,
) -> Result<VersionRow> {
    let line = Line::of(from);
    let include_prerelease = request.include_prerelease;
    if request.version.is_none() && request.track.is_none() {
        let candidates =
            Candidates { include_prerelease, above: Some(from), line: (!request.allow_major).then_some(line) };
        return match resolve_version_among(app, versions, None, None, candidates) {
            Err(e) if e.kind == "no-matching-version" => {
                let scope = if request.allow_major { String::new() } else { format!(" in {line}") };
                let mut detail = format!("no installable version of {app} is newer than {from}{scope}");
                if !request.allow_major {
                    let anywhere = Candidates { line: None, ..candidates };
                    if let Ok(v) = resolve_version_among(app, versions, None, None, anywhere) {
                        detail.push_str(&format!("; {} is a major upgrade: set allowMajor to move to it", v.version));
                    }
                }
                Err(Failure::conflict("no-newer-version", detail).field("version"))
            }
            other => other,
        };
    }
    let field = if request.track.is_some() { "track" } else { "version" };
    let target = resolve_version_among(
        app,
        versions,
        request.version.as_deref(),
        request.track.as_deref(),
        Candidates { include_prerelease, ..Candidates::default() },
    )?;
    let to = semver::Version::parse(&target.version).map_err(Failure::internal)?;
    if to == *from {
        return Err(Failure::conflict("same-version", format!("installation is already on {to}")).field(field));
    }
    if to < *from && !request.allow_downgrade {
        return Err(Failure::unprocessable(
            "downgrade-refused",
            format!("{to} is lower than {from}; set allowDowngrade to downgrade"),
        )
        .field(field));
    }
    if Line::of(&to) != line && !request.allow_major {
        return Err(Failure::unprocessable(
            "major-upgrade-refused",
            format!(
                "{to} is in {}, the installation's {from} in {line}: another major version may break its \
                 configuration and data; set allowMajor to move across",
                Line::of(&to)
            ),
        )
        .field(field));
    }
    Ok(target)
}

/// Splits a resolved config into its public part and its secret (`writeOnly`) part,
/// keyed by JSON pointer (`/auth/token`, `/servers/0/key`).
fn split_secrets(config: &Value, secret_pointers: &[String]) -> (Value, Map<String, Value>) {
    let mut public = config.clone();
    let mut secrets = Map::new();
    for ptr in secret_pointers {
        if let Some(v) = kiosk_domain::manifest::take_pointer(&mut public, ptr) {
            secrets.insert(ptr.clone(), v);
        }
    }
    (public, secrets)
}

/// A call that did not complete: admission refusals are rate-limited (the tenant's own
/// limits) or unavailable (no sandbox slot), with a retry time; a call too big for its
/// limits is too large; a host storage or metering failure is unavailable; the app's own
/// failure (a limit it hit, a trap) is upstream. Every detail names the limit.
/// Lines of a failed call shown in its problem: at most this many, newest last.
const MAX_TAIL_LINES: usize = 8;
/// Bytes of them shown in its problem (the newest kept).
const MAX_TAIL_BYTES: usize = 1024;

/// The last lines a failed call logged (already sanitised by the runtime), without the
/// runtime's own closing "call failed" line (the problem says it), joined by ` | ` and
/// cut to the newest `MAX_TAIL_BYTES`.
fn log_tail(lines: &[LogLine]) -> String {
    let own: Vec<&str> = lines.iter().map(|l| l.message.as_str()).filter(|m| !m.starts_with("call failed: ")).collect();
    let tail = own[own.len().saturating_sub(MAX_TAIL_LINES)..].join(" | ");
    if tail.len() <= MAX_TAIL_BYTES {
        return tail;
    }
    let mut start = tail.len() - MAX_TAIL_BYTES;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &tail[start..])
}

pub fn call_failure(e: CallFailure) -> Failure {
    use kiosk_runtime::admission::Refusal;
    use kiosk_runtime::error::CallErrorKind as K;
    match &e.kind {
        K::Busy(refusal) => {
            let (class, kind) = match refusal {
                Refusal::TenantConcurrency { .. } => (Class::RateLimited, "tenant-concurrency-limit"),
                Refusal::TenantRate { .. } => (Class::RateLimited, "tenant-rate-limit"),
                Refusal::NoSlot { .. } => (Class::Unavailable, "no-sandbox-slot"),
            };
            Failure::new(class, kind, refusal.to_string()).retry_after(refusal.retry_after_s())
        }
        K::ShuttingDown => Failure::new(Class::Unavailable, "shutting-down", e.to_string()).retry_after(1),
        K::InputTooLarge { .. } => Failure::new(Class::TooLarge, "input-too-large", e.to_string()),
        // The host's own storage failed: its text (database errors) stays in the log.
        K::Storage(_) => {
            tracing::error!(failure = %e, "a call could not commit its key-value changes");
            Failure::new(
                Class::Unavailable,
                "storage-unavailable",
                format!(
                    "{}: the host's storage is unavailable, nothing the call did was kept; see the server log",
                    e.call
                ),
            )
            .retry_after(1)
        }
        K::Metering(_) => {
            tracing::error!(failure = %e, "a call's usage was not recorded");
            Failure::new(
                Class::Unavailable,
                "usage-not-recorded",
                format!(
                    "{}: the call's usage could not be recorded, so the call does not count; see the server log",
                    e.call
                ),
            )
            .retry_after(1)
        }
        _ => Failure::new(Class::Upstream, "app-failed", e.to_string()),
    }
}

/// The app refused on purpose (its WIT error): its message reaches the caller.
pub fn refusal_failure(step: &str, r: &AppRefusal) -> Failure {
    Failure::unprocessable("app-refused", format!("{step}: the app refused: {} ({})", r.message, r.code))
}

/// How long validating one configuration may take. The schema's patterns run in linear
/// time and its size is capped at registration, so this is a backstop, not a tuning knob.
const CONFIG_VALIDATION_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies defaults and validates `config` against the app's schema, off the async
/// workers (a blocking thread) and within `CONFIG_VALIDATION_BUDGET`. Returns the
/// resolved config and the JSON pointers of its secrets.
pub async fn resolve_config(app: &AppVersion, config: Option<Value>) -> Result<(Value, Vec<String>)> {
    let schema_json = app.manifest.config.clone();
    let work = tokio::task::spawn_blocking(move || {
        let schema = ConfigSchema::compile(&schema_json).map_err(Failure::internal)?;
        let config = config.unwrap_or_else(|| json!({}));
        let resolved = schema.resolve(config).map_err(|e| {
            let mut err = Failure::unprocessable("config-invalid", e.to_string());
            err.field = e.problems.first().map(|p| format!("config{}", p.split(':').next().unwrap_or("")));
            err.errors = e.problems;
            err
        })?;
        let secrets = schema.secret_pointers(&resolved);
        Ok((resolved, secrets))
    });
    match tokio::time::timeout(CONFIG_VALIDATION_BUDGET, work).await {
        Ok(joined) => joined.map_err(Failure::internal)?,
        Err(_) => Err(Failure::unprocessable(
            "config-validation-timeout",
            format!(
                "validating the configuration against the schema of {} took longer than {} ms",
                app.manifest.app,
                CONFIG_VALIDATION_BUDGET.as_millis()
            ),
        )
        .field("config")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use semver::{Version, VersionReq};

    fn row(version: &str) -> VersionRow {
        VersionRow {
            app: "acme/app".into(),
            version: version.into(),
            manifest: String::new(),
            manifest_digest: String::new(),
            component_digest: String::new(),
            signer: String::new(),
            reference: String::new(),
            yanked: false,
            created_ms: 0,
            quarantined: false,
            quarantine_reason: None,
        }
    }

    fn rows(versions: &[&str]) -> Vec<VersionRow> {
        versions.iter().map(|v| row(v)).collect()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn picked(r: Result<VersionRow>) -> String {
        match r {
            Ok(row) => row.version,
            Err(e) => format!("{} {}", e.kind, e.detail),
        }
    }

    /// What semver's `VersionReq` does with prereleases by itself, which `admits` builds on:
    /// a prerelease matches only a range naming a prerelease of the same major.minor.patch.
    #[test]
    fn semver_version_req_admits_prereleases_only_when_the_range_names_one_of_that_release() {
        let matches = |req: &str, version: &str| VersionReq::parse(req).unwrap().matches(&v(version));
        assert!(!VersionReq::STAR.matches(&v("2.0.0-rc.1")), "* (no version, `latest`) skips prereleases");
        assert!(!matches("*", "2.0.0-rc.1"));
        assert!(!matches(">=1.0.0", "2.0.0-rc.1"));
        assert!(!matches("^1", "1.5.0-beta.1"));
        assert!(!matches("=1.4", "1.4.1-beta.1"), "a track skips prereleases");
        assert!(!matches("^2.0.0-rc.1", "2.1.0-rc.1"), "another release's prerelease");
        assert!(matches("^2.0.0-rc.1", "2.0.0-rc.2"));
        assert!(matches(">=2.0.0-rc.1", "2.0.0-rc.2"));
        assert!(matches("^2.0.0-rc.1", "2.1.0"), "and releases as usual");
        assert!(matches("=2.0.0-rc.1", "2.0.0-rc.1"));
    }

    #[test]
    fn admits_judges_an_opted_in_prerelease_as_the_release_it_precedes() {
        let admits = |req: &str, version: &str, include| admits(&VersionReq::parse(req).unwrap(), &v(version), include);
        assert!(admits("*", "2.0.0-rc.1", true));
        assert!(admits("2", "2.0.0-rc.1", true));
        assert!(admits("=1.4", "1.4.1-beta.1", true));
        assert!(!admits("^1", "2.0.0-rc.1", true), "a prerelease of 2.0.0 is not in ^1");
        assert!(!admits("<2.0.0", "2.0.0-rc.1", true), "nor below 2.0.0");
        assert!(!admits("=1.4", "1.5.0-beta.1", true));
        assert!(admits(">=2.0.0-rc.1", "2.0.0-rc.2", false), "semver's own rule still holds");
    }

    #[test]
    fn latest_tracks_and_ranges_skip_prereleases_unless_asked_and_an_exact_one_is_always_allowed() {
        let versions = rows(&["1.4.0", "1.4.1-beta.1", "1.5.0", "2.0.0-rc.1"]);
        let resolve = |version, track, include_prerelease| {
            picked(resolve_version_among(
                "acme/app",
                &versions,
                version,
                track,
                Candidates { include_prerelease, ..Candidates::default() },
            ))
        };
        assert_eq!(picked(resolve_version("acme/app", &versions, None, None)), "1.5.0", "latest");
        assert_eq!(resolve(None, None, true), "2.0.0-rc.1");
        assert_eq!(resolve(None, Some("1.4"), false), "1.4.0");
        assert_eq!(resolve(None, Some("1.4"), true), "1.4.1-beta.1");
        assert_eq!(resolve(Some("^1"), None, true), "1.5.0");
        assert_eq!(resolve(Some(">=2.0.0-rc.1"), None, false), "2.0.0-rc.1", "a range naming it");
        assert_eq!(resolve(Some("2.0.0-rc.1"), None, false), "2.0.0-rc.1", "exact");
        let only = resolve(Some("2"), None, false);
        assert!(only.starts_with("no-matching-version ") && only.contains("includePrerelease"), "{only}");
        // A released version outranks its prereleases.
        let versions = rows(&["2.0.0-rc.1", "2.0.0"]);
        assert_eq!(
            picked(resolve_version_among(
                "acme/app",
                &versions,
                None,
                None,
                Candidates { include_prerelease: true, ..Candidates::default() }
            )),
            "2.0.0"
        );
    }

    #[test]
    fn yanked_and_quarantined_versions_are_skipped_and_an_exact_one_is_refused() {
        let mut versions = rows(&["1.0.0", "1.1.0", "1.2.0"]);
        versions[2].yanked = true;
        versions[1].quarantined = true;
        assert_eq!(picked(resolve_version("acme/app", &versions, None, None)), "1.0.0");
        assert!(picked(resolve_version("acme/app", &versions, Some("1.2.0"), None)).starts_with("version-yanked"));
        assert!(picked(resolve_version("acme/app", &versions, Some("1.1.0"), None)).starts_with("version-quarantined"));
        assert!(picked(resolve_version("acme/app", &versions, Some("^1.1"), None)).starts_with("version-quarantined"));
    }

    #[test]
    fn lines_follow_the_caret_rule() {
        let line = |s| Line::of(&v(s));
        assert_eq!(line("1.0.1"), line("1.9.0"));
        assert_ne!(line("1.9.0"), line("2.0.0"));
        assert_eq!(line("2.0.0-rc.1"), line("2.3.0"));
        assert_eq!(line("0.3.1"), line("0.3.9"));
        assert_ne!(line("0.3.9"), line("0.4.0"));
        assert_eq!(line("0.0.1"), line("0.0.2"));
        assert_eq!((line("1.2.3").to_string(), line("0.3.1").to_string()), ("1.x".into(), "0.3.x".into()));
    }

    #[test]
    fn an_upgrade_without_a_version_stays_on_its_major_version() {
        let versions = rows(&["1.0.1", "1.2.0", "1.3.0-beta.1", "2.0.0", "2.1.0-rc.1"]);
        let upgrade =
            |from: &str, request: UpgradeRequest| picked(upgrade_target("acme/app", &versions, &v(from), &request));
        assert_eq!(upgrade("1.0.1", UpgradeRequest::default()), "1.2.0");
        assert_eq!(upgrade("1.0.1", UpgradeRequest { include_prerelease: true, ..Default::default() }), "1.3.0-beta.1");
        assert_eq!(upgrade("1.0.1", UpgradeRequest { allow_major: true, ..Default::default() }), "2.0.0");
        assert_eq!(
            upgrade("1.0.1", UpgradeRequest { allow_major: true, include_prerelease: true, ..Default::default() }),
            "2.1.0-rc.1"
        );
        // Nothing newer on the line: 409, naming the major upgrade there is.
        let none = upgrade("1.2.0", UpgradeRequest::default());
        assert!(
            none.starts_with("no-newer-version ") && none.contains("2.0.0 is a major upgrade: set allowMajor"),
            "{none}"
        );
        let none = upgrade("2.0.0", UpgradeRequest { allow_major: true, ..Default::default() });
        assert!(none.starts_with("no-newer-version ") && !none.contains("allowMajor"), "{none}");
        // Never a downgrade, even with allowDowngrade.
        let none = upgrade("2.0.0", UpgradeRequest { allow_downgrade: true, ..Default::default() });
        assert!(none.starts_with("no-newer-version "), "{none}");
        // 0.x: the minor is the line.
        let versions = rows(&["0.3.1", "0.3.4", "0.4.0"]);
        let upgrade = |request: UpgradeRequest| picked(upgrade_target("acme/app", &versions, &v("0.3.1"), &request));
        assert_eq!(upgrade(UpgradeRequest::default()), "0.3.4");
        assert_eq!(upgrade(UpgradeRequest { allow_major: true, ..Default::default() }), "0.4.0");
    }

    #[test]
    fn an_upgrade_naming_another_major_version_needs_allow_major() {
        let versions = rows(&["1.0.1", "1.2.0", "2.0.0", "3.0.0-rc.1"]);
        let upgrade = |from: &str, version: Option<&str>, track: Option<&str>, flags: (bool, bool)| {
            let request = UpgradeRequest {
                version: version.map(Into::into),
                track: track.map(Into::into),
                allow_downgrade: flags.0,
                allow_major: flags.1,
                include_prerelease: false,
            };
            picked(upgrade_target("acme/app", &versions, &v(from), &request))
        };
        for (version, track) in [(Some("2.0.0"), None), (None, Some("2")), (Some(">=1.0.0"), None)] {
            let refused = upgrade("1.0.1", version, track, (false, false));
            assert!(refused.starts_with("major-upgrade-refused ") && refused.contains("allowMajor"), "{refused}");
            assert_eq!(upgrade("1.0.1", version, track, (false, true)), "2.0.0");
        }
        assert_eq!(upgrade("1.0.1", Some("^1"), None, (false, false)), "1.2.0");
        assert_eq!(upgrade("1.0.1", Some("3.0.0-rc.1"), None, (false, true)), "3.0.0-rc.1", "exact prerelease");
        // Down: allowDowngrade, and across a major version allowMajor too.
        assert!(upgrade("1.2.0", Some("1.0.1"), None, (false, false)).starts_with("downgrade-refused "));
        assert_eq!(upgrade("1.2.0", Some("1.0.1"), None, (true, false)), "1.0.1");
        assert!(upgrade("2.0.0", Some("1.2.0"), None, (false, true)).starts_with("downgrade-refused "));
        assert!(upgrade("2.0.0", Some("1.2.0"), None, (true, false)).starts_with("major-upgrade-refused "));
        assert_eq!(upgrade("2.0.0", Some("1.2.0"), None, (true, true)), "1.2.0");
        assert!(upgrade("1.2.0", Some("1.2.0"), None, (true, true)).starts_with("same-version "));
        assert!(upgrade("1.2.0", None, Some("1"), (false, false)).starts_with("same-version "));
    }
}
