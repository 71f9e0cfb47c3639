//! Installation logs in the database, over HTTP on SQLite and PostgreSQL: a failing
//! "Python" guest's traceback read by the tenant, the operator and the app's partner
//! (another tenant or partner gets 404), `since=` paging, the line naming a timeout,
//! the per-installation bounds, and two independent server states over one PostgreSQL
//! database (lines written through one, read through the other).

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Api, TestServer};

/// Bounds small enough to see them hold: 12 lines, 4 KiB per installation.
const BOUNDS: &str = "[logs]\nmax-lines-per-installation = 12\n[sandbox]\nlog-buffer-bytes = 4096\n";

async fn get(c: &Api, token: &str, path: &str) -> (StatusCode, Value) {
    c.call(Some(token), Method::GET, path, None).await
}

/// Every line of the installation's log, following `next`.
async fn all_lines(c: &Api, token: &str, path: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let url = match &since {
            Some(cursor) => format!("{path}?limit=5&since={cursor}"),
            None => format!("{path}?limit=5"),
        };
        let (status, page) = get(c, token, &url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        lines.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => since = Some(next.to_string()),
            None => return lines,
        }
    }
}

fn messages(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["message"].as_str().unwrap().to_string()).collect()
}

async fn logs_journey(database: Option<String>) {
    let server = common::hostile_server(database, BOUNDS, |_| {}).await;
    let store = server.store();
    store.create_tenant("other", "Other", "operator").await.unwrap();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let other = store.create_token(&Principal::Tenant("other".into()), "o", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;
    let rival = store.create_token(&Principal::Partner("rival".into()), "r", "operator").await.unwrap().1;
    let operator = store.create_token(&Principal::Operator, "op", "operator").await.unwrap().1;
    let c = &server.api;

    let id = c.install(&tenant, "demo", json!({"app": "test/hostile", "version": "0.0.1"})).await.id;
    let tenant_path = format!("/v1/tenants/demo/installations/{id}/logs");
    let partner_path = format!("/v1/partners/test/apps/hostile/installations/{id}/logs");

    // A completed call answers with its call id.
    let hello_call = c.invoked(&tenant, "demo", &id, "log", json!("hello from the app")).await.call_id;

    // The Python-style guest dies with a traceback on stderr: a 502 naming the call.
    let (status, problem) = c.invoke(&tenant, "demo", &id, "python-traceback", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    assert_eq!(problem["type"], "urn:kiosk:problem:app-failed");
    let trace_call = problem["callId"].as_str().unwrap().to_string();
    assert_ne!(trace_call, hello_call);
    // The problem carries the traceback's last lines, after what happened.
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("the app's last lines:") && detail.contains("ValueError: boom"), "{problem}");
    assert!(!detail.contains("call failed:"), "the runtime's closing line is the detail itself: {problem}");

    // The tenant reads the traceback, line by line, under the failing call's id.
    let lines = all_lines(c, &tenant, &tenant_path).await;
    let of_trace: Vec<&Value> = lines.iter().filter(|l| l["callId"] == trace_call.as_str()).collect();
    let trace_messages: Vec<&str> = of_trace.iter().map(|l| l["message"].as_str().unwrap()).collect();
    for expected in ["Traceback (most recent call last):", "raise ValueError(\"boom\")", "ValueError: boom"] {
        assert!(trace_messages.iter().any(|m| m.contains(expected)), "{expected:?} in {trace_messages:?}");
    }
    assert!(of_trace.iter().all(|l| l["operation"] == "invoke:python-traceback"), "{of_trace:?}");
    let last = of_trace.last().unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["message"].as_str().unwrap().starts_with("call failed: the app trapped"), "{last}");
    let hello: Vec<&Value> = lines.iter().filter(|l| l["callId"] == hello_call.as_str()).collect();
    assert_eq!(hello.len(), 1, "{lines:?}");
    assert_eq!(hello[0]["level"], "warn");
    assert_eq!(hello[0]["operation"], "invoke:log");
    assert_eq!(hello[0]["message"], "\"hello from the app\"");
    // Cursors increase, and timestamps are real.
    let cursors: Vec<i64> = lines.iter().map(|l| l["cursor"].as_str().unwrap().parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert!(lines.iter().all(|l| l["atMs"].as_i64().unwrap() > 1_600_000_000_000));

    // The operator and the app's partner read the same lines; nobody else does.
    assert_eq!(all_lines(c, &operator, &tenant_path).await, lines);
    assert_eq!(all_lines(c, &partner, &partner_path).await, lines);
    for (token, path) in [
        (&other, tenant_path.clone()),
        (&other, format!("/v1/tenants/other/installations/{id}/logs")),
        (&rival, partner_path.clone()),
        (&rival, format!("/v1/partners/rival/apps/hostile/installations/{id}/logs")),
        (&partner, format!("/v1/partners/test/apps/other-app/installations/{id}/logs")),
    ] {
        let (status, problem) = get(c, token, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
        assert_eq!(problem["type"], "urn:kiosk:problem:not-found");
        assert!(!problem.to_string().contains("Traceback"), "{problem}");
    }

    // `since` is exclusive: only the lines after the cursor.
    let pivot = &lines[1]["cursor"];
    let (status, page) = get(c, &tenant, &format!("{tenant_path}?since={}", pivot.as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap(), &lines[2..].to_vec());
    assert_eq!(page["next"], Value::Null);
    let (_, page) = get(c, &tenant, &format!("{tenant_path}?since={}", cursors.last().unwrap())).await;
    assert_eq!(page["items"], json!([]));
    for bad in ["abc", "-1", "1.5", "", "99999999999999999999", "%20"] {
        let (status, problem) = get(c, &tenant, &format!("{tenant_path}?since={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "since={bad}: {problem}");
        assert_eq!(problem["type"], "urn:kiosk:problem:invalid-query");
        assert_eq!(problem["field"], "since", "{problem}");
    }
    let (status, problem) = get(c, &tenant, &format!("{tenant_path}?limit=0")).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")));

    // A timeout: the last line of the call names the limit in the problem's words.
    let (status, problem) = c.invoke(&tenant, "demo", &id, "loop", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    let limit = "timed out: the call exceeded its wall-time limit of 200 ms";
    assert!(detail.contains(limit), "{detail}");
    let loop_call = problem["callId"].as_str().unwrap();
    let (_, page) = get(c, &tenant, &format!("{tenant_path}?since={}", cursors.last().unwrap())).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["callId"], loop_call);
    assert_eq!(items[0]["level"], "error");
    assert_eq!(items[0]["message"], format!("call failed: {limit}"));

    // The bounds hold: 12 lines at most, and at most 4 KiB of text, the newest kept.
    for i in 0..20 {
        let (status, _) = c.invoke(&tenant, "demo", &id, "log", json!(format!("line {i}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let lines = all_lines(c, &tenant, &tenant_path).await;
    assert_eq!(lines.len(), 12, "{:?}", messages(&lines));
    assert_eq!(lines.last().unwrap()["message"], "\"line 19\"");
    assert_eq!(lines.first().unwrap()["message"], "\"line 8\"");
    let big = "b".repeat(1500);
    for _ in 0..5 {
        let (status, _) = c.invoke(&tenant, "demo", &id, "log", json!(big)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (kept, bytes) = store.log_usage("demo", &id).await.unwrap();
    assert!(bytes <= 4096, "{bytes} bytes kept");
    assert_eq!(kept, 2, "two 1502-byte lines fit in 4 KiB, three do not");
    assert_eq!(all_lines(c, &tenant, &tenant_path).await.len(), 2);

    // Uninstalling takes the lines with the installation.
    let (status, _) =
        c.call(Some(&tenant), Method::DELETE, &format!("/v1/tenants/demo/installations/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(store.log_usage("demo", &id).await.unwrap(), (0, 0));
    let (status, _) = get(c, &tenant, &tenant_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_sqlite() {
    logs_journey(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_postgres() {
    logs_journey(Some(common::fresh_postgres_database().await)).await;
}

/// Nothing is per process: a second, independent server state over the same PostgreSQL
/// database reads what the first one's calls wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_the_lines() {
    let url = common::fresh_postgres_database().await;
    let a = common::hostile_server(Some(url.clone()), "", |_| {}).await;
    let b = TestServer::fresh(Some(url), "").await;
    assert!(!std::sync::Arc::ptr_eq(&a.started.state, &b.started.state));
    let tenant = a.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;

    let id = a.install(&tenant, "demo", json!({"app": "test/hostile", "version": "0.0.1"})).await.id;
    let (status, problem) = a.invoke(&tenant, "demo", &id, "python-traceback", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let call = problem["callId"].as_str().unwrap();

    let lines = all_lines(&b, &tenant, &format!("/v1/tenants/demo/installations/{id}/logs")).await;
    assert!(
        lines.iter().any(|l| l["callId"] == call && l["message"].as_str().unwrap().contains("ValueError: boom")),
        "{lines:?}"
    );
}
