//! Admission control: who may start a call now. Every call takes a sandbox slot (one of
//! the pooling allocator's instance slots) for its whole life; a tenant's calls are also
//! bounded in number at once and per second, and no tenant may hold more than its share
//! of the slots, so one tenant cannot starve the others however its guests behave.
//!
//! Refusals carry how long to wait before retrying (`Retry-After`). Nothing here blocks a
//! thread: waiting for a slot is an async wait bounded by `slot-wait-ms`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[admission]` of the operator config. Each default is in `Default` with its reason.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdmissionSettings {
    /// Calls one tenant may have running (or waiting for a slot) at once; more get 429.
    pub tenant_max_concurrent: u32,
    /// Share of the sandbox slots one tenant may hold, in percent (1-100).
    pub tenant_slot_share_percent: u32,
    /// Calls per second one tenant may start (sustained); more get 429.
    pub tenant_calls_per_second: u32,
    /// Calls one tenant may start in a burst above the sustained rate.
    pub tenant_burst: u32,
    /// How long a call waits for a free sandbox slot before it is refused with 503.
    pub slot_wait_ms: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            // Interactive marketplace calls are short; 32 at once is a busy tenant.
            tenant_max_concurrent: 32,
            // Half the slots: even a tenant allowed many calls leaves the rest to others.
            tenant_slot_share_percent: 50,
            // Two cores run one to two thousand HTTP invokes per second in all; a tenant
            // past 1,000/s is a runaway client (concurrency and share guard the rest).
            tenant_calls_per_second: 1_000,
            // Absorbs a batch job's fan-out without tripping the rate.
            tenant_burst: 2_000,
            // Long enough to ride out a spike, short enough that clients retry elsewhere.
            slot_wait_ms: 2_000,
        }
    }
}

impl AdmissionSettings {
    /// Checks that the settings admit anything at all.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("tenant-max-concurrent", self.tenant_max_concurrent),
            ("tenant-calls-per-second", self.tenant_calls_per_second),
            ("tenant-burst", self.tenant_burst),
        ] {
            if value == 0 {
                return Err(format!("admission.{name} must be greater than 0"));
            }
        }
        if !(1..=100).contains(&self.tenant_slot_share_percent) {
            return Err(format!(
                "admission.tenant-slot-share-percent is {} but must be 1-100",
                self.tenant_slot_share_percent
            ));
        }
        if self.slot_wait_ms > 60_000 {
            return Err(format!("admission.slot-wait-ms is {} but may be at most 60000", self.slot_wait_ms));
        }
        Ok(())
    }
}

/// Who asks for the call: tenants' API calls are rate limited and bounded per tenant;
/// the host's own calls (usage collection) only take a slot, and have their own bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Tenant,
    Host,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("tenant {tenant} has {limit} calls running, its limit; retry after {retry_after_s} s")]
    TenantConcurrency { tenant: String, limit: u32, retry_after_s: u64 },
    #[error("tenant {tenant} exceeded its rate of {per_second} calls per second; retry after {retry_after_s} s")]
    TenantRate { tenant: String, per_second: u32, retry_after_s: u64 },
    #[error(
        "no sandbox slot became free within {waited_ms} ms ({slots} slots, all busy); retry after {retry_after_s} s"
    )]
    NoSlot { slots: u32, waited_ms: u64, retry_after_s: u64 },
}

impl Refusal {
    /// Seconds the caller should wait (`Retry-After`).
    pub fn retry_after_s(&self) -> u64 {
        match self {
            Self::TenantConcurrency { retry_after_s, .. }
            | Self::TenantRate { retry_after_s, .. }
            | Self::NoSlot { retry_after_s, .. } => *retry_after_s,
        }
    }
}

#[derive(Debug)]
struct TenantState {
    active: u32,
    tokens: f64,
    refilled: Instant,
}

/// Admission control for one runtime.
#[derive(Debug)]
pub struct Admission {
    settings: AdmissionSettings,
    slots: Arc<Semaphore>,
    total_slots: u32,
    tenant_cap: u32,
    tenants: Arc<Mutex<HashMap<String, TenantState>>>,
    activity: Arc<Activity>,
}

/// Tenants' calls admitted: running now (or waiting for a slot), and started in all.
#[derive(Debug, Default)]
struct Activity {
    running: AtomicUsize,
    started: AtomicU64,
}

/// A reading of tenants' calls, for background work that yields to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantCalls {
    /// Running now, or waiting for a slot.
    pub running: usize,
    /// Admitted since the runtime started (compare two readings: calls came in between).
    pub started: u64,
}

/// A held admission: a sandbox slot and, for tenant calls, one of the tenant's places.
/// Dropping it frees both.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _tenant: Option<TenantPlace>,
}

#[derive(Debug)]
struct TenantPlace {
    tenant: String,
    tenants: Arc<Mutex<HashMap<String, TenantState>>>,
    activity: Arc<Activity>,
}

impl Drop for TenantPlace {
    fn drop(&mut self) {
        self.activity.running.fetch_sub(1, Ordering::Relaxed);
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = tenants.get_mut(&self.tenant) {
            state.active = state.active.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Admission over `slots` sandbox slots.
    pub fn new(settings: AdmissionSettings, slots: u32) -> Self {
        let share = (u64::from(slots) * u64::from(settings.tenant_slot_share_percent) / 100).max(1);
        let tenant_cap = settings.tenant_max_concurrent.min(u32::try_from(share).unwrap_or(u32::MAX));
        Self {
            settings,
            slots: Arc::new(Semaphore::new(slots as usize)),
            total_slots: slots,
            tenant_cap,
            tenants: Arc::default(),
            activity: Arc::default(),
        }
    }

    /// Tenants' calls now (the host's own calls are not counted).
    pub fn tenant_calls(&self) -> TenantCalls {
        TenantCalls {
            running: self.activity.running.load(Ordering::Relaxed),
            started: self.activity.started.load(Ordering::Relaxed),
        }
    }

    /// The most calls one tenant may have at once (its concurrency limit or slot share).
    pub fn tenant_cap(&self) -> u32 {
        self.tenant_cap
    }

    /// Calls of `tenant` running or waiting for a slot now.
    pub fn active(&self, tenant: &str) -> u32 {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).map_or(0, |s| s.active)
    }

    /// Sandbox slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Admits one call of `tenant`, waiting at most `slot-wait-ms` for a sandbox slot.
    pub async fn admit(&self, tenant: &str, origin: Origin) -> Result<Permit, Refusal> {
        let place = match origin {
            Origin::Tenant => Some(self.take_tenant_place(tenant)?),
            Origin::Host => None,
        };
        let wait = Duration::from_millis(self.settings.slot_wait_ms);
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Permit { _slot: slot, _tenant: place }),
            // Timed out (or the semaphore was closed, which this module never does):
            // the tenant place is given back when `place` drops.
            _ => Err(Refusal::NoSlot {
                slots: self.total_slots,
                waited_ms: self.settings.slot_wait_ms,
                retry_after_s: 1,
            }),
        }
    }

    fn take_tenant_place(&self, tenant: &str) -> Result<TenantPlace, Refusal> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let burst = f64::from(self.settings.tenant_burst);
        let rate = f64::from(self.settings.tenant_calls_per_second);
        let state =
            tenants.entry(tenant.to_string()).or_insert(TenantState { active: 0, tokens: burst, refilled: now });
        if state.active >= self.tenant_cap {
            return Err(Refusal::TenantConcurrency {
                tenant: tenant.to_string(),
                limit: self.tenant_cap,
                retry_after_s: 1,
            });
        }
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(burst);
        state.refilled = now;
        if state.tokens < 1.0 {
            let wait_s = ((1.0 - state.tokens) / rate).ceil().max(1.0);
            return Err(Refusal::TenantRate {
                tenant: tenant.to_string(),
                per_second: self.settings.tenant_calls_per_second,
                // Bounded by 1/rate ≤ 1 s, so the cast cannot truncate meaningfully.
                retry_after_s: wait_s as u64,
            });
        }
        state.tokens -= 1.0;
        state.active += 1;
        // Idle tenants are forgotten so the map stays as small as the active set.
        if tenants.len() > 10_000 {
            tenants.retain(|_, s| s.active > 0 || s.tokens < burst);
        }
        self.activity.running.fetch_add(1, Ordering::Relaxed);
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        Ok(TenantPlace { tenant: tenant.to_string(), tenants: self.tenants.clone(), activity: self.activity.clone() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings() -> AdmissionSettings {
        AdmissionSettings {
            tenant_max_concurrent: 2,
            tenant_slot_share_percent: 100,
            tenant_calls_per_second: 1_000,
            tenant_burst: 1_000,
            slot_wait_ms: 50,
        }
    }

    #[tokio::test]
    async fn a_tenant_over_its_concurrency_gets_a_retry_after_and_others_still_get_in() {
        let admission = Admission::new(settings(), 4);
        let a1 = admission.admit("a", Origin::Tenant).await.unwrap();
        let _a2 = admission.admit("a", Origin::Tenant).await.unwrap();
        let refused = admission.admit("a", Origin::Tenant).await.unwrap_err();
        assert!(matches!(refused, Refusal::TenantConcurrency { limit: 2, .. }), "{refused}");
        assert_eq!(refused.retry_after_s(), 1);
        let _b = admission.admit("b", Origin::Tenant).await.unwrap();
        drop(a1);
        let _a3 = admission.admit("a", Origin::Tenant).await.unwrap();
    }

    #[tokio::test]
    async fn tenants_calls_are_counted_and_the_hosts_are_not() {
        let admission = Admission::new(settings(), 4);
        assert_eq!(admission.tenant_calls(), TenantCalls { running: 0, started: 0 });
        let host = admission.admit("a", Origin::Host).await.unwrap();
        let a = admission.admit("a", Origin::Tenant).await.unwrap();
        let b = admission.admit("b", Origin::Tenant).await.unwrap();
        assert_eq!(admission.tenant_calls(), TenantCalls { running: 2, started: 2 });
        // A refused call is not counted.
        let _a2 = admission.admit("a", Origin::Tenant).await.unwrap();
        assert!(admission.admit("a", Origin::Tenant).await.is_err());
        assert_eq!(admission.tenant_calls(), TenantCalls { running: 3, started: 3 });
        drop((a, b, host));
        assert_eq!(admission.tenant_calls(), TenantCalls { running: 1, started: 3 });
    }

    #[tokio::test]
    async fn no_tenant_holds_more_than_its_share_of_the_slots() {
        let admission = Admission::new(
            AdmissionSettings { tenant_max_concurrent: 100, tenant_slot_share_percent: 25, ..settings() },
            8,
        );
        assert_eq!(admission.tenant_cap(), 2);
    }

    #[tokio::test]
    async fn a_full_pool_refuses_after_the_bounded_wait_and_frees_the_tenant_place() {
        let admission = Admission::new(AdmissionSettings { tenant_max_concurrent: 1, ..settings() }, 1);
        let held = admission.admit("a", Origin::Tenant).await.unwrap();
        let refused = admission.admit("b", Origin::Tenant).await.unwrap_err();
        assert!(matches!(refused, Refusal::NoSlot { slots: 1, waited_ms: 50, .. }), "{refused}");
        drop(held);
        // b's place was given back with the refusal: b may call again now.
        let _b = admission.admit("b", Origin::Tenant).await.unwrap();
    }

    #[tokio::test]
    async fn the_rate_limit_refuses_beyond_the_burst() {
        let admission = Admission::new(
            AdmissionSettings { tenant_calls_per_second: 1, tenant_burst: 3, tenant_max_concurrent: 10, ..settings() },
            16,
        );
        for _ in 0..3 {
            drop(admission.admit("a", Origin::Tenant).await.unwrap());
        }
        let refused = admission.admit("a", Origin::Tenant).await.unwrap_err();
        assert!(matches!(refused, Refusal::TenantRate { per_second: 1, .. }), "{refused}");
        assert!(refused.retry_after_s() >= 1);
        // Host calls are not rate limited.
        drop(admission.admit("a", Origin::Host).await.unwrap());
    }
}
