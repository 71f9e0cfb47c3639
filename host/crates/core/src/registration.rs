//! Registration and the compile gate: app versions registered from a registry the
//! operator allows (or an OCI layout the operator chose), verified, compiled and checked
//! to run under the operator's limits before they are recorded; and the loading of
//! registered versions into runnable form, compiled once and then kept.

use std::sync::Arc;

use serde::Serialize;

use kiosk_distribution::artifact::{ArtifactError, ArtifactRef, BlobSource, VerifiedArtifact, fetch_verified};
use kiosk_distribution::registry::RegistrySettings;
use kiosk_domain::digest::Digest;
use kiosk_domain::ids::AppId;
use kiosk_domain::manifest::Manifest;
use kiosk_runtime::error::{CallErrorKind, LoadError};
use kiosk_runtime::runtime::{AppVersion, Installation, LoadedComponent};
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::{InstallationRow, VersionRow};

use crate::call_logs::call_failure;
use crate::error::{Class, Failure, Kind};
use crate::kiosk::{Kiosk, MAX_UNRUNNABLE};

type Result<T, E = Failure> = std::result::Result<T, E>;

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

impl Kiosk {
    /// Settings for `host`: the operator API's entry, else the config file's; `None`
    /// if the operator configured neither.
    pub async fn registry_settings(&self, host: &str) -> Result<Option<RegistrySettings>> {
        let Some(row) = self.store.registries().await?.into_iter().find(|r| r.host.eq_ignore_ascii_case(host)) else {
            return Ok(self.config.configured_registry(host).cloned());
        };
        self.settings_from_row(row).map(Some)
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
            .map_err(|detail| Failure::unprocessable(Kind::InvalidReference, detail).field("reference"))?;
        let (host, repository, tag) = match &parsed {
            ArtifactRef::Layout { .. } => {
                return Err(Failure::unprocessable(
                    Kind::LayoutNotAllowed,
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
        let not_allowed = |detail: String| Failure::unprocessable(Kind::RegistryNotAllowed, detail).field("reference");
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
        self.loaded().lock().unwrap_or_else(|p| p.into_inner()).insert((app.to_string(), tag.to_string()), loaded);
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
                let registry = matches!(
                    failure.kind,
                    Kind::RegistryNotAllowed | Kind::RegistryRefused | Kind::RegistryUnavailable
                );
                let outcome = if registry { "unavailable" } else { "refused" };
                metrics::counter!("kiosk_registry_pulls_total", "outcome" => outcome).increment(1);
                if outcome == "refused" {
                    metrics::counter!("kiosk_verification_failures_total", "reason" => failure.kind.as_str())
                        .increment(1);
                }
                return Err(failure);
            }
        };
        if existing.is_some() {
            return Err(Failure::conflict(Kind::VersionExists, format!("{app}@{tag} is already registered")));
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
            Failure::unprocessable(Kind::ComponentNotRunnable, format!("{app}@{tag}: {detail}")).field("reference")
        };
        // One registration compiles at a time, so registrations hold at most one of the
        // `MAX_LOADS` places and tenants' first calls always have the other.
        let _registering = self.registering().acquire().await.map_err(Failure::internal)?;
        // A component refused under these very limits is refused again without being
        // compiled or instantiated; other limits (the operator changed them) try again.
        let limits = self.registration_limits(app, artifact.manifest.limits).await?;
        let probe_key = format!("{} {limits:?}", artifact.component_digest);
        if let Some(why) = self.unrunnable().lock().unwrap_or_else(|p| p.into_inner()).get(&probe_key) {
            return Err(not_runnable(format!("{why} (refused before: not compiled again until Kiosk restarts)")));
        }
        let component = self
            .load_component(artifact.component_digest.as_str(), artifact.component.clone())
            .await
            .map_err(|f| if f.kind == Kind::ComponentNotRunnable { not_runnable(f.detail) } else { f })?;
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
        let refused = |detail: String| Failure::unprocessable(Kind::ComponentNotRunnable, detail);
        if let Some(why) = self.unrunnable().lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Err(refused(format!("{why} (refused before: not compiled again until Kiosk restarts)")));
        }
        // The permit goes with the blocking task: a caller that gives up (a dropped
        // request) does not free a place while its compilation still runs.
        let permit = self.loads().clone().acquire_owned().await.map_err(Failure::internal)?;
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
        let mut unrunnable = self.unrunnable().lock().unwrap_or_else(|p| p.into_inner());
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
            return Err(Failure::conflict(Kind::VersionExists, format!("{app}@{tag} is already registered")));
        }
        let manifest_json = String::from_utf8_lossy(&artifact.manifest_bytes).into_owned();
        self.store
            .register_version_with_icon(
                &artifact.manifest,
                &manifest_json,
                artifact.digest.as_str(),
                artifact.component_digest.as_str(),
                &artifact.component,
                &artifact.signers.manifest.fingerprint,
                reference,
                crate::catalog_meta::new_icon(artifact).as_ref(),
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
        if let Some(app) = self.loaded().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(app.clone());
        }
        let manifest = Manifest::parse(row.manifest.as_bytes(), &HOST_API_VERSION)
            .map_err(|e| Failure::unprocessable(Kind::HostApiMismatch, e.to_string()).field("hostApi"))?;
        let bytes = self
            .store
            .component(&row.component_digest)
            .await?
            .ok_or_else(|| Failure::internal(format!("component {} missing", row.component_digest)))?;
        let loaded = self.load_component(&row.component_digest, bytes).await?;
        let app = self.runtime.prepare(manifest, loaded);
        self.loaded().lock().unwrap_or_else(|p| p.into_inner()).insert(key, app.clone());
        Ok(app)
    }

    /// The version an installation runs, ready to call.
    pub async fn installed_app(&self, row: &InstallationRow) -> Result<AppVersion> {
        // A version's row never changes what runs (its tag is pinned to its digest; yank
        // and quarantine stop new installs, never running installations), so a version
        // loaded once is called without reading its row again. An upgrade moves the
        // installation to another key.
        let key = (row.app.clone(), row.version.clone());
        if let Some(app) = self.loaded().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(app.clone());
        }
        let version = self
            .store
            .version(&row.app, &row.version)
            .await?
            .ok_or_else(|| Failure::internal(format!("installed version {}@{} missing", row.app, row.version)))?;
        self.app_version(&version).await
    }
}

/// The failure for a refused artifact. Registry failures are Kiosk's words
/// (`RemoteFailure`): a remote body or error text never reaches the answer.
pub fn artifact_failure(e: ArtifactError) -> Failure {
    let (class, kind) = match &e {
        ArtifactError::TagNotFound { .. } => (Class::NotFound, Kind::TagNotFound),
        ArtifactError::MovedTag { .. } => (Class::Conflict, Kind::MovedTag),
        ArtifactError::Signature(_) => (Class::Unprocessable, Kind::SignatureRefused),
        ArtifactError::Manifest(kiosk_domain::manifest::ManifestError::HostApi { .. }) => {
            (Class::Unprocessable, Kind::HostApiMismatch)
        }
        ArtifactError::Manifest(_) => (Class::Unprocessable, Kind::ManifestInvalid),
        ArtifactError::Icon(_) => (Class::Unprocessable, Kind::IconRefused),
        ArtifactError::Remote(r) if r.failure.is_policy() => (Class::Unprocessable, Kind::RegistryNotAllowed),
        ArtifactError::Remote(r) if r.failure.is_refusal() => (Class::Upstream, Kind::RegistryRefused),
        ArtifactError::Remote(_) | ArtifactError::Source { .. } => (Class::Upstream, Kind::RegistryUnavailable),
        _ => (Class::Unprocessable, Kind::ArtifactRefused),
    };
    Failure::new(class, kind, e.to_string()).field("reference")
}
