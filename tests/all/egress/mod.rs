//! Outbound HTTP of `kiosk:app@0.2.0` apps (issue 26), through the HTTP API, on SQLite
//! and PostgreSQL: a real HTTPS server on loopback stands in for the partner's API (its
//! certificate from rcgen, trusted through the operator's per-host CA), named through
//! the operator's `[egress] resolve` entries so nothing touches the machine's resolver.
//! It receives the tenant's real key while the guest never held it (its memory, output,
//! key-value data, logs and every database byte checked); hostile requests — every
//! literal form of an internal address, undeclared hosts, ports and schemes, a name that
//! resolves to loopback, a Host header, a redirect to an internal service, a placeholder
//! sent elsewhere, a 1 GiB response, a dripping server, floods in series and at once —
//! are refused or cut with their limit named, and the internal service in the test is
//! never connected to.

mod examples;
mod policy;
mod support;

use std::sync::atomic::Ordering;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use support::{Setup, database_bytes, error_of, setup, xored};

async fn outbound(postgres: bool) {
    let Setup { internal, api, database, server, port, _ca_dir } = setup("outbound-guest", postgres).await;
    let token = server.token("demo").await;
    let other_token = server.token("other").await;
    let secret = format!("sk-live-{}", uuid::Uuid::new_v4().simple());
    let hook = format!("https://hooks.tenant.test:{port}/hook");
    let id = server.install(&token, "demo", json!({"apiKey": secret, "webhookUrl": hook})).await;
    let other_id = server.install(&other_token, "other", json!({"apiKey": "other-tenant-key"})).await;
    let api_url = |path: &str| format!("https://api.acme.test:{port}{path}");
    let bearer = json!([["authorization", "Bearer {kiosk-secret:/apiKey}"]]);

    // The app calls its partner's API with the tenant's key: the server receives the
    // key; the guest held only the placeholder (its memory is scanned after the call).
    let (status, body) = server
        .invoke(
            &token,
            "demo",
            &id,
            "fetch",
            json!({"url": api_url("/echo"), "headers": bearer, "scan": xored(&secret)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"]["status"], 200, "{body}");
    assert_eq!(body["output"]["memoryHolds"], false, "the guest's memory holds the secret: {body}");
    let scan_works = server
        .invoke(
            &token,
            "demo",
            &id,
            "fetch",
            json!({"url": api_url("/echo"), "headers": bearer, "scan": xored("Bearer {kiosk-secret:/apiKey}")}),
        )
        .await;
    assert_eq!(
        scan_works.1["output"]["memoryHolds"], true,
        "the scan finds what the guest does hold: {}",
        scan_works.1
    );
    let seen = api.seen.lock().unwrap().clone();
    let first = seen.iter().find(|s| s.path == "/echo").unwrap();
    assert_eq!(first.authorization.as_deref(), Some(format!("Bearer {secret}").as_str()));
    assert_eq!(first.host, format!("api.acme.test:{port}"));
    // Metered by the host: one request answered, per call, with the call's usage.
    let usage = body["usage"].as_array().unwrap();
    assert!(usage.iter().any(|u| u["sku"] == "api-calls" && u["quantity"] == 1 && u["source"] == "host"), "{body}");

    // KiB received are metered once per call (20 KiB → 20).
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/big")})).await;
    assert_eq!(body["output"]["bytes"], 20 * 1024, "{body}");
    let usage = body["usage"].as_array().unwrap();
    assert!(usage.iter().any(|u| u["sku"] == "api-kib" && u["quantity"] == 20), "{body}");
    assert_eq!(usage.iter().filter(|u| u["sku"] == "api-calls").count(), 1, "{body}");

    // The configuration the app received holds the placeholder, never the value.
    let (_, body) = server.invoke(&token, "demo", &id, "config", json!({})).await;
    assert_eq!(body["output"]["apiKey"], "{kiosk-secret:/apiKey}", "{body}");
    assert_eq!(body["output"]["webhookUrl"], hook.as_str());

    // A placeholder sent to a destination the secret is not bound to stays inert text.
    let (_, body) = server
        .invoke(
            &token,
            "demo",
            &id,
            "fetch",
            json!({"url": format!("https://other.acme.test:{port}/echo"), "headers": bearer}),
        )
        .await;
    assert_eq!(body["output"]["status"], 200, "{body}");
    let seen = api.seen.lock().unwrap().clone();
    let other = seen.iter().find(|s| s.host.starts_with("other.acme.test")).unwrap();
    assert_eq!(other.authorization.as_deref(), Some("Bearer {kiosk-secret:/apiKey}"));

    // The tenant's webhook URL (a configUrl destination) is reachable for this
    // installation only.
    let (_, body) =
        server.invoke(&token, "demo", &id, "fetch", json!({"url": hook, "method": "POST", "body": "{}"})).await;
    assert_eq!(body["output"]["status"], 200, "{body}");
    let (_, body) = server.invoke(&other_token, "other", &other_id, "fetch", json!({"url": hook})).await;
    assert!(error_of(&body).contains("HttpRequestDenied"), "{body}");

    // Undeclared hosts, ports and schemes; a Host header; CONNECT.
    for (url, expected) in [
        (format!("https://evil.test:{port}/"), "HttpRequestDenied"),
        ("https://api.acme.test:1/".to_string(), "HttpRequestDenied"),
        (format!("http://api.acme.test:{port}/"), "HttpRequestDenied"),
        (format!("https://api.acme.test.evil.test:{port}/"), "HttpRequestDenied"),
    ] {
        let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": url})).await;
        assert!(error_of(&body).contains(expected), "{url}: {body}");
    }
    let (_, body) = server
        .invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/echo"), "headers": [["host", "internal.test"]]}))
        .await;
    assert!(error_of(&body).contains("Forbidden"), "a guest cannot set Host: {body}");
    let (_, body) =
        server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/echo"), "method": "CONNECT"})).await;
    assert!(error_of(&body).contains("HttpRequestMethodInvalid"), "{body}");

    // Every literal form of an internal address, and a declared name that resolves to
    // loopback without the operator opening it.
    let internal_port = internal.port;
    for host in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "0x7f000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "10.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
    ] {
        let url = format!("https://{host}:{internal_port}/");
        let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": url})).await;
        assert!(error_of(&body).contains("DestinationIpProhibited"), "{url}: {body}");
    }
    let (_, body) =
        server.invoke(&token, "demo", &id, "fetch", json!({"url": format!("https://rebind.acme.test:{port}/")})).await;
    assert!(error_of(&body).contains("DestinationIpProhibited"), "{body}");
    assert!(
        !api.seen.lock().unwrap().iter().any(|s| s.host.starts_with("rebind")),
        "rebind.acme.test was connected to"
    );

    // A redirect to an internal service is handed to the guest, never followed.
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/redirect")})).await;
    assert_eq!(body["output"]["status"], 302, "{body}");

    // A 1 GiB response is cut at the operator's cap; a dripping server at the guest's
    // between-bytes timeout; meanwhile another tenant's calls go on.
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/huge")})).await;
    let error = error_of(&body);
    assert!(error.contains("HttpResponseBodySize") || error.contains("body size exceeds limit: 1048576"), "{body}");
    let kib = body["usage"].as_array().unwrap().iter().find(|u| u["sku"] == "api-kib").unwrap()["quantity"].clone();
    assert!(kib.as_u64().unwrap() <= 1024, "only the bytes the guest was given are metered: {body}");
    let drip = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/drip"), "betweenBytesMs": 300}));
    let others = async {
        for _ in 0..5 {
            let (status, body) = server.invoke(&other_token, "other", &other_id, "config", json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    let ((_, body), ()) = tokio::join!(drip, others);
    let error = error_of(&body);
    assert!(error.contains("ConnectionReadTimeout") || error.contains("connection read timeout"), "{body}");

    // 10,000 requests in a call stop at the per-call limit; hundreds at once at the
    // per-call concurrency.
    let (_, body) = server.invoke(&token, "demo", &id, "many", json!({"url": api_url("/echo"), "count": 10_000})).await;
    assert_eq!(body["output"]["ok"], 20, "{body}");
    assert_eq!(body["output"]["errors"]["ErrorCode::ConnectionLimitReached"], 9_980, "{body}");
    let (_, body) =
        server.invoke(&token, "demo", &id, "parallel", json!({"url": api_url("/echo"), "count": 300})).await;
    let ok = body["output"]["ok"].as_u64().unwrap();
    assert!((1..=4).contains(&ok), "{body}");
    assert_eq!(body["output"]["errors"]["ErrorCode::ConnectionLimitReached"].as_u64().unwrap(), 300 - ok, "{body}");

    // Connections are pooled per app and host: far fewer than requests.
    let requests = api.seen.lock().unwrap().len();
    let connections = api.connections.load(Ordering::SeqCst);
    assert!(connections * 2 < requests, "{connections} connections for {requests} requests");

    // The tenant sees what the app contacts and what it receives there, narrows it to
    // the partner's API, then switches it off; each applies to the very next call.
    let egress_path = format!("/v1/tenants/demo/installations/{id}/egress");
    let (_, view) = server.call(Some(&token), Method::GET, &egress_path, None).await;
    assert_eq!(view["enabled"], true, "{view}");
    let api_key = format!("https://api.acme.test:{port}");
    assert!(
        view["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["destination"] == api_key.as_str() && d["receives"] == json!(["/apiKey"]) && d["kept"] == true),
        "{view}"
    );
    let put = |body: Value| server.call(Some(&token), Method::PUT, &egress_path, Some(body));
    let (status, _) = put(json!({"enabled": true, "destinations": [api_key.clone()]})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server
        .invoke(&token, "demo", &id, "fetch", json!({"url": format!("https://other.acme.test:{port}/echo")}))
        .await;
    assert!(error_of(&body).contains("HttpRequestDenied"), "narrowed away: {body}");
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/echo")})).await;
    assert_eq!(body["output"]["status"], 200, "kept: {body}");
    let (status, problem) = put(json!({"enabled": true, "destinations": ["https://evil.test"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "destinations/0", "{problem}");
    let (status, _) = put(json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/echo")})).await;
    assert!(error_of(&body).contains("HttpRequestDenied"), "switched off: {body}");
    let (status, _) = server.call(Some(&other_token), Method::PUT, &egress_path, Some(json!({"enabled": true}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant cannot switch it");

    // The internal service was never connected to.
    assert_eq!(internal.connections.load(Ordering::SeqCst), 0, "the internal service was reached");

    // Each request and refusal is in the installation's log, with its limit named; the
    // secret is nowhere in the logs, nor in any byte of the database.
    let lines = server.logs(&token, &id).await;
    let all = lines.join("\n");
    assert!(all.contains(&format!("kiosk: outbound GET https://api.acme.test:{port}/echo → 200")), "{all}");
    assert!(all.contains("egress.max-requests-per-call"), "{all}");
    assert!(all.contains("egress.max-response-body-bytes"), "{all}");
    assert!(all.contains("a private address") || all.contains("a loopback address"), "{all}");
    assert!(!all.contains(&secret), "the secret reached the log");
    let bytes = database_bytes(server.dir(), database.as_deref()).await;
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored in plain text in the database"
    );
}

/// The same app in JavaScript: `fetch()` through ComponentizeJS reaches the partner's
/// API with the tenant's key put in by the host, and the hostile targets fail without
/// the internal service ever being connected to.
async fn outbound_js(postgres: bool) {
    let Setup { internal, api, server, port, _ca_dir, .. } = setup("outbound-js-guest", postgres).await;
    let token = server.token("demo").await;
    let secret = format!("sk-js-{}", uuid::Uuid::new_v4().simple());
    let id = server.install(&token, "demo", json!({"apiKey": secret})).await;
    let api_url = |path: &str| format!("https://api.acme.test:{port}{path}");
    let (status, body) = server
        .invoke(
            &token,
            "demo",
            &id,
            "fetch",
            json!({"url": api_url("/echo"), "headers": [["authorization", "Bearer {kiosk-secret:/apiKey}"]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"]["status"], 200, "{body}");
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap().authorization.as_deref(), Some(format!("Bearer {secret}").as_str()));
    let (_, body) = server.invoke(&token, "demo", &id, "config", json!({})).await;
    assert_eq!(body["output"]["apiKey"], "{kiosk-secret:/apiKey}", "{body}");
    let internal_port = internal.port;
    for url in [
        format!("https://127.0.0.1:{internal_port}/"),
        format!("https://127.1:{internal_port}/"),
        format!("https://2130706433:{internal_port}/"),
        format!("https://[::1]:{internal_port}/"),
        format!("https://169.254.169.254:{internal_port}/"),
        format!("https://internal.test:{internal_port}/"),
        format!("https://evil.test:{port}/"),
        format!("http://api.acme.test:{port}/"),
        format!("https://rebind.acme.test:{port}/"),
    ] {
        let (status, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": url})).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert!(body["output"]["error"].is_string(), "{url}: {body}");
    }
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/redirect")})).await;
    assert_ne!(body["output"]["status"], 200, "a redirect to the internal service is not followed through: {body}");
    let (_, body) = server.invoke(&token, "demo", &id, "fetch", json!({"url": api_url("/huge")})).await;
    assert!(body["output"]["error"].is_string() || body.get("detail").is_some(), "the 1 GiB response is cut: {body}");
    assert_eq!(internal.connections.load(Ordering::SeqCst), 0, "the internal service was reached");
    let lines = server.logs(&token, &id).await.join("\n");
    assert!(lines.contains("is an address literal") && lines.contains("egress.max-response-body-bytes"), "{lines}");
    assert!(!lines.contains(&secret), "the secret reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_http_in_javascript_on_sqlite() {
    outbound_js(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_http_in_javascript_on_postgres() {
    outbound_js(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_http_on_sqlite() {
    outbound(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_http_on_postgres() {
    outbound(true).await;
}

/// A 0.1.0 app has no network: one that imports `wasi:http` anyway is refused when its
/// component is linked (registration's first step), the import named; the same kind of
/// app built against 0.2.0 links.
#[test]
fn a_0_1_0_component_importing_wasi_http_is_refused_naming_the_import() {
    let harness = common::Harness::new(kiosk::limits::SandboxLimits::default());
    let refused = harness.runtime.load(&common::guest_bytes("net-v1-guest")).unwrap_err().to_string();
    assert!(refused.contains("kiosk:app@0.1.0"), "{refused}");
    assert!(refused.contains("`wasi:http/"), "the import is named: {refused}");
    assert!(refused.contains("build against kiosk:app@0.2.0"), "{refused}");
    let linked = harness.runtime.load(&common::guest_bytes("outbound-guest")).unwrap();
    assert_eq!(linked.world, semver::Version::new(0, 2, 0));
    assert!(linked.has_egress());
}
