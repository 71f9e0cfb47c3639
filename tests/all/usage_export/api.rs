//! Sinks set through the API (`PUT`/`DELETE /v1/sinks/{sink}`), on a real `kiosk serve`
//! and a local webhook receiver: a bad setting is refused naming it, a new sink needs its
//! key and never shows it, every replica starts pushing it, a replace without `secret`
//! keeps the key and takes the new mapping, a removal stops it, and a sink of the config
//! file cannot be changed here.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::receiver;
use super::{OPERATOR, SECRETS_KEY, eventually, load};
use crate::common;
use crate::common::api::Api;

const KEY: &str = "whsec-kiosk-api-sink-0123456789";

async fn put(api: &Api, name: &str, body: Value) -> (StatusCode, Value) {
    api.call(Some(OPERATOR), Method::PUT, &format!("/v1/sinks/{name}"), Some(body)).await
}

async fn api_sinks(database: String) {
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver::start_plain(KEY.as_bytes()).await;
    let inbox = rx.inbox.clone();
    std::fs::write(dir.path().join("file-key"), "a-key-in-a-file-0123456789\n").unwrap();
    let port = common::registry::free_port();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{data}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\n\
             operator-token = \"{OPERATOR}\"\nsecrets-key = \"{SECRETS_KEY}\"\n[usage]\nwindow-seconds = 315360000\n\
             [export]\napi-hosts = [\"127.0.0.1\"]\n\
             [[sinks]]\nname = \"from-file\"\nkind = \"webhook\"\nendpoint = \"https://billing.invalid/\"\n\
             secret-file = \"{key}\"\n",
            data = dir.path().join("data").display(),
            key = dir.path().join("file-key").display(),
        ),
    )
    .unwrap();
    let demo_app = common::demo_app("budget-pacing");
    let args = ["--config", config.to_str().unwrap(), "--demo-app", demo_app.as_str()];
    let (child, text) = common::spawn_serve(&args, &[], &dir.path().join("serve.log"));
    let _server = super::Replica { child, api: Api::new(format!("http://127.0.0.1:{port}")) };
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let (tenant, partner) = (common::demo_token(&text, "TENANT_TOKEN"), common::demo_token(&text, "PARTNER_TOKEN"));
    let store = kiosk::store::Store::connect(&database).await.unwrap();

    let sink = |customer: &str| {
        json!({"kind": "webhook", "endpoint": format!("http://127.0.0.1:{}/hooks/usage", rx.port), "http": true,
               "privateAddresses": true, "customers": {"demo": customer}, "skuIsMeter": true, "start": "beginning"})
    };
    // Refusals name what is wrong.
    let (status, problem) = put(&api, "billing", sink("cus_1")).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("secret")), "{problem}");
    let mut bad = sink("cus_1");
    bad["secret"] = json!(KEY);
    bad["batch"] = json!(0);
    let (status, problem) = put(&api, "billing", bad.clone()).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("batch")), "{problem}");
    bad["batch"] = json!(10);
    bad["endpoint"] = json!("http://127.0.0.1:1/x");
    bad["privateAddresses"] = json!(false);
    let (status, problem) = put(&api, "billing", bad.clone()).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("endpoint")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("loopback"), "{problem}");
    bad["endpoint"] = json!("https://elsewhere.example/usage");
    let (status, problem) = put(&api, "billing", bad.clone()).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("endpoint")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("[export] api-hosts"), "{problem}");
    bad["secretFile"] = json!("/etc/passwd");
    let (status, problem) = put(&api, "billing", bad).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/secretFile")), "{problem}");
    let (status, problem) =
        put(&api, "Bad_Name", json!({"kind": "webhook", "endpoint": "https://b.example/", "secret": KEY})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sink")), "{problem}");
    let (status, problem) =
        put(&api, "from-file", json!({"kind": "webhook", "endpoint": "https://b.example/", "secret": KEY})).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:kiosk:problem:sink-in-config")),
        "{problem}"
    );
    let (status, _) = api.call(Some(OPERATOR), Method::DELETE, "/v1/sinks/from-file", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api.call(Some(&tenant), Method::PUT, "/v1/sinks/billing", Some(sink("cus_1"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the operator's only");

    // Created: its key never shown; the server starts pushing it.
    let mut good = sink("cus_1");
    good["secret"] = json!(KEY);
    let (status, body) = put(&api, "billing", good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["source"], "api", "{body}");
    assert!(!body.to_string().contains(KEY), "the key is never shown: {body}");
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let installation = api.install(&tenant, "demo", install).await.id;
    load(&api, &tenant, &partner, &installation, 1, &[2]).await;
    let delivered = |customer: &'static str| {
        let store = store.clone();
        let inbox = inbox.clone();
        async move {
            let ids: BTreeSet<String> =
                store.usage_after(0, 1_000_000).await.unwrap().iter().map(kiosk_core::export::wire::event_id).collect();
            let held = inbox.events.lock().unwrap();
            let with: BTreeSet<String> = held
                .values()
                .filter(|r| r["customer"] == customer)
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            let all: BTreeSet<String> = held.values().map(|r| r["id"].as_str().unwrap().to_string()).collect();
            (all != ids || with.is_empty()).then(|| format!("{} of {} held", all.len(), ids.len()))
        }
    };
    eventually("the API sink delivers the ledger", async || delivered("cus_1").await).await;

    // A new endpoint needs the key again; a replace of the mapping alone keeps it.
    let mut moved = sink("cus_2");
    moved["endpoint"] = json!(format!("http://127.0.0.1:{}/hooks/usage/v2", rx.port));
    let (status, problem) = put(&api, "billing", moved).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("secret")), "{problem}");
    // Replaced without a key: the stored key signs on, under the new mapping.
    let (status, body) = put(&api, "billing", sink("cus_2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mappedTenants"], 1, "{body}");
    load(&api, &tenant, &partner, &installation, 2, &[3]).await;
    eventually("the replaced sink delivers under the new mapping", async || delivered("cus_2").await).await;
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0, "the kept key signed every body");
    let (_, list) = api.call(Some(OPERATOR), Method::GET, "/v1/sinks", None).await;
    let sources: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("billing", "api"), ("from-file", "config")], "{list}");
    assert!(api.audit_has(OPERATOR, "sink.put", "billing").await);

    // Removed: gone from the API, with its cursor.
    let (status, _) = api.call(Some(OPERATOR), Method::DELETE, "/v1/sinks/billing", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.call(Some(OPERATOR), Method::GET, "/v1/sinks/billing", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call(Some(OPERATOR), Method::DELETE, "/v1/sinks/billing", None).await.0, StatusCode::NOT_FOUND);
    assert!(api.audit_has(OPERATOR, "sink.delete", "billing").await);
    let cursors: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sink_cursors WHERE sink = 'billing'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(cursors, 0, "its cursor went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_set_through_the_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    api_sinks(format!("sqlite://{}", dir.path().join("k.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_set_through_the_api_on_postgresql() {
    api_sinks(common::fresh_postgres_database().await).await;
}
