//! Secrets wherever the app's schema marks them `writeOnly` — nested objects, array
//! items, `$ref`/`$defs`, `anyOf`, `additionalProperties` — are sealed, handed to the app
//! in full, and never returned or stored in plain text, on SQLite and PostgreSQL.

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::Installation;

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
    let server = common::hostile_server(database.clone(), "", |m| m["config"] = schema()).await;
    let token = server.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let base = "/v1/tenants/demo/installations";
    let mut answers: Vec<String> = Vec::new();

    let install = json!({"app": "test/hostile", "version": "0.0.1", "config": config()});
    let reply = server.send(Some(&token), Method::POST, base, Some(install)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let installed: Installation = reply.parse();
    answers.push(reply.text);
    let id = installed.id;
    assert_eq!(
        installed.secrets_set,
        ["/auth/token", "/db/password", "/either", "/headers/x-api-key", "/servers/0/key", "/servers/1/key"]
    );
    assert_eq!(
        installed.config,
        json!({"auth": {"user": "ann"}, "db": {}, "servers": [{"host": "a"}, {"host": "b"}], "headers": {}})
    );

    // Configure without the secrets: they keep their values, and the app sees them all.
    // `probe` (public) makes the app count the values it gets that start with it.
    let patch =
        json!({"config": {"auth": {"user": "bob"}, "servers": [{"host": "a"}, {"host": "b"}], "probe": "s3cr3t-"}});
    let reply = server.send(Some(&token), Method::PATCH, &format!("{base}/{id}"), Some(patch)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let configured: Installation = reply.parse();
    answers.push(reply.text);
    assert_eq!(configured.config["auth"], json!({"user": "bob"}));
    assert_eq!(configured.secrets_set.len(), 6);
    let (_, seen) = server.invoke(&token, "demo", &id, "kv-get", json!("seen-in-configure")).await;
    assert_eq!(seen["output"], 6, "the app was handed every secret: {seen}");

    for path in [base.to_string(), format!("{base}/{id}")] {
        answers.push(server.send(Some(&token), Method::GET, &path, None).await.text);
    }
    for answer in &answers {
        assert!(leaks(answer.as_bytes()).is_empty(), "a secret in a response: {answer}");
    }

    // Nothing in the database is plain text.
    match &database {
        None => {
            for entry in std::fs::read_dir(server.dir().join("data")).unwrap().flatten() {
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
