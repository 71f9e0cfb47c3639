//! Failover between two replicas on one PostgreSQL database: clients send invokes, each
//! with its own `Idempotency-Key`, to replica A; A is killed with SIGKILL at a random
//! moment (seeded; the seed is printed); every request A left unanswered is sent again,
//! with the same key, to replica B. Afterwards every request has exactly one answer
//! behind it: B keeps serving, each key's usage is in the ledger exactly once, and it is
//! the usage of the call whose id the client was answered — a call A committed without
//! answering is answered by B from the stored answer, not run again. Usage windows (1 s)
//! are collected by both replicas meanwhile: B takes over the windows A held once their
//! leases lapse, and every window that ended before the kill is collected exactly once,
//! and audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::Value;

use super::check::Db;
use super::{Kiosk, TENANT, evaluate};
use crate::common;
use crate::common::api::{Api, Reply};

/// Sends a keyed invoke; `None` when the server did not answer.
async fn keyed(api: &Api, token: &str, path: &str, key: &str, campaign: &str) -> Option<Reply> {
    let request = api.request(Some(token), Method::POST, path).timeout(Duration::from_secs(10));
    let resp = request.header("Idempotency-Key", key).json(&evaluate(campaign)).send().await.ok()?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.ok()?;
    Some(Reply { status, headers, text })
}

#[derive(Debug, Default)]
struct Requests {
    /// Key → the call id of its 200 answer.
    answered: HashMap<String, String>,
    /// Keys sent to A that A never answered.
    unanswered: Vec<String>,
    /// Answers that must never be (500, or 5xx without `Retry-After`).
    forbidden: Vec<String>,
    /// Answers B gave from a stored answer (`Idempotent-Replayed: true`).
    replayed: usize,
}

impl Requests {
    /// Files an answer to `key`: a 200's call id; a 503 with `Retry-After` is to be sent
    /// again (`false`).
    fn file(&mut self, key: &str, reply: &Reply) -> bool {
        if reply.status == 200 {
            let body: Value = serde_json::from_str(&reply.text).unwrap();
            let call = body["callId"].as_str().unwrap().to_string();
            let before = self.answered.insert(key.to_string(), call.clone());
            assert!(
                before.as_ref().is_none_or(|b| *b == call),
                "{key} answered with two call ids: {before:?} and {call}"
            );
            self.replayed += usize::from(reply.header("idempotent-replayed") == Some("true"));
            return true;
        }
        if reply.status == 500 || (reply.status.is_server_error() && reply.header("retry-after").is_none()) {
            self.forbidden.push(format!("{key}: {} {}", reply.status, reply.text));
        }
        false
    }
}

/// One client of A: keyed invokes until A stops answering.
async fn client(a: Arc<Kiosk>, path: String, w: usize, seen: Arc<Mutex<Requests>>) {
    for n in 0..2_000 {
        let key = format!("w{w}-{n}");
        let Some(reply) = keyed(&a.api, &a.tenant, &path, &key, &key).await else {
            seen.lock().unwrap().unanswered.push(key);
            return;
        };
        let done = seen.lock().unwrap().file(&key, &reply);
        assert!(done || reply.status.is_server_error(), "{key}: {} {}", reply.status, reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_unanswered_requests_are_billed_once_on_the_other() {
    let seed: u64 = std::env::var("KIOSK_KILL_SEED")
        .ok()
        .map_or_else(|| super::now_ms() as u64, |v| v.parse().expect("KIOSK_KILL_SEED"));
    eprintln!("faults::failover: KIOSK_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let database = common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    // One-second windows with two-second leases: the replicas share collection through
    // the database, and A's leases lapse soon after it dies.
    let toml = "[usage]\nwindow-seconds = 1\nlease-seconds = 2\n";
    let started = super::now_ms();
    let a = Arc::new(Kiosk::start(dir.path(), &database, toml, "a"));
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let b = Kiosk::start(&dir.path().join("b"), &database, toml, "b");
    let installation = a.install().await;
    let path = format!("/v1/tenants/{TENANT}/installations/{installation}/invoke/evaluate");

    let seen = Arc::new(Mutex::new(Requests::default()));
    let clients: Vec<_> = (0..6).map(|w| tokio::spawn(client(a.clone(), path.clone(), w, seen.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
    let pid = a.pid();
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    let killed = super::now_ms();
    for c in clients {
        c.await.unwrap();
    }

    // Every request A left unanswered goes to B with its key, until B answers 200.
    let unanswered = std::mem::take(&mut seen.lock().unwrap().unanswered);
    for key in &unanswered {
        let mut tries = 0;
        loop {
            let reply = keyed(&b.api, &b.tenant, &path, key, key).await.expect("replica B answers");
            if seen.lock().unwrap().file(key, &reply) {
                break;
            }
            tries += 1;
            assert!(tries < 20, "{key}: B answered {} {} 20 times", reply.status, reply.text);
        }
    }
    // B keeps serving new requests too.
    let reply = keyed(&b.api, &b.tenant, &path, "after-the-kill", "after").await.expect("B answers");
    assert!(seen.lock().unwrap().file("after-the-kill", &reply), "{} {}", reply.status, reply.text);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.forbidden.is_empty(), "answers that must never be:\n{}", seen.forbidden.join("\n"));
    let db = Db::open(&database).await;
    // Every window that ended before the kill is collected (B takes A's lapsed leases),
    // once, and audited.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let windows = loop {
        match db.windows_closed(1000, started, killed).await {
            Some(Ok(count)) => break count,
            Some(Err(lost)) => panic!("{lost}"),
            None => {}
        }
        assert!(std::time::Instant::now() < deadline, "windows ended before the kill not collected within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let collected = db.windows_once().await;
    assert!(db.windows_audited().await >= collected, "every collected window is audited");
    let billed = db.host_events_by_call().await;
    for (key, call) in &seen.answered {
        assert_eq!(billed.get(call), Some(&1), "{key} was answered with call {call}: its usage must count once");
    }
    assert_eq!(
        billed.len(),
        seen.answered.len(),
        "every metered call is one that a client was answered (no request billed twice)"
    );
    eprintln!(
        "faults::failover: {} requests answered ({} by B after A was killed, {} of them from A's stored answer); \
         {windows} windows ended before the kill, all collected; {collected} collected in all",
        seen.answered.len(),
        unanswered.len(),
        seen.replayed
    );
    assert!(seen.answered.len() > unanswered.len() + 1, "A answered requests before it was killed");
    db.close().await;
}
