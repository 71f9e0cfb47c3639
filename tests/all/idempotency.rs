//! Client idempotency keys on invoke, through the HTTP API on SQLite and PostgreSQL: a
//! request sent again with its `Idempotency-Key` gets the first answer (same call id,
//! same usage, `Idempotent-Replayed: true`) and nothing runs or is metered again, even
//! when the copies race; the key with another request is refused naming the header;
//! keys are the tenant's own; malformed keys are refused before anything runs. The same
//! for installs: copies of a keyed install create one installation.

use std::collections::BTreeMap;

use kiosk::store::Principal;
use kiosk_api::usage::UsageReport;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{TestServer, kind};

fn evaluate(campaign: &str) -> Value {
    json!({"campaignId": campaign, "budget": 300, "flightDays": 30, "dailySpend": [10, 10]})
}

/// Sends an invoke with `key` (raw bytes, so malformed keys can be sent): status, the
/// `Idempotent-Replayed` header, the body.
async fn keyed(
    s: &TestServer,
    token: &str,
    (tenant, id): (&str, &str),
    key: &[u8],
    input: Value,
) -> (StatusCode, Option<String>, Value) {
    let path = format!("/v1/tenants/{tenant}/installations/{id}/invoke/evaluate");
    let value = reqwest::header::HeaderValue::from_bytes(key).expect("a header value");
    let reply = s.request(Some(token), Method::POST, &path).header("Idempotency-Key", value).json(&input).send().await;
    let reply = reply.expect("the server answers");
    let status = reply.status();
    let replayed = reply.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_string());
    let body: Value = reply.json().await.expect("a JSON body");
    (status, replayed, body)
}

async fn totals(s: &TestServer, token: &str, tenant: &str) -> BTreeMap<String, u128> {
    let report: UsageReport = s.usage(token, &format!("/v1/tenants/{tenant}/usage")).await;
    report.totals
}

async fn keys_suite(database: Option<String>) {
    // No usage window completes during the test: totals count invokes only.
    let toml = "[usage]\nwindow-seconds = 315360000\n";
    let s = TestServer::fresh_with(database, toml, vec![common::demo_app("budget-pacing")]).await;
    let store = s.store();
    let operator = store.create_token(&Principal::Operator, "o", "operator").await.unwrap().1;
    s.create_tenant(&operator, "other").await;
    let (status, body) =
        s.call(Some(&operator), Method::PUT, "/v1/entitlements/other/acme/budget-pacing", Some(json!({}))).await;
    assert!(status.is_success(), "{status}: {body}");
    let demo = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let other = store.create_token(&Principal::Tenant("other".into()), "t", "operator").await.unwrap().1;
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let id = s.install(&demo, "demo", install.clone()).await.id;
    let other_id = s.install(&other, "other", install).await.id;
    let at = ("demo", id.as_str());

    // The first request runs; the same request again gets its answer, byte for byte,
    // marked as replayed, and meters, stores and logs nothing more.
    let (status, replayed, first) = keyed(&s, &demo, at, b"order-1", evaluate("c1")).await;
    assert_eq!((status, replayed.as_deref()), (StatusCode::OK, None), "{first}");
    let call_id = first["callId"].as_str().unwrap().to_string();
    assert_eq!(first["usage"].as_array().map(Vec::len), Some(2), "pacing-check and rows-scanned: {first}");
    let metered = totals(&s, &demo, "demo").await;
    assert_eq!(metered, BTreeMap::from([("pacing-check".into(), 1), ("rows-scanned".into(), 2)]));
    let kv_after_first = s.call_as::<Value>(Some(&demo), Method::GET, "/v1/tenants/demo/quotas", None, StatusCode::OK);
    let kv_after_first = kv_after_first.await["kvBytes"]["used"].clone();
    let lines_of = |lines: &[String]| lines.len();
    let logged = lines_of(&s.log_messages(&demo, "demo", &id).await);
    for _ in 0..3 {
        let (status, replayed, again) = keyed(&s, &demo, at, b"order-1", evaluate("c1")).await;
        assert_eq!((status, replayed.as_deref()), (StatusCode::OK, Some("true")), "{again}");
        assert_eq!(again, first, "the replay is the first answer");
    }
    assert_eq!(totals(&s, &demo, "demo").await, metered, "a replay meters nothing");
    let kv_now = s.call_as::<Value>(Some(&demo), Method::GET, "/v1/tenants/demo/quotas", None, StatusCode::OK);
    assert_eq!(kv_now.await["kvBytes"]["used"], kv_after_first, "a replay writes no key-value bytes");
    assert_eq!(lines_of(&s.log_messages(&demo, "demo", &id).await), logged, "a replay logs nothing");
    let calls = s.log_messages(&demo, "demo", &id).await;
    assert!(!calls.is_empty(), "the keyed call's lines are in the installation's log");

    // Without a key, each request runs (the control: the meter does count).
    for _ in 0..2 {
        let (status, body) = s.invoke(&demo, "demo", &id, "evaluate", evaluate("c1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_ne!(body["callId"], call_id.as_str());
    }
    assert_eq!(totals(&s, &demo, "demo").await["pacing-check"], 3);

    // The key with another request is refused, naming the header; nothing runs.
    for (input, what) in [(evaluate("c2"), "another input")] {
        let (status, _, problem) = keyed(&s, &demo, at, b"order-1", input).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {problem}");
        assert_eq!((kind(&problem), problem["field"].as_str()), ("idempotency-key-reused", Some("Idempotency-Key")));
    }
    let path = format!("/v1/tenants/demo/installations/{id}/invoke/report-status");
    let reply = s.request(Some(&demo), Method::POST, &path).header("Idempotency-Key", "order-1").json(&json!({}));
    let reply = reply.send().await.unwrap();
    let status = reply.status();
    let problem: Value = reply.json().await.unwrap();
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY && kind(&problem) == "idempotency-key-reused",
        "another operation with the key: {status} {problem}"
    );
    assert_eq!(totals(&s, &demo, "demo").await["pacing-check"], 3, "a refused key ran nothing");

    // The app's refusal is an answer too: a retry gets the same refusal of the same call
    // and runs nothing.
    let (status, _, refused) = keyed(&s, &demo, at, b"bad-input-1", json!({"campaignId": 5})).await;
    assert_eq!((status, kind(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "app-refused"), "{refused}");
    let refused_call = refused["callId"].as_str().expect("the refused call's id").to_string();
    let logged = s.log_messages(&demo, "demo", &id).await.len();
    let (status, _, again) = keyed(&s, &demo, at, b"bad-input-1", json!({"campaignId": 5})).await;
    assert_eq!((status, again["callId"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(refused_call.as_str())));
    assert_eq!(again["detail"], refused["detail"], "{again}");
    assert_eq!(s.log_messages(&demo, "demo", &id).await.len(), logged, "the replayed refusal ran nothing");

    // Keys are the tenant's own: another tenant's "order-1" is a request of its own.
    let (status, replayed, theirs) = keyed(&s, &other, ("other", &other_id), b"order-1", evaluate("c1")).await;
    assert_eq!((status, replayed), (StatusCode::OK, None), "{theirs}");
    assert_ne!(theirs["callId"], call_id.as_str());
    assert_eq!(totals(&s, &other, "other").await["pacing-check"], 1);

    // Malformed keys are refused before anything runs, naming the header.
    let long = vec![b'k'; 256];
    for key in [&b""[..], b"two words", "caf\u{e9}".as_bytes(), &long] {
        let (status, _, problem) = keyed(&s, &demo, at, key, evaluate("c1")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key:?}: {problem}");
        assert_eq!((kind(&problem), problem["field"].as_str()), ("idempotency-key-invalid", Some("Idempotency-Key")));
    }
    assert_eq!(totals(&s, &demo, "demo").await["pacing-check"], 3, "a malformed key ran nothing");

    // Copies racing with one key: every one answers 200 with one call's answer, and that
    // call alone is metered.
    let copies: Vec<_> = (0..8)
        .map(|_| {
            let (api, token, id) = (s.api.clone(), demo.clone(), id.clone());
            tokio::spawn(async move {
                let path = format!("/v1/tenants/demo/installations/{id}/invoke/evaluate");
                let reply = api.request(Some(&token), Method::POST, &path).header("Idempotency-Key", "burst-7");
                let reply = reply.json(&evaluate("c7")).send().await.unwrap();
                (reply.status(), reply.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for copy in copies {
        let (status, body) = copy.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "one answer for every copy: {answers:?}");
    assert_eq!(totals(&s, &demo, "demo").await["pacing-check"], 4, "the racing copies were metered once");

    // An install sent again with its key gets the installation the first one created,
    // and installs nothing; racing copies install one.
    let installs = "/v1/tenants/demo/installations";
    let body = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k2"}});
    let count = || async {
        let listed: Value = s.call_as(Some(&demo), Method::GET, installs, None, StatusCode::OK).await;
        listed["items"].as_array().map_or(0, Vec::len)
    };
    let before = count().await;
    let copies: Vec<_> = (0..4)
        .map(|_| {
            let (api, token, body) = (s.api.clone(), demo.clone(), body.clone());
            tokio::spawn(async move {
                let reply = api.request(Some(&token), Method::POST, installs).header("Idempotency-Key", "install-1");
                let reply = reply.json(&body).send().await.unwrap();
                let replayed = reply.headers().get("idempotent-replayed").is_some();
                (reply.status(), replayed, reply.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut replays = 0;
    for copy in copies {
        let (status, replayed, installed) = copy.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{installed}");
        replays += usize::from(replayed);
        ids.push(installed["id"].as_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|i| i == &ids[0]), "one installation for every copy: {ids:?}");
    assert_eq!(replays, 3, "three copies answered with the first one's installation");
    assert_eq!(count().await, before + 1, "the copies installed once");
    let reply = s.request(Some(&demo), Method::POST, installs).header("Idempotency-Key", "install-1");
    let reply = reply.json(&json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k3"}}));
    let reply = reply.send().await.unwrap();
    let status = reply.status();
    let problem: Value = reply.json().await.unwrap();
    assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"), "{problem}");
    assert_eq!(count().await, before + 1, "a reused key installs nothing");
}

/// A keyed upgrade sent again gets the installation as the first moved it, where the same
/// request without a key would be refused (nothing newer to move to).
async fn keyed_upgrade(database: Option<String>) {
    let s = common::budget_pacing_server(database, &["1.4.34", "1.5.0"]).await;
    let demo = s.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let id = s.install(&demo, "demo", install).await.id;
    let path = format!("/v1/tenants/demo/installations/{id}/upgrade");
    let upgrade = |key: &'static str, body: Value| {
        let request = s.request(Some(&demo), Method::POST, &path).header("Idempotency-Key", key).json(&body);
        async move {
            let reply = request.send().await.unwrap();
            let (status, replayed) = (reply.status(), reply.headers().get("idempotent-replayed").is_some());
            (status, replayed, reply.json::<Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = upgrade("move-1", json!({})).await;
    assert_eq!((status, replayed, first["version"].as_str()), (StatusCode::OK, false, Some("1.5.0")), "{first}");
    let (status, replayed, again) = upgrade("move-1", json!({})).await;
    assert_eq!((status, replayed, again["version"].as_str()), (StatusCode::OK, true, Some("1.5.0")), "{again}");
    assert_eq!(again["rowVersion"], first["rowVersion"], "the retry moved nothing");
    let (status, _, problem) = upgrade("move-1", json!({"version": "1.4.34", "allowDowngrade": true})).await;
    assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"), "{problem}");
    let (status, body) = s.call(Some(&demo), Method::POST, &path, Some(json!({}))).await;
    assert_eq!((status, kind(&body)), (StatusCode::CONFLICT, "no-newer-version"), "without a key: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_upgrades_on_sqlite() {
    keyed_upgrade(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_upgrades_on_postgresql() {
    keyed_upgrade(Some(common::fresh_postgres_database().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_on_sqlite() {
    keys_suite(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_on_postgresql() {
    keys_suite(Some(common::fresh_postgres_database().await)).await;
}
