//! The partner usage API at the trust boundary: exact tenant names (no pattern can
//! match another tenant), the installation named when a tenant has several, a large
//! batch processed fast, on SQLite and PostgreSQL.

use std::time::Instant;

use kiosk::store::Principal;
use kiosk_api::usage::RecordStatus::{Recorded, Refused};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn partner_usage(database: Option<String>) {
    let server = common::hostile_server(database, "", |_| {}).await;
    let store = server.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;
    let install = async || server.install(&tenant, "demo", json!({"app": "test/hostile", "version": "0.0.1"})).await.id;
    let post = async |records: Vec<Value>| server.post_usage(&partner, "test", Value::Array(records)).await;
    let record = |tenant: &str, key: &str, installation: Option<&str>| {
        let mut r = json!({"tenant": tenant, "app": "test/hostile", "sku": "events", "quantity": 1,
                           "timestampMs": now_ms(), "idempotencyKey": key});
        if let Some(id) = installation {
            r["installation"] = id.into();
        }
        r
    };

    let first = install().await;
    // Names that would be patterns in a LIKE are no tenant ids: refused, nothing counted.
    let results =
        post(vec![record("%", "pct", None), record("_emo", "underscore", None), record("dem%", "prefix", None)]).await;
    for r in &results {
        assert_eq!(r.status, Refused, "{results:?}");
    }
    assert!(results[0].reason.as_deref().unwrap().contains("is not a tenant id"), "{results:?}");

    // One installation: found without naming it. Two: the partner must say which.
    let results = post(vec![record("demo", "one", None)]).await;
    assert_eq!(results[0].status, Recorded, "{results:?}");
    let second = install().await;
    let results = post(vec![
        record("demo", "ambiguous", None),
        record("demo", "to-second", Some(&second)),
        record("demo", "to-nowhere", Some("no-such-installation")),
    ])
    .await;
    assert_eq!(results[0].status, Refused);
    assert!(results[0].reason.as_deref().unwrap().contains("has 2 installations"), "{results:?}");
    assert_eq!(results[1].status, Recorded, "{results:?}");
    assert_eq!(results[2].status, Refused);
    let landed: Vec<(String, String)> =
        sqlx::query("SELECT idem_key, installation FROM usage_events WHERE source = 'partner' ORDER BY idem_key")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("idem_key"), r.get("installation")))
            .collect();
    assert_eq!(landed, [("test/one".to_string(), first.clone()), ("test/to-second".to_string(), second.clone())]);

    // A 15,000-record batch (one installation named) is validated and committed quickly.
    let big: Vec<Value> = (0..15_000).map(|i| record("demo", &format!("big-{i}"), Some(&first))).collect();
    let started_at = Instant::now();
    let results = post(big).await;
    let took = started_at.elapsed();
    assert_eq!(results.len(), 15_000);
    assert!(results.iter().all(|r| r.status == Recorded));
    println!("15,000-record partner batch: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_usage_matches_tenants_exactly_and_names_the_installation_on_sqlite() {
    partner_usage(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_usage_matches_tenants_exactly_and_names_the_installation_on_postgres() {
    partner_usage(Some(common::fresh_postgres_database().await)).await;
}
