//! SIGTERM drains `kiosk serve` as a load balancer needs it: `/readyz` answers 503
//! first, new calls are refused with 503 and `Retry-After`, the call in flight runs on
//! to its answer (200, not cut), and then the process exits cleanly.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Api, kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_refuses_new_calls_and_lets_the_call_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::registry::free_port();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\ndrain-seconds = 60\n\
             [sandbox]\ntimeout-ms = 60000\n[usage]\nlease-seconds = 300\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let demo = common::hostile_manifest(dir.path(), |m| m["limits"]["timeoutMs"] = 30_000.into());
    let manifest = common::manifest_json("hostile-guest");
    let log_path = dir.path().join("kiosk.log");
    let (mut child, text) = common::spawn_serve(
        &["--config", config.to_str().unwrap(), "--demo-app", &demo],
        &[("KIOSK_LOG", "info,kiosk::access=debug")],
        &log_path,
    );
    let token = common::demo_token(&text, "TENANT_TOKEN");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let app = manifest["app"].as_str().unwrap().to_string();
    let version = manifest["version"].as_str().unwrap().to_string();
    let id = api.install(&token, "demo", json!({"app": app, "version": version})).await.id;
    let ready = api.request(None, Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // A call that naps 5 s is in flight once it holds a sandbox slot (the operator's
    // `/metrics` says so).
    let operator = common::demo_token(&text, "OPERATOR_TOKEN");
    let call = {
        let (api, token, id) = (api.clone(), token.clone(), id.clone());
        tokio::spawn(async move {
            let path = format!("/v1/tenants/demo/installations/{id}/invoke/nap");
            let reply = api.request(Some(&token), Method::POST, &path).json(&json!(5000)).send().await.unwrap();
            (reply.status(), reply.json::<Value>().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = api.request(Some(&operator), Method::GET, "/metrics").send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        if metrics.lines().any(|l| l.starts_with("kiosk_sandbox_slots_in_use ") && !l.ends_with(" 0")) {
            break;
        }
        assert!(!call.is_finished(), "the call ended before it was seen running");
        assert!(Instant::now() < deadline, "the call never took a sandbox slot: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());

    // `/readyz` turns 503 (the load balancer's signal) while the call still runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = api.request(None, Method::GET, "/readyz").send().await.unwrap();
        if reply.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(reply.headers().get("retry-after").is_some(), "a draining /readyz says when to retry");
            break;
        }
        assert_eq!(reply.status(), StatusCode::OK);
        assert!(Instant::now() < deadline, "/readyz never turned 503 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!call.is_finished(), "the 5 s call ended before /readyz turned 503: nothing was drained");
    // A new call is refused, saying when to retry; nothing of it runs.
    let (status, problem) = api.invoke(&token, "demo", &id, "echo", json!("after the signal")).await;
    assert_eq!((status, kind(&problem)), (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"), "{problem}");
    assert!(!call.is_finished(), "the refusal came while the call in flight still ran");

    // The call in flight finishes with its own answer, then the process exits cleanly.
    let (status, answer) = call.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the call in flight was cut: {answer}");
    assert_eq!(answer["output"], "rested", "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiosk serve did not exit after draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("calls in flight finished") && text.contains("kiosk stopped"), "{text}");
}
