//! The example apps that call out (plugins-examples), one per partner language, through
//! the HTTP API on SQLite and PostgreSQL: budget-pacing 1.5 (Rust) reads spend rows from
//! its reporting API and posts alerts to the tenant's webhook, audience-forecast 0.4
//! (Python) reads audience sizes, ad-copy-check 0.3 (JavaScript, `fetch()`) asks a
//! brand-safety API. Their APIs are the loopback stand-in, reached through the
//! operator's `[[egress.mocks]]` (the declared `https://….acme.example` names, TLS
//! verified against the stand-in's CA). Each API receives the tenant's real key; the app
//! held only the placeholder. `kiosk run --mock` points an app at a local mock.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{PartnerApi, Server, database_bytes, start_internal, start_partner_api};
use crate::common;
use crate::common::api::TestServer;

/// A server with the example apps registered (budget-pacing 1.4.34 and 1.5.0,
/// audience-forecast, ad-copy-check); the stand-in API answers for their partners.
async fn serve_examples(postgres: bool) -> (Server, PartnerApi, Option<String>) {
    let internal = start_internal();
    let api = start_partner_api(internal.port).await;
    let database = if postgres { Some(common::fresh_postgres_database().await) } else { None };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("partner-ca.pem");
    std::fs::write(&ca_file, &api.ca_pem).unwrap();
    let mut config = String::new();
    for host in ["reporting.acme.example", "audience.acme.example", "brand.acme.example"] {
        config.push_str(&format!(
            "[[egress.mocks]]\ndestination = \"https://{host}\"\nto = \"https://127.0.0.1:{port}\"\n\n\
             [[egress.hosts]]\nhost = \"{host}\"\nca-file = \"{ca}\"\n\n",
            port = api.port,
            ca = ca_file.display()
        ));
    }
    // The tenant's webhook: its own name, on an address only the operator can open.
    config.push_str(&format!(
        "[egress.resolve]\n\"hooks.tenant.test\" = [\"127.0.0.1\"]\n\n\
         [[egress.hosts]]\nhost = \"hooks.tenant.test\"\nprivate-addresses = true\nca-file = \"{}\"\n",
        ca_file.display()
    ));
    let demo_apps =
        ["budget-pacing", "budget-pacing-online", "audience-forecast", "ad-copy-check"].map(common::demo_app).to_vec();
    let s = TestServer::start_with(dir.path(), database.clone(), &config, demo_apps).await.keeping(dir);
    let server = Server { s, app: String::new() };
    (server, api, database)
}

async fn examples(postgres: bool) {
    let (server, api, database) = serve_examples(postgres).await;
    let token = server.token("demo").await;
    let api_key = format!("rk-live-{}", uuid::Uuid::new_v4().simple());
    let signing = format!("whsec-{}", uuid::Uuid::new_v4().simple());
    let hook = format!("https://hooks.tenant.test:{}/pacing", api.port);

    // budget-pacing: installed at 1.4.34 (no network), then upgraded to 1.5.0, which
    // reads the spend rows from the reporting API and posts the alert to the webhook.
    let config = json!({
        "threshold": 0.1,
        "apiKey": api_key,
        "alerts": {"channel": "webhook", "recipient": hook, "signingSecret": signing},
    });
    let id = server.install_version(&token, "demo", "acme/budget-pacing", "1.4.34", config).await;
    let offline = json!({"campaignId": "spring/sale", "budget": 3000, "flightDays": 30});
    let (status, body) = server.invoke(&token, "demo", &id, "evaluate", offline.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "1.4 needs the rows in the input: {body}");
    // An automatic upgrade never widens egress: 1.5.0 sends the apiKey to a host 1.4.34
    // never contacted, so an installation with a policy stays until the tenant upgrades.
    let auto_config = json!({"threshold": 0.1, "apiKey": "auto-key-0123"});
    let auto_id = server.install_version(&token, "demo", "acme/budget-pacing", "1.4.34", auto_config).await;
    let path = format!("/v1/tenants/demo/installations/{auto_id}/upgrade-policy");
    let (status, body) = server.call(Some(&token), Method::PUT, &path, Some(json!({"policy": "minor"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = server.started.state.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The periodic pass may hold the lease a moment; once ours runs, every pass before
    // it has finished.
    while kiosk::upgrades::run_pass(&state, "test", None).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the pass lease comes free");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let failed = state.store().failed_auto_upgrades(&auto_id).await.unwrap();
    assert_eq!(failed, ["1.5.0"], "the widening upgrade is recorded as refused");
    let row = state.store().installation("demo", &auto_id).await.unwrap().unwrap();
    assert_eq!(row.version, "1.4.34");
    let note = server.logs(&token, &auto_id).await.into_iter().find(|l| l.contains("egress-consent-needed"));
    let note = note.expect("the installation's log says why it was not upgraded");
    assert!(note.contains("https://reporting.acme.example (receives /apiKey)"), "{note}");

    let path = format!("/v1/tenants/demo/installations/{id}/upgrade");
    let (status, body) = server.call(Some(&token), Method::POST, &path, Some(json!({"version": "1.5.0"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.invoke(&token, "demo", &id, "evaluate", offline).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = &body["output"];
    assert_eq!(out["spendFrom"], "reporting-api", "{body}");
    assert_eq!(out["rowsScanned"], 3, "{body}");
    assert_eq!(out["status"], "over", "450 spent against 300 planned: {body}");
    assert_eq!(out["alert"]["delivery"]["delivered"], true, "{body}");
    let usage = body["usage"].as_array().unwrap();
    assert!(
        usage.iter().any(|u| u["sku"] == "reporting-requests" && u["quantity"] == 1 && u["source"] == "host"),
        "the reporting request is metered by the host: {body}"
    );
    let seen = api.seen.lock().unwrap().clone();
    let spend = seen.iter().find(|s| s.path.contains("/daily-spend")).expect("the reporting API was called");
    assert_eq!(spend.method, "GET");
    assert_eq!(spend.path, "/v1/campaigns/spring%2Fsale/daily-spend");
    assert_eq!(spend.host, "reporting.acme.example", "Host is the declared name, not the mock's address");
    assert_eq!(spend.authorization.as_deref(), Some(format!("Bearer {api_key}").as_str()));
    let alert = seen.iter().find(|s| s.path == "/pacing").expect("the webhook was called");
    assert_eq!(alert.method, "POST");
    assert_eq!(alert.authorization.as_deref(), Some(format!("Bearer {signing}").as_str()));
    let payload: Value = serde_json::from_slice(&alert.body).unwrap();
    assert_eq!(payload["campaignId"], "spring/sale");
    assert_eq!(payload["status"], "over");
    // Rows in the input: no request at all.
    let before = api.seen.lock().unwrap().len();
    let (status, body) = server
        .invoke(
            &token,
            "demo",
            &id,
            "evaluate",
            json!({"campaignId": "c-2", "budget": 3000, "flightDays": 30, "dailySpend": [100, 100]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"]["spendFrom"], "input", "{body}");
    assert_eq!(api.seen.lock().unwrap().len(), before, "no request when the input carries the rows");

    // audience-forecast (Python): live audience sizes with the tenant's token.
    let token_value = format!("aud-{}", uuid::Uuid::new_v4().simple());
    let forecast_id = server
        .install_version(
            &token,
            "demo",
            "acme/audience-forecast",
            "0.4.0",
            json!({"apiToken": token_value, "liveSizes": true}),
        )
        .await;
    let (status, body) = server
        .invoke(&token, "demo", &forecast_id, "forecast", json!({"segment": "runners", "dailyBudget": 250, "cpm": 4.5}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"]["source"], "live", "{body}");
    let seen = api.seen.lock().unwrap().clone();
    let sizes = seen.iter().find(|s| s.path.starts_with("/v1/audiences/")).expect("the audience API was called");
    assert_eq!(sizes.path, "/v1/audiences/runners?market=us");
    assert_eq!(sizes.host, "audience.acme.example");
    assert_eq!(sizes.authorization.as_deref(), Some(format!("Bearer {token_value}").as_str()));

    // ad-copy-check (JavaScript, fetch()): the brand-safety API's verdict joins the findings.
    let brand_key = format!("brand-{}", uuid::Uuid::new_v4().simple());
    let check_id = server
        .install_version(
            &token,
            "demo",
            "acme/ad-copy-check",
            "0.3.0",
            json!({"brandCheck": true, "brandApiKey": brand_key}),
        )
        .await;
    let (status, body) = server
        .invoke(
            &token,
            "demo",
            &check_id,
            "check",
            json!({"headline": "A miracle shoe", "body": "Run further on our new soles."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["output"].to_string();
    assert!(text.contains("brand-safety") && text.contains("miracle"), "the brand finding is in the answer: {body}");
    let seen = api.seen.lock().unwrap().clone();
    let check = seen.iter().find(|s| s.path == "/v1/check").expect("the brand-safety API was called");
    assert_eq!(check.method, "POST");
    assert_eq!(check.authorization.as_deref(), Some(format!("Bearer {brand_key}").as_str()));
    let sent: Value = serde_json::from_slice(&check.body).unwrap();
    assert!(sent["text"].as_str().unwrap().contains("A miracle shoe"), "{sent}");

    // No secret in any log line or any database byte; the apps' stored settings hold
    // the placeholders.
    let secrets = [&api_key, &signing, &token_value, &brand_key];
    for install in [&id, &forecast_id, &check_id] {
        for line in server.logs(&token, install).await {
            for secret in secrets {
                assert!(!line.contains(secret.as_str()), "a secret in the log: {line}");
            }
        }
    }
    let bytes = database_bytes(server.dir(), database.as_deref()).await;
    for secret in secrets {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "a secret in the database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_apps_call_their_partners_apis_on_sqlite() {
    examples(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_apps_call_their_partners_apis_on_postgres() {
    examples(true).await;
}

/// `kiosk run --mock`: a partner points its app at a local mock of its API (plain HTTP
/// on loopback); the request keeps the declared name in `Host`, and the app's apiKey
/// reaches the mock. A mock anywhere but loopback is refused, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_run_points_an_app_at_a_local_mock() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mock = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(socket.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let body = r#"{"dailySpend":[10,10,10,10]}"#;
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        socket.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let run = |mock: String| {
        let manifest = common::manifest_path("budget-pacing-online");
        let wasm = common::guest_path("budget-pacing-online");
        let cache = tempfile::tempdir().unwrap();
        Command::new(env!("CARGO_BIN_EXE_kiosk"))
            .args(["run", wasm.to_str().unwrap(), "--manifest", manifest.to_str().unwrap(), "--tenant", "acme-dev"])
            .args(["--config", r#"{"apiKey": "local-dev-key"}"#, "--invoke", "evaluate"])
            .args(["--input", r#"{"campaignId": "c-1", "budget": 300, "flightDays": 30}"#, "--json"])
            .args(["--mock", &mock, "--cache-dir", cache.path().to_str().unwrap()])
            .output()
            .unwrap()
    };
    let done =
        tokio::task::spawn_blocking(move || run(format!("https://reporting.acme.example=http://127.0.0.1:{port}")))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&done.stderr));
    assert!(stdout.contains("reporting-api") && stdout.contains("\"rowsScanned\""), "{stdout}");
    let head = mock.await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /v1/campaigns/c-1/daily-spend "), "{head}");
    assert!(head.contains("host: reporting.acme.example\r\n"), "{head}");
    assert!(head.contains("authorization: bearer local-dev-key\r\n"), "{head}");

    let refused =
        tokio::task::spawn_blocking(move || run("https://reporting.acme.example=http://10.0.0.1:8080".into()))
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--mock") && stderr.contains("not a loopback address"), "{stderr}");
}
