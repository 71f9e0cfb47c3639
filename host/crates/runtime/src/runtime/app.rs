//! What calls run: a loaded component, an app version bound to its manifest and
//! limits, and the tenant's installation it runs for.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cache::CacheOutcome;
use crate::egress::{AppEgress, InstallationEgress};
use crate::sandbox::HostState;
use crate::world;
use kiosk_domain::digest::Digest;
use kiosk_domain::kv::KvScope;
use kiosk_domain::limits::CallLimits;
use kiosk_domain::manifest::Manifest;

/// A component compiled and linked, ready to instantiate.
pub struct LoadedComponent {
    pub digest: Digest,
    /// Whether it came from the disk cache.
    pub outcome: CacheOutcome,
    /// The `kiosk:app` world version it was built against (read from its imports).
    pub world: semver::Version,
    pub(super) pre: Pre,
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
    /// `true` (`holding_effects`): a completed call's effects are handed back in
    /// `CallOutcome::held` instead of being committed — a lifecycle hook's, which the core
    /// commits in the transaction that writes the installation, or not at all.
    pub hold_effects: bool,
}

impl Installation {
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), id: id.into(), call_id: None, log_as: None, egress: None, hold_effects: false }
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

    /// The same installation, its calls' effects held for the caller to commit
    /// (`CallOutcome::held`) instead of committed when the call ends.
    pub fn holding_effects(mut self) -> Self {
        self.hold_effects = true;
        self
    }

    /// The key-value and log scope of this installation.
    pub fn scope(&self) -> KvScope {
        KvScope { tenant: self.tenant.clone(), installation: self.id.clone() }
    }
}
