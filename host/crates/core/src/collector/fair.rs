//! Every tenant's share of the collector (issue 31, `[sandbox] tenant-collection-share`):
//! a pass takes its open windows round-robin over tenants — one window of each tenant in
//! turn, so one tenant with thousands of installations never puts another's windows
//! behind its own — and this replica never runs more of one tenant's collections at once
//! than its share of the `PARALLELISM` places (`places_of`). A tenant at its cap waits:
//! its windows are taken later in the pass, or by the next one when every tenant left is
//! at its cap for a whole tick (`collect_once`); the oldest first, so none is passed over
//! for ever.
//!
//! `Schedule` (one pass's order) and `Running` (this replica's collections by tenant) are
//! plain data; `Places` shares them between a pass and its collections: a `Collecting`
//! holds a place and counts for its tenant until it is dropped — when the collection
//! ends, or at once when another replica held the window's lease.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::PARALLELISM;

/// The report calls of one tenant a replica runs at once under a share of `share`
/// percent of `PARALLELISM`: at least one, so every tenant's windows are collected.
pub fn places_of(share: u64) -> usize {
    let share = usize::try_from(share.min(100)).unwrap_or(100);
    (PARALLELISM * share / 100).max(1)
}

/// This replica's collections running, by tenant, and the installations they collect
/// (one window of an installation at a time: a report that sleeps to its deadline holds
/// one place, never its tenant's whole share).
#[derive(Debug, Default)]
pub(crate) struct Running {
    by_tenant: HashMap<Arc<str>, usize>,
    units: HashSet<String>,
}

impl Running {
    /// How many of `tenant`'s collections run.
    pub(crate) fn of(&self, tenant: &str) -> usize {
        self.by_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn start(&mut self, tenant: &Arc<str>) {
        *self.by_tenant.entry(tenant.clone()).or_insert(0) += 1;
    }

    /// Whether a window of `unit` (an installation) is being collected.
    fn busy(&self, unit: &str) -> bool {
        self.units.contains(unit)
    }

    /// The collection of `unit`'s window ended (or was not leased).
    pub(crate) fn end_unit(&mut self, unit: &str) {
        self.units.remove(unit);
    }

    /// One of `tenant`'s collections ended (or a window taken for it was not leased).
    pub(crate) fn end(&mut self, tenant: &str) {
        if let Some(count) = self.by_tenant.get_mut(tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.by_tenant.remove(tenant);
            }
        }
    }
}

/// One tenant's windows of a pass.
#[derive(Debug)]
struct Queue<W> {
    tenant: Arc<str>,
    /// Its collections this replica may run at once.
    cap: usize,
    pending: VecDeque<W>,
}

/// One pass's open windows, in the order they are taken: each tenant's in the order
/// given, tenants in turn.
#[derive(Debug)]
pub(crate) struct Schedule<W> {
    queues: Vec<Queue<W>>,
    /// The tenants with windows pending (indices into `queues`), next turn first.
    turns: VecDeque<usize>,
    pending: usize,
}

impl<W> Schedule<W> {
    /// `windows` by tenant, each tenant's in the order they should be taken; `cap` gives
    /// a tenant's places. Tenants take their first turns in the order they first appear.
    pub(crate) fn new<'a>(windows: impl IntoIterator<Item = (&'a str, W)>, cap: impl Fn(&str) -> usize) -> Self {
        let mut index: HashMap<&'a str, usize> = HashMap::new();
        let mut queues: Vec<Queue<W>> = Vec::new();
        let mut pending = 0;
        for (tenant, window) in windows {
            let at = *index.entry(tenant).or_insert_with(|| {
                queues.push(Queue { tenant: Arc::from(tenant), cap: cap(tenant).max(1), pending: VecDeque::new() });
                queues.len() - 1
            });
            queues[at].pending.push_back(window);
            pending += 1;
        }
        let turns = (0..queues.len()).collect();
        Self { queues, turns, pending }
    }

    /// Windows not taken yet.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Up to `n` windows, round after round: in each, every tenant under its cap gives
    /// one, then goes behind those that did not (a tenant at its cap keeps its place, so
    /// it is first once a collection of its own ends). Each window taken counts as
    /// running for its tenant until `Running::end`, and its `unit` (installation) until
    /// `Running::end_unit`; a tenant's next window is its first whose unit is not being
    /// collected. Fewer than `n` when every tenant left is at its cap (or has only busy
    /// units); none when all are.
    pub(crate) fn take(&mut self, n: usize, running: &mut Running, unit: &dyn Fn(&W) -> String) -> Vec<(Arc<str>, W)> {
        let mut taken = Vec::new();
        while taken.len() < n && !self.turns.is_empty() {
            let before = taken.len();
            let mut waiting = VecDeque::with_capacity(self.turns.len());
            let mut served = Vec::new();
            while let Some(at) = self.turns.pop_front() {
                let queue = &mut self.queues[at];
                if taken.len() == n || running.of(&queue.tenant) >= queue.cap {
                    waiting.push_back(at);
                    continue;
                }
                if queue.pending.is_empty() {
                    continue;
                }
                let Some(at_window) = queue.pending.iter().position(|w| !running.busy(&unit(w))) else {
                    waiting.push_back(at);
                    continue;
                };
                let Some(window) = queue.pending.remove(at_window) else { continue };
                running.start(&queue.tenant);
                running.units.insert(unit(&window));
                self.pending -= 1;
                taken.push((queue.tenant.clone(), window));
                if !queue.pending.is_empty() {
                    served.push(at);
                }
            }
            waiting.extend(served);
            self.turns = waiting;
            if taken.len() == before {
                break;
            }
        }
        taken
    }
}

/// One replica's collection places: `PARALLELISM` report calls at once, of one tenant
/// at most its cap. Shared by the passes (one after another) and their collections.
#[derive(Debug)]
pub struct Places {
    slots: Arc<Semaphore>,
    running: Mutex<Running>,
    /// Woken whenever a collection ends: a pass whose every tenant left is at its cap
    /// waits for it.
    freed: Notify,
}

impl Default for Places {
    fn default() -> Self {
        Self::new()
    }
}

/// A window's place and its count for its tenant, both given back when dropped.
#[derive(Debug)]
pub(crate) struct Collecting {
    places: Arc<Places>,
    tenant: Arc<str>,
    unit: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Collecting {
    fn drop(&mut self) {
        let mut running = self.places.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.end(&self.tenant);
        running.end_unit(&self.unit);
        drop(running);
        self.places.freed.notify_waiters();
    }
}

impl Places {
    pub fn new() -> Self {
        Self { slots: Arc::new(Semaphore::new(PARALLELISM)), running: Mutex::default(), freed: Notify::new() }
    }

    /// A free place, once there is one (`None` if the places were closed).
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// A free place, if there is one now.
    pub(crate) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Takes a window from `schedule` for each of `slots` it can (the rest go back).
    pub(crate) fn take<W>(
        self: &Arc<Self>,
        schedule: &mut Schedule<W>,
        mut slots: Vec<OwnedSemaphorePermit>,
        unit: &dyn Fn(&W) -> String,
    ) -> Vec<(Collecting, W)> {
        let taken = schedule.take(slots.len(), &mut self.running.lock().unwrap_or_else(PoisonError::into_inner), unit);
        slots.truncate(taken.len());
        taken
            .into_iter()
            .zip(slots)
            .map(|((tenant, window), slot)| {
                let unit = unit(&window);
                (Collecting { places: self.clone(), tenant, unit, _slot: slot }, window)
            })
            .collect()
    }

    /// Ready once a collection ends after this was called (whether or not it was polled
    /// yet): call it before `take`, await it when `take` found every tenant at its cap.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Waits until no collection runs on this replica (every place free).
    pub async fn idle(&self) {
        let all = u32::try_from(PARALLELISM).unwrap_or(u32::MAX);
        drop(self.slots.acquire_many(all).await);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::future::Future as _;

    use super::*;

    /// `tenant`'s windows numbered from 0, `count` of them.
    fn windows<'a>(of: &[(&'a str, usize)]) -> Vec<(&'a str, (&'a str, usize))> {
        of.iter().flat_map(|&(tenant, count)| (0..count).map(move |n| (tenant, (tenant, n)))).collect()
    }

    /// Every window its own installation.
    fn each(window: &(&str, usize)) -> String {
        format!("{}#{}", window.0, window.1)
    }

    fn tenants(taken: &[(Arc<str>, (&str, usize))]) -> Vec<String> {
        taken.iter().map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn the_share_is_a_part_of_the_collector_and_never_none() {
        assert_eq!(places_of(25), PARALLELISM / 4);
        assert_eq!(places_of(100), PARALLELISM);
        assert_eq!(places_of(1), 1, "a tiny share still collects");
        assert_eq!(places_of(500), PARALLELISM, "never more than the collector");
    }

    #[test]
    fn tenants_take_turns_whatever_their_number_of_windows() {
        let mut running = Running::default();
        let mut schedule = Schedule::new(windows(&[("big", 2000), ("a", 2), ("b", 1)]), |_| PARALLELISM);
        let first = schedule.take(5, &mut running, &each);
        assert_eq!(tenants(&first), ["big", "a", "b", "big", "a"]);
        // Each tenant's windows in the order given.
        assert_eq!(first[0].1, ("big", 0));
        assert_eq!(first[3].1, ("big", 1));
        assert_eq!(first[4].1, ("a", 1));
        // A take stopped mid-round goes on where it stopped.
        let mut schedule = Schedule::new(windows(&[("x", 3), ("y", 3), ("z", 3)]), |_| PARALLELISM);
        let mut running = Running::default();
        let order: Vec<String> = (0..9).flat_map(|_| tenants(&schedule.take(1, &mut running, &each))).collect();
        assert_eq!(order, ["x", "y", "z", "x", "y", "z", "x", "y", "z"]);
        assert!(schedule.is_empty());
    }

    #[test]
    fn a_tenant_never_runs_more_than_its_cap_and_does_not_block_the_others() {
        let mut running = Running::default();
        let cap = |tenant: &str| if tenant == "big" { 2 } else { 4 };
        let mut schedule = Schedule::new(windows(&[("big", 100), ("small", 3)]), cap);
        let taken = schedule.take(16, &mut running, &each);
        assert_eq!(tenants(&taken), ["big", "small", "big", "small", "small"]);
        assert_eq!((running.of("big"), running.of("small")), (2, 3));
        // Every tenant left is at its cap: nothing, and nothing lost.
        assert!(schedule.take(16, &mut running, &each).is_empty());
        assert_eq!(schedule.len(), 98);
        // One of big's ends: big's next window, one only.
        running.end("big");
        let next = schedule.take(16, &mut running, &each);
        assert_eq!(next.iter().map(|(_, w)| *w).collect::<Vec<_>>(), [("big", 2)]);
        assert_eq!(running.of("big"), 2);
    }

    #[test]
    fn a_tenant_at_its_cap_is_first_once_it_frees() {
        let mut running = Running::default();
        let mut schedule = Schedule::new(windows(&[("a", 5), ("b", 5), ("c", 5)]), |t| if t == "a" { 1 } else { 9 });
        assert_eq!(tenants(&schedule.take(4, &mut running, &each)), ["a", "b", "c", "b"]);
        running.end("a");
        assert_eq!(tenants(&schedule.take(3, &mut running, &each)), ["a", "c", "b"]);
    }

    #[test]
    fn every_window_is_taken_once_however_the_collections_end() {
        let of = [("t0", 37), ("t1", 1), ("t2", 12), ("t3", 64)];
        let mut all = windows(&of).into_iter().map(|(_, w)| w).collect::<Vec<_>>();
        let cap = |tenant: &str| if tenant == "t3" { 3 } else { 1 };
        let mut schedule = Schedule::new(windows(&of), cap);
        let mut running = Running::default();
        let mut in_flight: VecDeque<(Arc<str>, (&str, usize))> = VecDeque::new();
        let mut seen = Vec::new();
        let mut step = 0_usize;
        while !schedule.is_empty() || !in_flight.is_empty() {
            // Places free: at most 5 at once; collections end in a varying order.
            let free = 5 - in_flight.len();
            for (tenant, window) in schedule.take(free, &mut running, &each) {
                assert!(running.of(&tenant) <= cap(&tenant), "{tenant} over its cap");
                seen.push(window);
                in_flight.push_back((tenant, window));
            }
            step += 1;
            if let Some((tenant, _)) = if step.is_multiple_of(3) { in_flight.pop_back() } else { in_flight.pop_front() }
            {
                running.end(&tenant);
            }
            assert!(step < 10_000, "the schedule stopped with windows left");
        }
        seen.sort();
        all.sort();
        assert_eq!(seen, all, "every window taken exactly once");
        assert_eq!(running.of("t3"), 0);
    }

    #[test]
    fn a_window_not_leased_gives_its_place_and_count_back_at_once() {
        let places = Arc::new(Places::new());
        let mut schedule = Schedule::new(windows(&[("a", 3)]), |_| 1);
        let slots = vec![places.try_slot().unwrap(), places.try_slot().unwrap()];
        let mut taken = places.take(&mut schedule, slots, &each);
        assert_eq!(taken.len(), 1, "a's cap is 1: the other place goes back");
        assert_eq!(places.slots.available_permits(), PARALLELISM - 1);
        // Another replica held the window's lease: dropped, its place and count are back.
        let freed = places.freed();
        drop(taken.pop());
        assert_eq!(places.slots.available_permits(), PARALLELISM);
        assert_eq!(places.running.lock().unwrap().of("a"), 0);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::pin::pin!(freed).poll(&mut cx).is_ready(), "a waiting pass is woken");
        let again = places.take(&mut schedule, vec![places.try_slot().unwrap()], &each);
        assert_eq!(again.len(), 1, "a's next window is taken");
        assert_eq!(schedule.len(), 1);
    }

    #[test]
    fn one_window_of_an_installation_at_a_time() {
        // Tenant a: installation "slow" has three windows first, "x" one; cap 4.
        let mut running = Running::default();
        let windows = vec![("a", ("slow", 0)), ("a", ("slow", 1)), ("a", ("slow", 2)), ("a", ("x", 0))];
        let mut schedule = Schedule::new(windows, |_| 4);
        let by_installation = |w: &(&str, usize)| w.0.to_string();
        let taken = schedule.take(4, &mut running, &by_installation);
        let got: Vec<_> = taken.iter().map(|(_, w)| *w).collect();
        assert_eq!(got, [("slow", 0), ("x", 0)], "slow's next windows wait for its first");
        assert!(schedule.take(4, &mut running, &by_installation).is_empty());
        running.end("a");
        running.end_unit("slow");
        let next: Vec<_> = schedule.take(4, &mut running, &by_installation).iter().map(|(_, w)| *w).collect();
        assert_eq!(next, [("slow", 1)]);
        assert_eq!(schedule.len(), 1);
    }
}
