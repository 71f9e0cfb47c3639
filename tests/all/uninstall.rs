//! Uninstall always succeeds for the tenant: an app whose hook refuses or traps cannot
//! lock a tenant in. The failure is reported and audited, the installation and its data
//! are gone, and later partner usage for it is refused. SQLite and PostgreSQL.

use kiosk::store::Principal;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;

async fn uninstall_cannot_be_refused(database: Option<String>) {
    let (started, _dir) = common::hostile_server(database, "", |_| {}).await;
    let store = &started.state.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;
    let base = format!("http://{}", started.addr);
    let http = reqwest::Client::new();

    for (mode, says) in
        [("deny-uninstall", "the app refused: you may never leave"), ("trap-uninstall", "the hook failed")]
    {
        let resp = http
            .post(format!("{base}/v1/tenants/demo/installations"))
            .bearer_auth(&tenant)
            .json(&json!({"app": "test/hostile", "version": "0.0.1", "config": {"mode": mode}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let url = format!("{base}/v1/tenants/demo/installations/{id}");

        let resp = http.delete(&url).bearer_auth(&tenant).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{mode}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["uninstalled"], true);
        assert_eq!(body["hook"]["succeeded"], false);
        assert!(body["hook"]["detail"].as_str().unwrap().contains(says), "{mode}: {body}");
        assert_eq!(http.get(&url).bearer_auth(&tenant).send().await.unwrap().status(), StatusCode::NOT_FOUND);

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
        let resp = http
            .post(format!("{base}/v1/partners/test/usage"))
            .bearer_auth(&partner)
            .json(&json!({"records": [record]}))
            .send()
            .await
            .unwrap();
        let results: Value = resp.json().await.unwrap();
        assert_eq!(results["results"][0]["status"], "refused", "{results}");
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
