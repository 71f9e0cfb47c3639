//! `usage.report` collected once per window per installation by two replicas sharing one
//! PostgreSQL database, including a window whose lease a dead replica still holds; each
//! window's detail read through the API, each pass audited by one row.

use std::time::{Duration, Instant};

use kiosk::server::serve::ServeOptions;
use kiosk::store::Principal;
use reqwest::Method;
use serde_json::json;
use sqlx::Connection as _;
use sqlx::Row as _;

use crate::common;
use crate::common::api::TestServer;

fn config(dir: &std::path::Path, name: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "data-dir = \"{}\"\n[server]\nsecrets-key = \"{key}\"\n[usage]\nwindow-seconds = 1\nlease-seconds = 2\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_collect_each_window_once_and_take_over_a_dead_lease() {
    let url = common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "11".repeat(32);
    let a = TestServer::serve(
        ServeOptions {
            config: Some(config(dir.path(), "a", &key)),
            database: Some(url.clone()),
            demo_apps: vec![common::demo_app("budget-pacing")],
            ..Default::default()
        },
        dir.path(),
    )
    .await;
    let _b = TestServer::serve(
        ServeOptions { config: Some(config(dir.path(), "b", &key)), database: Some(url.clone()), ..Default::default() },
        dir.path(),
    )
    .await;
    let (_, token) = a.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap();
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let id = a.install(&token, "demo", install).await.id;
    let input = json!({"campaignId": "c1", "budget": 300, "flightDays": 30, "dailySpend": [10]});
    let (status, body) = a.invoke(&token, "demo", &id, "evaluate", input).await;
    assert_eq!(status, 200, "{body}");

    // A replica died holding the lease of the current window (it will be the last
    // completed one in a second); it expires 1.5 s from now.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let dead_window = now / 1000 * 1000;
    sqlx::query("INSERT INTO usage_windows (installation, window_start, done, leased_by, lease_until) VALUES ($1, $2, 0, 'dead-replica', $3)")
        .bind(&id)
        .bind(dead_window)
        .bind(now + 1500)
        .execute(&mut db)
        .await
        .unwrap();

    // Wait (bounded) until the dead window and two more have been collected.
    let deadline = Instant::now() + Duration::from_secs(20);
    let done: Vec<(i64, String)> = loop {
        let rows = sqlx::query("SELECT window_start, leased_by FROM usage_windows WHERE installation = $1 AND done = 1 ORDER BY window_start")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .unwrap();
        let done: Vec<(i64, String)> = rows.iter().map(|r| (r.get("window_start"), r.get("leased_by"))).collect();
        if done.iter().any(|(w, _)| *w == dead_window) && done.iter().filter(|(w, _)| *w > dead_window).count() >= 2 {
            break done;
        }
        assert!(Instant::now() < deadline, "windows not collected in time: {done:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead = done.iter().find(|(w, _)| *w == dead_window).unwrap();
    assert_ne!(dead.1, "dead-replica", "a live replica took over the expired lease");

    // Each window's usage is in the ledger once, and what its collection found is on the
    // window, which the tenant reads through the API.
    let path = format!("/v1/tenants/demo/installations/{id}/usage-windows?limit=1000");
    let (status, listed) = a.call(Some(&token), Method::GET, &path, None).await;
    assert_eq!(status, 200, "{listed}");
    let items = listed["items"].as_array().unwrap();
    let starts: Vec<i64> = items.iter().map(|w| w["startMs"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|p| p[0] > p[1]), "newest first: {starts:?}");
    for (window, _) in &done {
        let events = sqlx::query("SELECT COUNT(*) AS n FROM usage_events WHERE source = 'report' AND idem_key LIKE $1")
            .bind(format!("{id}/report/%:{window}"))
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get::<i64, _>("n");
        assert_eq!(events, 1, "window {window}: one campaigns-monitored record");
        let listed = items.iter().find(|w| w["startMs"] == json!(window)).unwrap_or_else(|| panic!("{window} listed"));
        assert_eq!(listed["state"], "collected", "{listed}");
        assert_eq!(listed["detail"], format!("window {window}: 1 records, 0 refused"), "{listed}");
    }
    // The audit log has no row per window, but one per pass, counting what it collected.
    let per_window = sqlx::query("SELECT COUNT(*) AS n FROM audit WHERE action = 'usage.collect'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get::<i64, _>("n");
    assert_eq!(per_window, 0, "no audit row per collected window");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let details: Vec<String> =
            sqlx::query("SELECT detail FROM audit WHERE action = 'usage.collect-pass' AND actor LIKE 'collector:%'")
                .fetch_all(&mut db)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get("detail"))
                .collect();
        let collected: i64 = details
            .iter()
            .map(|d| d.split_whitespace().next().and_then(|n| n.parse::<i64>().ok()).unwrap_or_else(|| panic!("{d}")))
            .sum();
        assert!(details.iter().all(|d| d.ends_with(" to retry")), "{details:?}");
        if collected >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "passes not audited in time: {details:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
