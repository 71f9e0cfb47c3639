//! Period statements (issue 29), on SQLite and PostgreSQL: a tenant's month and a
//! partner's month per app and SKU, with the unit its version declares, quantities
//! summed without wrapping (two events of 2^53 − 1), the same bytes (JSON and CSV) when
//! regenerated, ids that do not change, and what the ledger holds, line for line.

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;

const MAX: u64 = (1 << 53) - 1;

async fn statements(database: Option<String>) {
    let server = common::hostile_server(database, "", |_| {}).await;
    let store = server.store();
    store.create_tenant("other", "Other", "operator").await.unwrap();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let other = store.create_token(&Principal::Tenant("other".into()), "o", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;
    let operator = store.create_token(&Principal::Operator, "op", "operator").await.unwrap().1;
    let id = server.install(&tenant, "demo", json!({"app": "test/hostile", "version": "0.0.1"})).await.id;
    for _ in 0..3 {
        server.invoked(&tenant, "demo", &id, "echo", json!("hi")).await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records: Vec<Value> = [5, MAX, MAX]
        .iter()
        .enumerate()
        .map(|(i, q)| {
            json!({"tenant": "demo", "app": "test/hostile", "sku": "events", "quantity": q,
                   "timestampMs": now - 1000, "idempotencyKey": format!("s-{i}")})
        })
        .collect();
    server.post_usage(&partner, "test", Value::Array(records)).await;
    // This month, as the ledger books it (UTC).
    let period = &kiosk_core::export::wire::rfc3339(now)[..7];

    let path = format!("/v1/tenants/demo/statements/{period}");
    let first = server.send(Some(&tenant), Method::GET, &path, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let statement: Value = serde_json::from_str(&first.text).unwrap();
    assert_eq!(statement["period"], period);
    assert_eq!(statement["final"], false, "this month has not ended");
    let lines = statement["lines"].as_array().unwrap();
    let line = |sku: &str| lines.iter().find(|l| l["sku"] == sku).unwrap_or_else(|| panic!("{sku}: {statement}"));
    assert_eq!(line("calls")["unit"], "call");
    assert_eq!(line("calls")["quantity"], 3);
    assert_eq!(line("calls")["events"], 3);
    assert_eq!(line("events")["unit"], "event");
    // 5 + 2 × (2^53 − 1): past what a JSON double holds exactly, written exactly.
    assert!(first.text.contains("\"quantity\":18014398509481987"), "{}", first.text);
    assert_eq!(line("events")["events"], 3);

    // What the ledger holds, line for line.
    for l in lines {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM usage_events WHERE tenant = 'demo' AND sku = $1",
        )
        .bind(l["sku"].as_str().unwrap())
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(l["events"], row.get::<i64, _>("n"), "{l}");
        assert_eq!(l["firstSeq"], row.get::<i64, _>("lo").to_string(), "{l}");
        assert_eq!(l["lastSeq"], row.get::<i64, _>("hi").to_string(), "{l}");
    }

    // Regenerated: the same bytes, JSON and CSV; the operator reads the same statement.
    let again = server.send(Some(&tenant), Method::GET, &path, None).await;
    assert_eq!(again.text, first.text);
    let by_operator = server.send(Some(&operator), Method::GET, &path, None).await;
    assert_eq!(by_operator.text, first.text);
    let csv_path = format!("{path}?format=csv");
    let csv = server.send(Some(&tenant), Method::GET, &csv_path, None).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text);
    assert_eq!(server.send(Some(&tenant), Method::GET, &csv_path, None).await.text, csv.text);
    let rows: Vec<&str> = csv.text.lines().collect();
    assert_eq!(rows[0], "statement_id,period,final,line_id,tenant,app,sku,unit,quantity,events,first_seq,last_seq");
    assert_eq!(rows.len(), 1 + lines.len(), "{}", csv.text);
    let events_row = rows.iter().find(|r| r.contains(",events,event,")).unwrap();
    assert!(
        events_row.starts_with(&format!(
            "{},{period},false,{},",
            statement["id"].as_str().unwrap(),
            line("events")["id"].as_str().unwrap()
        )),
        "{events_row}"
    );
    assert!(events_row.contains(",18014398509481987,3,"), "{events_row}");

    // The partner's statement of its apps: the same lines, per tenant.
    let partner_path = format!("/v1/partners/test/statements/{period}");
    let (status, theirs) = server.call(Some(&partner), Method::GET, &partner_path, None).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(theirs["scope"], "partner");
    assert_ne!(theirs["id"], statement["id"]);
    let sums = |v: &Value| -> Vec<(String, String)> {
        v["lines"].as_array().unwrap().iter().map(|l| (l["sku"].to_string(), l["quantity"].to_string())).collect()
    };
    assert_eq!(sums(&theirs), sums(&statement));

    // Another month: nothing, and final. Others' statements are not theirs to read.
    let (status, old) = server.call(Some(&tenant), Method::GET, "/v1/tenants/demo/statements/2020-01", None).await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["final"], true);
    assert_eq!(old["lines"], json!([]));
    let (status, _) = server.call(Some(&other), Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        server.call(Some(&partner), Method::GET, &format!("/v1/partners/acme/statements/{period}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in ["2026-13", "2026-1", "abcd-ef", "1969-12", "2026-01-01"] {
        let (status, problem) =
            server.call(Some(&tenant), Method::GET, &format!("/v1/tenants/demo/statements/{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
        assert_eq!(problem["field"], "period", "{problem}");
    }
    let (status, problem) = server.call(Some(&tenant), Method::GET, &format!("{path}?format=xml"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_sqlite() {
    statements(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_postgresql() {
    statements(Some(common::fresh_postgres_database().await)).await;
}
