//! Registry watches: the operator names a repository (`host/repository`) and the app its
//! tags are versions of; a poller in every replica lists the repository's tags when the
//! watch is due and registers each new semver tag through the core's register path
//! (`Kiosk::register_from_registry`: the operator's allowlist, then the artifact and its
//! signatures verified exactly as for a partner's registration).
//!
//! One replica polls a watch at a time: a poll takes the watch's lease in the database
//! (`UPDATE … WHERE next_poll_ms <= now AND lease_until < now`); a replica dying
//! mid-poll leaves a lease that expires. Every tag a poll takes gets an outcome:
//! registered; refused for good with the reason an API registration would give (a bad
//! signature is listed on the watch and never retried); or, after a transient failure
//! (the registry unreachable or answering 429/5xx), retried at later polls with
//! exponential backoff, at most `TAG_ATTEMPTS` times. Tags that are not semantic versions
//! are ignored and only counted (a repository's `latest`, `sha-…` tags are not versions,
//! and recording them would let a repository fill the table).
//!
//! After a poll registered versions, the automatic-upgrade pass runs for the app
//! (`upgrades::run_pass`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kiosk_distribution::artifact::ArtifactRef;
use kiosk_distribution::registry::{Registry, TagsError};
use kiosk_domain::ids::AppId;
use kiosk_domain::metering::now_ms;
use kiosk_store::{NewWatch, StoreError, TagOutcome, TagOutcomeRow, WatchPoll, WatchRow};

use crate::error::{Class, Failure, Kind};
use crate::lifecycle::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// The interval of a watch created without one, in seconds (at least the operator's
/// minimum): a release reaches the catalog within five minutes, and a registry sees one
/// tag listing per watch every five minutes.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 300;
/// Watches one Kiosk keeps: each costs a tag listing per interval.
pub const MAX_WATCHES: i64 = 1000;
/// Tags one listing reads (pages of `registry::TAGS_PAGE`); more are not looked at.
pub const MAX_TAGS_LISTED: usize = 10_000;
/// Tags one poll registers; the rest are taken by the next poll, due at once.
pub const TAGS_PER_POLL: usize = 20;
/// Attempts at a tag that keeps failing transiently before it is recorded as refused.
pub const TAG_ATTEMPTS: i64 = 6;
/// How long a replica holds a watch while polling it. A poll stops taking tags after
/// half of it, so it ends well within (every registry request is bounded by `[transfer]`).
pub const LEASE_MS: i64 = 15 * 60 * 1000;
/// Polls one replica runs at once.
pub const PARALLELISM: usize = 4;
/// Tag outcomes a watch's representation shows (the most recent).
pub const RECENT_OUTCOMES: i64 = 50;
/// The longest backoff between polls of a watch whose registry keeps failing, and
/// between attempts at a tag.
pub const MAX_BACKOFF_MS: i64 = 6 * 60 * 60 * 1000;
/// A tag outcome's detail is at most this long (signature refusals list each signature).
const DETAIL_CAP: usize = 2048;

/// What a watch creation asks for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// `host/repository`.
    pub reference: String,
    /// `partner/name`.
    pub app: String,
    pub interval_seconds: Option<u64>,
}

/// What one poll did.
#[derive(Debug, Clone, Default)]
pub struct Polled {
    pub registered: Vec<String>,
    pub refused: Vec<String>,
    pub retrying: Vec<String>,
    /// Why the tags could not be listed.
    pub error: Option<String>,
}

impl Kiosk {
    /// Watches by id after `after`, at most `limit`.
    pub async fn watches(&self, after: &str, limit: i64) -> Result<Vec<WatchRow>> {
        Ok(self.store.watches(after, limit).await?)
    }

    /// The `limit` most recent tag outcomes of watch `id`.
    pub async fn tag_outcomes(&self, id: &str, limit: i64) -> Result<Vec<TagOutcomeRow>> {
        Ok(self.store.tag_outcomes(id, limit).await?)
    }

    /// Stops watching (the versions it registered stay).
    pub async fn delete_watch(&self, id: &str, actor: &str) -> Result<()> {
        if !self.store.delete_watch(id, actor).await? {
            return Err(Failure::not_found(format!("no watch {id:?}")));
        }
        Ok(())
    }

    /// Creates a watch: the reference is `host/repository`, the app `partner/name` of an
    /// existing partner, the interval within the operator's minimum and a day. The
    /// operator's registry allowlist applies as for the partner's own registrations
    /// (`registry-not-allowed`, before any network I/O). Due at once.
    pub async fn create_watch(&self, request: WatchRequest, actor: &str) -> Result<WatchRow> {
        let reference = request.reference.trim();
        if reference.starts_with("oci-layout:") {
            return Err(Failure::unprocessable(
                Kind::LayoutNotAllowed,
                "oci-layout: directories are an operator's source for one registration (CLI, demo seed), not a \
                 repository to watch: name host/repository on a registry the operator configured",
            )
            .field("reference"));
        }
        let (host, repository) = ArtifactRef::parse_repository(reference)
            .map_err(|detail| Failure::unprocessable(Kind::InvalidReference, detail).field("reference"))?;
        let app = AppId::parse(&request.app)
            .map_err(|e| Failure::unprocessable(Kind::InvalidApp, e.to_string()).field("app"))?;
        let min = self.config.watch.min_interval_seconds;
        let max = crate::config::WatchSettings::MAX_SECONDS;
        let interval = request.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS.max(min));
        if !(min..=max).contains(&interval) {
            return Err(Failure::unprocessable(
                Kind::InvalidInterval,
                format!("intervalSeconds {interval} is out of range: use {min}-{max}"),
            )
            .field("intervalSeconds"));
        }
        if !self.store.partner_exists(app.partner()).await? {
            return Err(Failure::not_found(format!("no partner {:?}", app.partner())).field("app"));
        }
        self.allowed_registry(app.partner(), &host, &repository).await?;
        let watch = NewWatch {
            id: uuid::Uuid::new_v4().to_string(),
            host,
            repository,
            app: app.to_string(),
            interval_ms: (interval * 1000) as i64,
        };
        match self.store.create_watch(&watch, MAX_WATCHES, now_ms() as i64, actor).await? {
            Ok(()) => {}
            Err(existing) if existing.is_empty() => {
                return Err(Failure::conflict(
                    Kind::TooManyWatches,
                    format!("{MAX_WATCHES} watches exist, the most Kiosk keeps: delete one first"),
                ));
            }
            Err(existing) => {
                return Err(Failure::conflict(
                    Kind::WatchExists,
                    format!(
                        "watch {existing} already registers the tags of {}/{} as {}",
                        watch.host, watch.repository, watch.app
                    ),
                )
                .field("reference"));
            }
        }
        self.watch(&watch.id).await
    }

    pub async fn watch(&self, id: &str) -> Result<WatchRow> {
        self.store.watch(id).await?.ok_or_else(|| Failure::not_found(format!("no watch {id:?}")))
    }
}

/// Whether a failure of a registration may go away by itself: the registry was
/// unreachable, busy or refused the request (credentials being fixed), the tag vanished
/// between listing and fetching, or Kiosk itself could not write.
fn transient(f: &Failure) -> bool {
    matches!(f.class, Class::Upstream | Class::Unavailable | Class::RateLimited | Class::Internal)
        || f.kind == Kind::TagNotFound
}

/// Exponential backoff from `base` after `failures` failures, at most `MAX_BACKOFF_MS`
/// (and never below `base`).
fn backoff(base: i64, failures: i64) -> i64 {
    base.saturating_mul(1_i64 << (failures - 1).clamp(0, 20)).min(MAX_BACKOFF_MS.max(base))
}

/// Takes the lease of watch `id` for `replica` if it is due and nobody holds it.
pub async fn claim(state: &Kiosk, id: &str, replica: &str) -> Result<bool, StoreError> {
    state.store.lease_watch(id, replica, now_ms() as i64, LEASE_MS).await
}

/// Polls a watch whose lease `replica` holds (`claim`): checks the allowlist, lists the
/// tags, registers the new semver ones, records each outcome, schedules the next poll
/// and gives the lease back; then, if versions were registered, runs the automatic
/// upgrades of the app. `None` if the watch is gone.
pub async fn poll(state: &Kiosk, id: &str, replica: &str) -> Result<Option<Polled>, StoreError> {
    let Some(watch) = state.store.watch(id).await? else { return Ok(None) };
    let started = now_ms() as i64;
    let mut polled = Polled::default();
    let listed = list(state, &watch).await;
    let finish = |next_poll_ms, failures, error: Option<String>, tags, ignored| WatchPoll {
        next_poll_ms,
        failures,
        error,
        tags,
        ignored,
    };
    let done = match listed {
        Err((failure, is_transient)) => {
            let failures = if is_transient { watch.failures + 1 } else { 0 };
            let wait = if is_transient { backoff(watch.interval_ms, failures) } else { watch.interval_ms };
            tracing::warn!(watch = %watch.id, error = %failure.detail, failures, "watch could not list tags");
            polled.error = Some(failure.detail.clone());
            finish(started.saturating_add(wait), failures, Some(failure.detail), 0, 0)
        }
        Ok(list) => {
            let tags = list.tags.len() as i64;
            let versions: HashSet<String> =
                state.store.versions(&watch.app).await?.into_iter().map(|v| v.version).collect();
            let recorded = state.store.recorded_tags(&watch.id).await?;
            let mut semver: Vec<(semver::Version, String)> = list
                .tags
                .iter()
                .filter_map(|t| semver::Version::parse(t).ok().filter(|v| v.to_string() == *t).map(|v| (v, t.clone())))
                .collect();
            let ignored = (list.tags.len() - semver.len() + list.invalid) as i64;
            semver.sort();
            let mut pending: Vec<(String, i64)> = semver
                .into_iter()
                .filter(|(_, tag)| !versions.contains(tag))
                .filter_map(|(_, tag)| match recorded.get(&tag) {
                    None => Some((tag, 0)),
                    Some(r) if r.outcome == TagOutcome::Retrying && r.retry_ms <= started => Some((tag, r.attempts)),
                    Some(_) => None,
                })
                .collect();
            let left = pending.len() > TAGS_PER_POLL;
            pending.truncate(TAGS_PER_POLL);
            let mut cut_short = false;
            for (tag, attempts) in pending {
                if now_ms() as i64 > started + LEASE_MS / 2 {
                    cut_short = true;
                    break;
                }
                if !take_tag(state, &watch, replica, &tag, attempts, &mut polled).await? {
                    // The lease is no longer ours (the watch went, or the poll ran past it).
                    return Ok(Some(polled));
                }
            }
            let next = if left || cut_short { now_ms() as i64 } else { started.saturating_add(watch.interval_ms) };
            let note = list.missing.then(|| {
                format!("the registry does not know {}/{} (nothing pushed yet)", watch.host, watch.repository)
            });
            finish(next, 0, note, tags, ignored)
        }
    };
    state.store.finish_poll(&watch.id, replica, now_ms() as i64, &done).await?;
    if !polled.registered.is_empty() {
        crate::upgrades::run_pass(state, replica, Some(&watch.app)).await?;
    }
    Ok(Some(polled))
}

/// The watch's tags, if the allowlist still lets its partner in: `Err((failure,
/// transient))` otherwise.
async fn list(state: &Kiosk, watch: &WatchRow) -> Result<kiosk_distribution::registry::TagList, (Failure, bool)> {
    let app = AppId::parse(&watch.app).map_err(|e| (Failure::internal(e), false))?;
    let settings =
        state.allowed_registry(app.partner(), &watch.host, &watch.repository).await.map_err(|f| (f, false))?;
    let registry = Registry::new(&settings, state.config.transfer).map_err(|e| (Failure::internal(e), false))?;
    let source = registry.repository(&watch.repository);
    source.list_tags(MAX_TAGS_LISTED).await.map_err(|e| {
        let kind = match e.remote() {
            Some(r) if r.is_policy() => Kind::RegistryNotAllowed,
            Some(r) if r.is_refusal() => Kind::RegistryRefused,
            Some(_) => Kind::RegistryUnavailable,
            None if matches!(e, TagsError::TooLarge { .. }) => Kind::TagListTooLarge,
            None => Kind::TagListInvalid,
        };
        let transient = e.transient();
        (Failure::new(Class::Upstream, kind, e.to_string()), transient)
    })
}

/// Registers one tag and records its outcome; `false` if the lease was lost.
async fn take_tag(
    state: &Kiosk,
    watch: &WatchRow,
    replica: &str,
    tag: &str,
    attempts: i64,
    polled: &mut Polled,
) -> Result<bool, StoreError> {
    let actor = format!("watch:{}", watch.id);
    let Ok(app) = AppId::parse(&watch.app) else { return Ok(true) };
    let reference = format!("{}/{}:{tag}", watch.host, watch.repository);
    let now = now_ms() as i64;
    let attempts = attempts + 1;
    let capped = |text: &str| kiosk_domain::text::sanitize_capped(text, DETAIL_CAP);
    let row = match state.register_from_registry(app.partner(), app.name(), &reference, &actor).await {
        Ok(r) => {
            polled.registered.push(tag.to_string());
            TagOutcomeRow {
                tag: tag.to_string(),
                outcome: TagOutcome::Registered,
                problem: None,
                detail: format!("registered {}@{} ({}), signed by {}", r.app, r.version, r.digest, r.signer),
                attempts,
                retry_ms: 0,
                at_ms: now,
            }
        }
        // Registered meanwhile (through the API): nothing to record, the next poll skips it.
        Err(f) if f.kind == Kind::VersionExists => return Ok(true),
        Err(f) if transient(&f) && attempts < TAG_ATTEMPTS => {
            polled.retrying.push(tag.to_string());
            TagOutcomeRow {
                tag: tag.to_string(),
                outcome: TagOutcome::Retrying,
                problem: Some(f.kind.to_string()),
                detail: capped(&f.detail),
                attempts,
                retry_ms: now.saturating_add(backoff(watch.interval_ms, attempts)),
                at_ms: now,
            }
        }
        Err(f) => {
            polled.refused.push(tag.to_string());
            let detail = if transient(&f) {
                format!("gave up after {attempts} attempts: {}", f.detail)
            } else {
                f.detail.clone()
            };
            TagOutcomeRow {
                tag: tag.to_string(),
                outcome: TagOutcome::Refused,
                problem: Some(f.kind.to_string()),
                detail: capped(&detail),
                attempts,
                retry_ms: 0,
                at_ms: now,
            }
        }
    };
    state.store.record_tag(&watch.id, replica, &row, &actor).await
}

/// Claims every due watch it can (at most `PARALLELISM` polls running) and polls each
/// as a task of its own; the pass never waits for a poll. Returns how many it started.
pub async fn poll_due(
    state: &Arc<Kiosk>,
    places: &Arc<tokio::sync::Semaphore>,
    replica: &Arc<str>,
) -> Result<usize, StoreError> {
    let mut started = 0;
    for id in state.store.due_watches(now_ms() as i64, PARALLELISM as i64 * 4).await? {
        let Ok(place) = places.clone().try_acquire_owned() else { break };
        if !claim(state, &id, replica).await? {
            continue;
        }
        let (state, replica) = (state.clone(), replica.clone());
        tokio::spawn(async move {
            if let Err(e) = poll(&state, &id, &replica).await {
                tracing::warn!(watch = %id, error = %e, "watch poll failed");
            }
            drop(place);
        });
        started += 1;
    }
    Ok(started)
}

/// Runs `poll_due` until the process ends, every half of the operator's shortest watch
/// interval (between 250 ms and 5 s), so a watch is polled close to its due time.
pub fn spawn(state: Arc<Kiosk>) -> tokio::task::JoinHandle<()> {
    let replica: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let places = Arc::new(tokio::sync::Semaphore::new(PARALLELISM));
    let min = Duration::from_secs(state.config.watch.min_interval_seconds);
    let tick = (min / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = poll_due(&state, &places, &replica).await {
                tracing::warn!(error = %e, "watch pass failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_a_bound() {
        assert_eq!(backoff(1000, 1), 1000);
        assert_eq!(backoff(1000, 2), 2000);
        assert_eq!(backoff(1000, 4), 8000);
        assert_eq!(backoff(1000, 60), MAX_BACKOFF_MS);
        let day = 86_400_000;
        assert_eq!(backoff(day, 3), day, "never below the interval");
    }
}
