//! Uninstall always succeeds for the tenant: an app whose hook refuses or traps cannot
//! lock a tenant in. The failure is reported and audited, the installation and its data
//! are gone, and later partner usage for it is refused. SQLite and PostgreSQL.

use kiosk::store::Principal;
use kiosk_api::usage::RecordStatus;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row as _;

use crate::common;

async fn uninstall_cannot_be_refused(database: Option<String>) {
    let server = common::hostile_server(database, "", |_| {}).await;
    let store = server.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;

    for (mode, says) in
        [("deny-uninstall", "the app refused: you may never leave"), ("trap-uninstall", "the hook failed")]
    {
        let install = json!({"app": "test/hostile", "version": "0.0.1", "config": {"mode": mode}});
        let id = server.install(&tenant, "demo", install).await.id;
        let path = format!("/v1/tenants/demo/installations/{id}");

        let (status, body) = server.call(Some(&tenant), Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{mode}");
        assert_eq!(body["uninstalled"], true);
        assert_eq!(body["hook"]["succeeded"], false);
        assert!(body["hook"]["detail"].as_str().unwrap().contains(says), "{mode}: {body}");
        assert_eq!(server.call(Some(&tenant), Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);

        // Audited, with the hook's failure, in the same transaction as the removal.
        let target = format!("demo/{id}");
        let actions: Vec<String> = sqlx::query("SELECT action FROM audit WHERE target = $1 ORDER BY id")
            .bind(&target)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("action"))
            .collect();
        assert!(
            actions.ends_with(&["installation.uninstall-hook-failed".into(), "installation.uninstall".into()]),
            "{actions:?}"
        );
        let kv: i64 = sqlx::query("SELECT COUNT(*) AS n FROM kv WHERE installation = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get("n");
        assert_eq!(kv, 0, "its key-value data is gone");

        // Partner usage for after the uninstall is refused.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let record = json!({"tenant": "demo", "app": "test/hostile", "sku": "events", "quantity": 1,
                            "timestampMs": now + 1_000, "idempotencyKey": format!("after-{id}")});
        let results = server.post_usage(&partner, "test", json!([record])).await;
        assert_eq!(results[0].status, RecordStatus::Refused, "{results:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_trapping_uninstall_hook_never_locks_the_tenant_in_on_sqlite() {
    uninstall_cannot_be_refused(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_trapping_uninstall_hook_never_locks_the_tenant_in_on_postgres() {
    uninstall_cannot_be_refused(Some(common::fresh_postgres_database().await)).await;
}
