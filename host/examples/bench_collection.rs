//! Usage collection of many installations, for `bench/run`: a Kiosk on SQLite (or the
//! database given) with budget-pacing registered, N installations of it (default
//! 10,000) each with one completed window, then collection passes — as the collector
//! runs them, `PARALLELISM` report calls at once, paced to `BUSY_SHARE_PERCENT` of the
//! time while the invokers call — until every window is closed.
//! Beside the pass, `INVOKERS` tasks invoke another installation of the same app as
//! fast as they can; their rate is measured during the pass and, without one, for
//! `IDLE_SECONDS` before it and as long after it (the mean of the two). Prints one line:
//! `installations windows seconds windows_per_s rss_before_kib rss_after_kib
//! invokes_per_s_idle invokes_per_s_during_pass`.
//!
//! Usage: `bench_collection <manifest.json> <budget_pacing.wasm> [installations] [database-url]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiosk::server::serve::{ServeOptions, spawn};
use kiosk::store::InstallationRow;

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Tasks invoking beside the pass (as many as a small tenant's concurrent calls;
/// `BENCH_INVOKERS` sets another number, 0 for none).
const INVOKERS: usize = 4;
/// How long the rate without a pass is measured.
const IDLE_SECONDS: u64 = 10;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (manifest, wasm) = match (args.get(1), args.get(2)) {
        (Some(m), Some(w)) => (m.clone(), w.clone()),
        _ => {
            eprintln!("usage: bench_collection <manifest.json> <budget_pacing.wasm> [installations] [database-url]");
            std::process::exit(2);
        }
    };
    let count: usize = args.get(3).map_or(10_000, |n| n.parse().expect("installations: a number"));
    let database = args.get(4).cloned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    // The server's own collector never completes a window here (ten years); the passes
    // below are the bench's. Report calls are the host's, outside tenant admission.
    // The invokers are one tenant calling as fast as they can: no rate limit. The
    // installations are all one tenant's: its collection share is the whole collector,
    // so the figures are the collector's (`PARALLELISM` calls at once), as before shares,
    // and its installation quota is above the count.
    let text = format!(
        "data-dir = \"{}\"\n[usage]\nwindow-seconds = 315360000\n[admission]\ntenant-calls-per-second = 1000000\n\
         tenant-burst = 1000000\n[sandbox]\ntenant-collection-share = 100\ntenant-installations = {}\n",
        dir.path().join("data").display(),
        count + 1
    );
    std::fs::write(&config, text).unwrap();
    let options = ServeOptions {
        config: Some(config),
        database,
        demo_apps: vec![format!("{manifest}={wasm}")],
        ..Default::default()
    };
    let started = spawn(options, "127.0.0.1:0".parse().unwrap()).await.expect("the server starts");
    let state = started.state.clone();
    // Hourly windows: a run never crosses more than one window boundary.
    let window_ms: i64 = 3_600_000;
    let now = kiosk::metering::now_ms() as i64;
    // Created at the start of the last completed window: exactly one window each.
    let created = (now / window_ms - 1) * window_ms;
    let rss_before = rss_kib();
    for i in 0..count {
        let row = InstallationRow {
            id: format!("bench-{i:06}"),
            tenant: "demo".into(),
            app: "acme/budget-pacing".into(),
            version: "1.4.34".into(),
            config: r#"{"apiKey":"bench","threshold":0.1}"#.into(),
            secrets: Vec::new(),
            created_ms: created,
            updated_ms: created,
            row_version: 0,
            upgrade_policy: Default::default(),
        };
        state.store().insert_installation(&row, "bench").await.unwrap();
    }
    // The installation the invokers call (created now: its window is not due).
    let request = kiosk_core::lifecycle::InstallRequest {
        app: "acme/budget-pacing".into(),
        config: Some(serde_json::json!({"apiKey": "bench", "threshold": 0.1})),
        ..Default::default()
    };
    let invoked = state.install("demo", request, "bench").await.expect("the invoked installation");
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let input = serde_json::json!({"campaignId": "c-1", "budget": 3000, "flightDays": 30, "dailySpend": [100, 120]});
    let mut invokers = Vec::new();
    let invokers_count = std::env::var("BENCH_INVOKERS").ok().and_then(|n| n.parse().ok()).unwrap_or(INVOKERS);
    for _ in 0..invokers_count {
        let (state, calls, stop, input, id) =
            (state.clone(), calls.clone(), stop.clone(), input.clone(), invoked.id.clone());
        invokers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                state.invoke("demo", &id, "evaluate", &input).await.expect("an invoke beside the pass");
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let idle_from = (Instant::now(), calls.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let idle_rate = (calls.load(Ordering::Relaxed) - idle_from.1) as f64 / idle_from.0.elapsed().as_secs_f64();
    let places = Arc::new(kiosk::collector::Places::new());
    let replica: Arc<str> = Arc::from("bench-replica");
    let begun = Instant::now();
    let calls_before = calls.load(Ordering::Relaxed);
    // One pass starts every window (waiting for places as reports finish); then every
    // place is free again once the last report is done.
    kiosk::collector::collect_once(&state, &places, &replica, window_ms, 600_000).await.unwrap();
    places.idle().await;
    let seconds = begun.elapsed().as_secs_f64();
    let during_rate = (calls.load(Ordering::Relaxed) - calls_before) as f64 / seconds.max(f64::MIN_POSITIVE);
    // The rate without a pass brackets it: before and after, averaged. The database grows
    // with every invoke (usage rows, log lines), so a rate taken only before the pass
    // would credit the pass with that slowdown too.
    let after_from = (Instant::now(), calls.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let after_rate = (calls.load(Ordering::Relaxed) - after_from.1) as f64 / after_from.0.elapsed().as_secs_f64();
    let idle_rate = (idle_rate + after_rate) / 2.0;
    stop.store(true, Ordering::Relaxed);
    for invoker in invokers {
        invoker.await.unwrap();
    }
    let rss_after = rss_kib();
    use sqlx::Row as _;
    let windows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM usage_windows WHERE done = 1")
        .fetch_one(state.store().pool())
        .await
        .unwrap()
        .get("n");
    println!(
        "{count} {windows} {seconds:.2} {:.0} {rss_before} {rss_after} {idle_rate:.0} {during_rate:.0}",
        windows as f64 / seconds.max(f64::MIN_POSITIVE)
    );
}
