//! What an operator checks after a fault, read from the database itself (a connection
//! of the test's own, beside the server's): the ledger, the key-value quotas, the
//! installations and their audit rows, the usage windows and their collection passes.

use std::collections::{HashMap, HashSet};

use sqlx::Row as _;

use super::Acked;

/// A connection pool of the test's own to the server's database (no migrations run:
/// the server's binary owns the schema).
pub struct Db {
    pool: sqlx::AnyPool,
}

/// A usage window's row.
#[derive(Debug)]
pub struct Window {
    pub installation: String,
    pub start: i64,
    pub done: i64,
    pub detail: Option<String>,
}

impl Db {
    pub async fn open(url: &str) -> Self {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(2).connect(url).await;
        Self { pool: pool.unwrap_or_else(|e| panic!("open {url}: {e}")) }
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn rows(&self, sql: &str) -> Vec<sqlx::any::AnyRow> {
        sqlx::query(sql).fetch_all(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every usage event answered 200 is in the ledger exactly once: each acknowledged
    /// call has as many events keyed by its call id as its answer listed; each call
    /// answered with a problem has none; each acknowledged partner key is there.
    /// Returns the number of events checked.
    pub async fn usage_exactly_once(&self, acked: &Acked) -> usize {
        let mut per_call: HashMap<String, usize> = HashMap::new();
        let mut partner: HashSet<String> = HashSet::new();
        for row in self.rows("SELECT source, idem_key FROM usage_events").await {
            let (source, key): (String, String) = (row.get("source"), row.get("idem_key"));
            match source.as_str() {
                "host" | "guest" => *per_call.entry(key.split('/').next().unwrap().to_string()).or_default() += 1,
                "partner" => assert!(partner.insert(key.clone()), "partner event {key} twice"),
                _ => {}
            }
        }
        let mut checked = 0;
        for (call, listed) in &acked.calls {
            let found = per_call.get(call).copied().unwrap_or(0);
            assert_eq!(found, *listed, "call {call} answered 200 with {listed} usage events; the ledger has {found}");
            checked += found;
        }
        for call in &acked.failed_calls {
            assert_eq!(per_call.get(call), None, "call {call} was refused, yet its usage counts");
        }
        for key in &acked.partner_keys {
            assert!(partner.contains(&format!("acme/{key}")), "partner event {key} answered 200 is not in the ledger");
        }
        checked + acked.partner_keys.len()
    }

    /// The host's usage events (one per metered call), counted by the call id that keys
    /// them.
    pub async fn host_events_by_call(&self) -> HashMap<String, usize> {
        let mut per_call: HashMap<String, usize> = HashMap::new();
        for row in self.rows("SELECT idem_key FROM usage_events WHERE source = 'host'").await {
            let key: String = row.get("idem_key");
            *per_call.entry(key.split('/').next().unwrap().to_string()).or_default() += 1;
        }
        per_call
    }

    /// Key-value data: every installation's bytes (keys + values) are what `kv_usage`
    /// counts and within `quota`; no data is left of an installation that is gone; each
    /// acknowledged key of an installation still there is stored.
    pub async fn kv_within_quota(&self, quota: usize, acked: &Acked) {
        let live = self.installations().await;
        let mut bytes: HashMap<String, usize> = HashMap::new();
        let mut keys: HashSet<(String, String)> = HashSet::new();
        for row in self.rows("SELECT installation, key, value FROM kv").await {
            let (installation, key, value): (String, String, Vec<u8>) =
                (row.get("installation"), row.get("key"), row.get("value"));
            if !live.contains_key(&installation) {
                let audited = self.audited(&installation).await;
                panic!(
                    "key-value data ({key}) of installation {installation}, which does not exist; its audit: {audited:?}"
                );
            }
            *bytes.entry(installation.clone()).or_default() += key.len() + value.len();
            keys.insert((installation, key));
        }
        let counted: HashMap<String, usize> = self
            .rows("SELECT installation, bytes FROM kv_usage")
            .await
            .iter()
            .map(|r| (r.get::<String, _>("installation"), r.get::<i64, _>("bytes") as usize))
            .collect();
        for (installation, used) in &bytes {
            assert!(*used <= quota, "{installation} holds {used} key-value bytes, over its quota of {quota}");
            assert_eq!(counted.get(installation), Some(used), "kv_usage of {installation} disagrees with its data");
        }
        for (installation, key) in &acked.kv_keys {
            if live.contains_key(installation) {
                assert!(
                    keys.contains(&(installation.clone(), key.clone())),
                    "{installation}: {key} answered 200, lost"
                );
            }
        }
    }

    /// The audited actions on installation `id`, oldest first.
    async fn audited(&self, id: &str) -> Vec<String> {
        let sql = format!("SELECT action FROM audit WHERE target LIKE '%/{id}' ORDER BY id");
        self.rows(&sql).await.iter().map(|r| r.get("action")).collect()
    }

    /// The installations that exist, by id, with their creation time.
    pub async fn installations(&self) -> HashMap<String, i64> {
        let rows = self.rows("SELECT id, created_ms FROM installations").await;
        rows.iter().map(|r| (r.get("id"), r.get("created_ms"))).collect()
    }

    /// Every installation that exists has its `installation.install` audit row; none of
    /// `uninstalled` (answered 200/204) exists.
    pub async fn installations_audited(&self, tenant: &str, uninstalled: &[String]) -> usize {
        let audited: HashSet<String> = self
            .rows("SELECT target FROM audit WHERE action = 'installation.install'")
            .await
            .iter()
            .map(|r| r.get("target"))
            .collect();
        let live = self.installations().await;
        for id in live.keys() {
            assert!(
                audited.contains(&format!("{tenant}/{id}")),
                "installation {id} has no installation.install audit row"
            );
        }
        for id in uninstalled {
            assert!(!live.contains_key(id), "installation {id} was uninstalled (answered 2xx) and still exists");
        }
        live.len()
    }

    pub async fn windows(&self) -> Vec<Window> {
        let rows = self.rows("SELECT installation, window_start, done, detail FROM usage_windows").await;
        rows.iter()
            .map(|r| Window {
                installation: r.get("installation"),
                start: r.get("window_start"),
                done: r.get("done"),
                detail: r.get("detail"),
            })
            .collect()
    }

    /// The `report` events by (installation, window): the app's key ends with the window.
    async fn reports(&self) -> HashMap<(String, i64), usize> {
        let mut reports = HashMap::new();
        for row in self.rows("SELECT installation, idem_key FROM usage_events WHERE source = 'report'").await {
            let (installation, key): (String, String) = (row.get("installation"), row.get("idem_key"));
            let start = key.rsplit(':').next().and_then(|w| w.parse::<i64>().ok());
            let start = start.unwrap_or_else(|| panic!("report key {key} names no window"));
            *reports.entry((installation, start)).or_default() += 1;
        }
        reports
    }

    /// Usage windows neither collected twice nor counted wrong: each collected window has
    /// as many `report` events as its detail says were accepted (the app's key names the
    /// window: once, whatever the retries); every `report` event belongs to a window
    /// that was leased; and the `usage.collect-pass` audit rows never count more
    /// collected windows than there are. Returns the collected windows.
    ///
    /// The collector may run meanwhile, so each read comes after what it is checked
    /// against was committed: a pass's audit row after its closes, a window's report
    /// events after its lease and before its close.
    pub async fn windows_once(&self) -> usize {
        let audited: u64 = self
            .rows("SELECT detail FROM audit WHERE action = 'usage.collect-pass'")
            .await
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .map(|d| d.split(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("{d}")))
            .sum();
        let reported = self.reports().await;
        let windows = self.windows().await;
        let rows: HashSet<(String, i64)> = windows.iter().map(|w| (w.installation.clone(), w.start)).collect();
        for (window, n) in &reported {
            assert!(rows.contains(window), "{n} report events for window {window:?}, which was never leased");
        }
        let reports = self.reports().await;
        let mut collected = 0;
        for w in windows.iter().filter(|w| w.done == 1) {
            collected += 1;
            let detail = w.detail.as_deref().unwrap_or("");
            let rest = detail.strip_prefix(&format!("window {}: ", w.start)).unwrap_or("");
            let accepted: usize = if rest.starts_with("the app refused") {
                0
            } else {
                let n = rest.split(' ').next().and_then(|n| n.parse().ok());
                n.unwrap_or_else(|| panic!("window {} of {}: detail {detail:?}", w.start, w.installation))
            };
            let found = reports.get(&(w.installation.clone(), w.start)).copied().unwrap_or(0);
            assert_eq!(found, accepted, "window {} of {}: {detail:?}, {found} report events", w.start, w.installation);
        }
        assert!(audited <= collected as u64, "passes audit {audited} windows collected; {collected} are");
        collected
    }

    /// Every collected window is in the audit (`usage.windows-collected`, written with
    /// its close), even when the pass that closed it was killed before its summary row;
    /// and none is there twice. Returns the windows checked.
    pub async fn windows_audited(&self) -> usize {
        // The windows first: a window read as collected had its audit row committed with
        // its close, so the audit read after it has it (the collector may run meanwhile).
        let collected: Vec<String> = self
            .windows()
            .await
            .iter()
            .filter(|w| w.done == 1)
            .map(|w| format!("{}@{}", w.installation, w.start))
            .collect();
        let mut audited: HashMap<String, usize> = HashMap::new();
        for row in self.rows("SELECT detail FROM audit WHERE action = 'usage.windows-collected'").await {
            let detail: String = row.get("detail");
            let (count, names) = detail.split_once(" windows collected: ").unwrap_or_else(|| panic!("{detail}"));
            let names: Vec<&str> = names.split(' ').collect();
            assert_eq!(count.parse::<usize>().ok(), Some(names.len()), "{detail}");
            for name in names {
                *audited.entry(name.to_string()).or_default() += 1;
            }
        }
        for name in &collected {
            assert_eq!(audited.get(name), Some(&1), "collected window {name} must be in the audit once");
        }
        assert!(audited.values().all(|&n| n == 1), "a window audited as collected twice: {audited:?}");
        collected.len()
    }

    /// Windows not lost: each installation that exists has every window from `from` (or
    /// its creation) up to the one ending at `until` collected (`done = 1`; `2` is a
    /// window given up). `None` while one is still open.
    pub async fn windows_closed(&self, window_ms: i64, from: i64, until: i64) -> Option<Result<usize, String>> {
        let closed: HashMap<(String, i64), i64> =
            self.windows().await.into_iter().map(|w| ((w.installation, w.start), w.done)).collect();
        let mut count = 0;
        for (id, created) in self.installations().await {
            let mut start = (created / window_ms * window_ms).max(from / window_ms * window_ms);
            while start + window_ms <= until {
                match closed.get(&(id.clone(), start)) {
                    Some(1) => count += 1,
                    Some(2) => return Some(Err(format!("window {start} of {id} was given up"))),
                    _ => return None,
                }
                start += window_ms;
            }
        }
        Some(Ok(count))
    }
}
