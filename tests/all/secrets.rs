//! Secrets wherever the app's schema marks them `writeOnly` — nested objects, array
//! items, `$ref`/`$defs`, `anyOf`, `additionalProperties` — are sealed, handed to the app
//! in full, and never returned or stored in plain text, on SQLite and PostgreSQL.

use kiosk::store::Principal;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common;

const MARKERS: [&str; 6] =
    ["s3cr3t-token", "s3cr3t-pass", "s3cr3t-key0", "s3cr3t-key1", "s3cr3t-either", "s3cr3t-header"];

fn schema() -> Value {
    json!({
        "type": "object",
        "$defs": {"password": {"type": "string", "writeOnly": true}},
        "properties": {
            "auth": {"type": "object", "properties": {
                "user": {"type": "string"}, "token": {"type": "string", "writeOnly": true}}},
            "db": {"type": "object", "properties": {"password": {"$ref": "#/$defs/password"}}},
            "servers": {"type": "array", "items": {"type": "object", "properties": {
                "host": {"type": "string"}, "key": {"type": "string", "writeOnly": true}}}},
            "either": {"anyOf": [{"type": "string", "writeOnly": true}, {"type": "number"}]},
            "headers": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": true}},
            "mode": {"type": "string"},
            "probe": {"type": "string"}
        }
    })
}

fn config() -> Value {
    json!({
        "auth": {"user": "ann", "token": "s3cr3t-token"},
        "db": {"password": "s3cr3t-pass"},
        "servers": [{"host": "a", "key": "s3cr3t-key0"}, {"host": "b", "key": "s3cr3t-key1"}],
        "either": "s3cr3t-either",
        "headers": {"x-api-key": "s3cr3t-header"}
    })
}

fn leaks(bytes: &[u8]) -> Vec<&'static str> {
    MARKERS.iter().copied().filter(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes())).collect()
}

async fn secrets_everywhere(database: Option<String>) {
    let (started, dir) = common::hostile_server(database.clone(), "", |m| m["config"] = schema()).await;
    let token = started.state.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let base = format!("http://{}/v1/tenants/demo/installations", started.addr);
    let http = reqwest::Client::new();
    let mut answers: Vec<String> = Vec::new();

    let resp = http
        .post(&base)
        .bearer_auth(&token)
        .json(&json!({"app": "test/hostile", "version": "0.0.1", "config": config()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let text = resp.text().await.unwrap();
    let installed: Value = serde_json::from_str(&text).unwrap();
    answers.push(text);
    let id = installed["id"].as_str().unwrap().to_string();
    assert_eq!(
        installed["secretsSet"],
        json!(["/auth/token", "/db/password", "/either", "/headers/x-api-key", "/servers/0/key", "/servers/1/key"])
    );
    assert_eq!(
        installed["config"],
        json!({"auth": {"user": "ann"}, "db": {}, "servers": [{"host": "a"}, {"host": "b"}], "headers": {}})
    );

    // Configure without the secrets: they keep their values, and the app sees them all.
    // `probe` (public) makes the app count the values it gets that start with it.
    let patch =
        json!({"config": {"auth": {"user": "bob"}, "servers": [{"host": "a"}, {"host": "b"}], "probe": "s3cr3t-"}});
    let resp = http.patch(format!("{base}/{id}")).bearer_auth(&token).json(&patch).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let configured: Value = serde_json::from_str(&text).unwrap();
    answers.push(text);
    assert_eq!(configured["config"]["auth"], json!({"user": "bob"}));
    assert_eq!(configured["secretsSet"].as_array().unwrap().len(), 6);
    let resp = http
        .post(format!("{base}/{id}/invoke/kv-get"))
        .bearer_auth(&token)
        .json(&json!("seen-in-configure"))
        .send()
        .await
        .unwrap();
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["output"], 6, "the app was handed every secret: {seen}");

    for path in [base.clone(), format!("{base}/{id}")] {
        answers.push(http.get(path).bearer_auth(&token).send().await.unwrap().text().await.unwrap());
    }
    for answer in &answers {
        assert!(leaks(answer.as_bytes()).is_empty(), "a secret in a response: {answer}");
    }

    // Nothing in the database is plain text.
    match &database {
        None => {
            for entry in std::fs::read_dir(dir.path().join("data")).unwrap().flatten() {
                if entry.path().is_file() {
                    let found = leaks(&std::fs::read(entry.path()).unwrap());
                    assert!(found.is_empty(), "{found:?} in {}", entry.path().display());
                }
            }
        }
        Some(url) => {
            use sqlx::{Connection as _, Row as _};
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let rows = sqlx::query(
                "SELECT config AS t, secrets AS b FROM installations UNION ALL SELECT key, value FROM kv
                 UNION ALL SELECT detail, NULL FROM audit",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for r in rows {
                let t: String = r.get("t");
                let b: Option<Vec<u8>> = r.get("b");
                assert!(leaks(t.as_bytes()).is_empty(), "{t}");
                assert!(leaks(&b.unwrap_or_default()).is_empty());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_referenced_secrets_are_sealed_on_sqlite() {
    secrets_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_referenced_secrets_are_sealed_on_postgres() {
    secrets_everywhere(Some(common::fresh_postgres_database().await)).await;
}
