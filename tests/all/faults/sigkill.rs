//! SIGKILL at random points of a scripted workload, on SQLite and PostgreSQL: one worker
//! goes through install → configure → invokes → uninstall again and again, three invoke
//! (each a key-value write, two usage events) and post partner usage on a long-lived
//! installation, and the collector closes a usage window every second. The server is
//! killed with SIGKILL after a random delay (seeded; the seed is printed), restarted on
//! the same database, and the database checked: usage answered 200 present exactly
//! once, usage windows neither lost nor collected twice, key-value bytes within the
//! quota, every installation audited and none answered uninstalled still there.
//!
//! `KIOSK_KILL_ITERATIONS` kills per database (3 by default, so CI stays short);
//! `KIOSK_KILL_SEED` replays a run's delays and choices (not its timing).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;

use super::check::Db;
use super::{Acked, Kiosk, TENANT, evaluate, partner_record, send};
use crate::common;
use crate::common::api::kind;

const WINDOW_MS: i64 = 1000;
/// Each installation's key-value quota: the long-lived installation's campaigns reach it.
const QUOTA: usize = 2048;

/// What the server acknowledged across every run, and what the lifecycle script did.
#[derive(Debug, Default)]
struct Ledger {
    acked: Acked,
    /// Installations answered 201 and never sent an uninstall.
    installed: Vec<String>,
    /// Installations answered 200/204 to their uninstall.
    uninstalled: Vec<String>,
}

/// One worker's requests until the server stops answering (killed) or `bound`.
async fn worker(server: Arc<Kiosk>, keep: String, w: usize, seed: u64, run: usize, ledger: Arc<Mutex<Ledger>>) {
    let (api, tenant) = (&server.api, server.tenant.as_str());
    let mut rng = StdRng::seed_from_u64(seed);
    let installs = format!("/v1/tenants/{TENANT}/installations");
    for n in 0..500 {
        if w == 0 {
            // The lifecycle script: install, configure, two invokes, uninstall.
            let body = json!({"app": super::APP, "version": super::VERSION, "config": {"apiKey": "k"}});
            let Some(reply) = send(api, tenant, Method::POST, &installs, Some(body)).await else { return };
            if reply.status != 201 {
                ledger.lock().unwrap().acked.problem("install", &reply);
                continue;
            }
            let id = reply.json()["id"].as_str().unwrap().to_string();
            ledger.lock().unwrap().installed.push(id.clone());
            let configure = json!({"config": {"apiKey": "k2", "threshold": 0.25}});
            let Some(reply) = send(api, tenant, Method::PATCH, &format!("{installs}/{id}"), Some(configure)).await
            else {
                return;
            };
            ledger.lock().unwrap().acked.problem("configure", &reply);
            for i in 0..2 {
                let campaign = format!("r{run}-{n}-{i}");
                let path = format!("{installs}/{id}/invoke/evaluate");
                let Some(reply) = send(api, tenant, Method::POST, &path, Some(evaluate(&campaign))).await else {
                    return;
                };
                ledger.lock().unwrap().acked.invoke(&id, &campaign, &reply);
            }
            ledger.lock().unwrap().installed.retain(|i| *i != id);
            let Some(reply) = send(api, tenant, Method::DELETE, &format!("{installs}/{id}"), None).await else {
                return;
            };
            let mut ledger = ledger.lock().unwrap();
            match reply.status.as_u16() {
                200 | 204 => ledger.uninstalled.push(id),
                _ => ledger.acked.problem("uninstall", &reply),
            }
        } else if n % 4 == 3 {
            let keys: Vec<String> = (0..3).map(|j| format!("r{run}-w{w}-{n}-{j}")).collect();
            let records: Vec<_> = keys.iter().map(|k| partner_record(&keep, k)).collect();
            let body = json!({"records": records});
            let reply = send(api, &server.partner, Method::POST, "/v1/partners/acme/usage", Some(body)).await;
            let Some(reply) = reply else { return };
            ledger.lock().unwrap().acked.post(&keys, &reply);
        } else {
            // Campaigns from a range large enough to reach the quota.
            let campaign = format!("c{}", rng.random_range(0..150));
            let path = format!("{installs}/{keep}/invoke/evaluate");
            let Some(reply) = send(api, tenant, Method::POST, &path, Some(evaluate(&campaign))).await else { return };
            ledger.lock().unwrap().acked.invoke(&keep, &campaign, &reply);
        }
    }
}

/// Waits (bounded) until every window that ended before `until` since `from` is
/// collected; the number of such windows.
async fn windows_collected(db: &Db, from: i64, until: i64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match db.windows_closed(WINDOW_MS, from, until).await {
            Some(Ok(count)) => return count,
            Some(Err(lost)) => panic!("{lost}"),
            None => {}
        }
        assert!(Instant::now() < deadline, "usage windows ended before {until} not collected within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sigkill_suite(database: String, label: &str) {
    let iterations: usize =
        std::env::var("KIOSK_KILL_ITERATIONS").ok().map_or(3, |v| v.parse().expect("KIOSK_KILL_ITERATIONS"));
    let seed: u64 = std::env::var("KIOSK_KILL_SEED")
        .ok()
        .map_or_else(|| super::now_ms() as u64, |v| v.parse().expect("KIOSK_KILL_SEED"));
    eprintln!("faults::sigkill on {label}: {iterations} kills, KIOSK_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let toml =
        format!("[usage]\nwindow-seconds = 1\nlease-seconds = 2\n[sandbox.defaults]\nkv-quota-bytes = {QUOTA}\n");
    let mut server = Arc::new(Kiosk::start(dir.path(), &database, &toml, "0"));
    let keep = server.install().await;
    let db = Db::open(&database).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut checked_until = 0;
    for run in 1..=iterations {
        let delay = Duration::from_millis(rng.random_range(50..1500));
        let pid = server.pid();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        });
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(worker(server.clone(), keep.clone(), w, rng.random(), run, ledger.clone())))
            .collect();
        killer.await.unwrap();
        for w in workers {
            w.await.unwrap();
        }
        let errors = server.error_lines(20);
        drop(server);
        server = Arc::new(Kiosk::start(dir.path(), &database, &toml, &run.to_string()));
        let restarted = super::now_ms();

        // The consistency check, on the database the restarted server runs on.
        let l = std::mem::take(&mut *ledger.lock().unwrap());
        let events = db.usage_exactly_once(&l.acked).await;
        db.kv_within_quota(QUOTA, &l.acked).await;
        let live = db.installations_audited(TENANT, &l.uninstalled).await;
        let existing = db.installations().await;
        for id in l.installed.iter().chain([&keep]) {
            assert!(existing.contains_key(id), "installation {id} answered 201 and never uninstalled is gone");
        }
        let (listed, _) = server.api.walk(&server.tenant, &format!("/v1/tenants/{TENANT}/installations"), 100).await;
        for item in &listed {
            let id = item["id"].as_str().unwrap();
            assert!(!l.uninstalled.iter().any(|u| u == id), "{id} answered uninstalled, still listed");
        }
        // A tenant cleans up what the killed script left installed: the next run starts
        // with the long-lived installation alone (and the collector's work stays small).
        let (mut l, mut claimed) = (l, 0);
        for item in &listed {
            let id = item["id"].as_str().unwrap().to_string();
            if id == keep {
                continue;
            }
            let path = format!("/v1/tenants/{TENANT}/installations/{id}");
            let reply = send(&server.api, &server.tenant, Method::DELETE, &path, None).await.expect("answered");
            match reply.status.as_u16() {
                200 | 204 => {
                    l.installed.retain(|i| *i != id);
                    l.uninstalled.push(id);
                }
                // An uninstall the kill interrupted still holds its claim until it lapses
                // (a minute and more); this one is tried again after the next kill.
                409 if kind(&reply.json()) == "installation-changed" => claimed += 1,
                _ => panic!("uninstall {id}: {} {}", reply.status, reply.text),
            }
        }
        let windows = windows_collected(&db, checked_until, restarted).await;
        checked_until = restarted - WINDOW_MS;
        let collected = db.windows_once().await;
        let audited = db.windows_audited().await;
        assert!(audited >= collected, "{audited} collected windows audited, {collected} seen before");
        eprintln!(
            "{label} kill {run}/{iterations} after {delay:?}: {} calls, {} partner events acknowledged so far \
             ({events} events checked), {} uninstalled, {live} installations ({claimed} still claimed by a \
             killed uninstall), {windows} windows closed since the last check, {collected} collected in all",
            l.acked.calls.len(),
            l.acked.partner_keys.len(),
            l.uninstalled.len()
        );
        assert!(
            l.acked.forbidden.is_empty(),
            "answers that must never be:\n{}\nthe killed server's errors:\n{errors}",
            l.acked.forbidden.join("\n")
        );
        *ledger.lock().unwrap() = l;
    }
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(!l.acked.calls.is_empty() && !l.acked.partner_keys.is_empty(), "the workload ran: {l:?}");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_keeps_the_books_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_suite(format!("sqlite://{}", dir.path().join("kill.db").display()), "SQLite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_keeps_the_books_on_postgresql() {
    sigkill_suite(common::fresh_postgres_database().await, "PostgreSQL").await;
}
