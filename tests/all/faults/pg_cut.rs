//! PostgreSQL connections cut mid-transaction: while concurrent invokes and partner
//! usage posts run, the test terminates every backend of the server's database
//! (`pg_terminate_backend`) again and again, at random short intervals (seeded; the
//! seed is printed). Callers see 200, or 503 with `Retry-After` — never a 500; once the
//! cuts stop the server answers 200 again by itself (no restart); every usage event
//! answered 200 is in the ledger exactly once, and no call answered 503 counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use sqlx::Connection as _;
use sqlx::Row as _;

use super::check::Db;
use super::{Acked, Kiosk, TENANT, evaluate, partner_record, send};
use crate::common;

/// Invokes per invoking worker, posts per posting worker (5 records each).
const INVOKES: usize = 150;
const POSTS: usize = 50;

#[derive(Debug, Default)]
struct Seen {
    acked: Acked,
    /// Answers by status.
    statuses: BTreeMap<u16, usize>,
    /// Requests the server did not answer at all (it must answer every one).
    unanswered: usize,
}

async fn load(server: Arc<Kiosk>, installation: String, w: usize, seen: Arc<Mutex<Seen>>) {
    let (api, tenant) = (&server.api, server.tenant.as_str());
    let invoke = format!("/v1/tenants/{TENANT}/installations/{installation}/invoke/evaluate");
    let rounds = if w < 6 { INVOKES } else { POSTS };
    for n in 0..rounds {
        let (reply, keys, campaign) = if w < 6 {
            let campaign = format!("w{w}-{}", n % 20);
            (send(api, tenant, Method::POST, &invoke, Some(evaluate(&campaign))).await, Vec::new(), campaign)
        } else {
            let keys: Vec<String> = (0..5).map(|j| format!("w{w}-{n}-{j}")).collect();
            let body = json!({"records": keys.iter().map(|k| partner_record(&installation, k)).collect::<Vec<_>>()});
            let reply = send(api, &server.partner, Method::POST, "/v1/partners/acme/usage", Some(body)).await;
            (reply, keys, String::new())
        };
        let mut seen = seen.lock().unwrap();
        let Some(reply) = reply else {
            seen.unanswered += 1;
            continue;
        };
        *seen.statuses.entry(reply.status.as_u16()).or_default() += 1;
        if w < 6 {
            seen.acked.invoke(&installation, &campaign, &reply);
        } else {
            seen.acked.post(&keys, &reply);
        }
    }
}

/// Terminates every backend of `database` but the asking one; how many.
async fn cut(admin: &mut sqlx::PgConnection, database: &str) -> usize {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_all(admin)
    .await
    .unwrap()
    .iter()
    .filter(|r| r.get::<bool, _>("t"))
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_postgresql_connections_are_503s_to_retry_and_lose_no_usage() {
    let url = common::fresh_postgres_database().await;
    let database = url.rsplit('/').next().unwrap().to_string();
    let seed: u64 = std::env::var("KIOSK_CUT_SEED")
        .ok()
        .map_or_else(|| super::now_ms() as u64, |v| v.parse().expect("KIOSK_CUT_SEED"));
    eprintln!("faults::pg_cut: KIOSK_CUT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Kiosk::start(dir.path(), &url, "[usage]\nwindow-seconds = 315360000\n", "pg"));
    let installation = server.install().await;
    let mut admin = sqlx::PgConnection::connect(&common::postgres_admin_url()).await.unwrap();

    // Six invoking and two posting workers; cuts at random intervals until they are done.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let workers: Vec<_> =
        (0..8).map(|w| tokio::spawn(load(server.clone(), installation.clone(), w, seen.clone()))).collect();
    let (mut cuts, mut terminated) = (0, 0);
    while workers.iter().any(|w| !w.is_finished()) {
        terminated += cut(&mut admin, &database).await;
        cuts += 1;
        // The fault's cadence, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..150))).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    assert!(terminated > 0, "{cuts} cuts terminated no backend of {database}");

    // The cuts stopped: the same process answers 200 again by itself, within a bounded
    // number of requests (each dead pooled connection costs at most one 503).
    let (api, tenant) = (&server.api, server.tenant.as_str());
    let invoke = format!("/v1/tenants/{TENANT}/installations/{installation}/invoke/evaluate");
    let mut after = Vec::new();
    let mut in_a_row = 0;
    for i in 0..40 {
        let campaign = format!("after-{i}");
        let reply = send(api, tenant, Method::POST, &invoke, Some(evaluate(&campaign))).await.expect("answered");
        after.push(reply.status.as_u16());
        seen.lock().unwrap().acked.invoke(&installation, &campaign, &reply);
        in_a_row = if reply.status == 200 { in_a_row + 1 } else { 0 };
        if in_a_row == 5 {
            break;
        }
    }
    assert_eq!(in_a_row, 5, "the server did not recover after the cuts: {after:?}");

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "pg_cut: {cuts} cuts, {terminated} backends terminated; answers {:?}, {} unanswered; after the cuts {after:?}",
        seen.statuses, seen.unanswered
    );
    let db = Db::open(&url).await;
    let events = db.usage_exactly_once(&seen.acked).await;
    db.close().await;
    eprintln!(
        "pg_cut: {} calls, {} partner events answered 200; {events} events checked",
        seen.acked.calls.len(),
        seen.acked.partner_keys.len()
    );
    assert_eq!(seen.unanswered, 0, "requests the server never answered");
    // A partner usage post whose ledger write fails is a 503 too (the writer's failure
    // keeps its kind; it was a 500 before).
    assert!(
        seen.acked.forbidden.is_empty(),
        "answers that must never be (a 500, or a 5xx without Retry-After), {} of them:\n{}\nthe server's errors:\n{}",
        seen.acked.forbidden.len(),
        seen.acked.forbidden.join("\n"),
        server.error_lines(20)
    );
}
