//! `kiosk serve` as an operator runs it: a child process with the demo seed, the most
//! verbose log level, and SIGTERM at the end. Secret config values never reach the log,
//! and shutdown is graceful.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common;
use crate::common::api::Api;

const SECRET_1: &str = "sk-first-secret-7f3a";
const SECRET_2: &str = "sk-rotated-secret-91bc";

#[tokio::test]
async fn secrets_never_reach_the_log_and_sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::registry::free_port();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!("data-dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n", dir.path().join("data").display()),
    )
    .unwrap();
    let log_path = dir.path().join("kiosk.log");
    let demo = common::demo_app("budget-pacing");
    let (mut child, text) = common::spawn_serve(
        &["--config", config.to_str().unwrap(), "--demo-app", &demo],
        &[("KIOSK_LOG", "trace")],
        &log_path,
    );
    let token = common::demo_token(&text, "TENANT_TOKEN");
    assert!(text.contains("operator token (shown once"), "a bootstrap operator token is generated and printed");
    let api = Api::new(format!("http://127.0.0.1:{port}"));

    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": SECRET_1}});
    let id = api.install(&token, "demo", install).await.id;
    let patch = json!({"config": {"apiKey": SECRET_2, "threshold": 0.3}});
    let (status, _) =
        api.call(Some(&token), Method::PATCH, &format!("/v1/tenants/demo/installations/{id}"), Some(patch)).await;
    assert_eq!(status, 200);
    // A config the schema refuses, carrying a secret: the problem names the rule, not the value.
    let bad =
        json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": SECRET_1, "threshold": "x"}});
    let reply = api.send(Some(&token), Method::POST, "/v1/tenants/demo/installations", Some(bad)).await;
    assert_eq!(reply.status, 422);
    assert!(!reply.text.contains(SECRET_1));
    let input = json!({"campaignId": "c", "budget": 30, "flightDays": 30, "dailySpend": [1]});
    let (status, _) = api.invoke(&token, "demo", &id, "evaluate", input).await;
    assert_eq!(status, 200);

    // SIGTERM: in-flight work finishes, the process says so and exits cleanly.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiosk serve did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("kiosk stopped"), "graceful shutdown is logged");
    assert!(text.lines().count() > 20, "trace logging was on");
    for secret in [SECRET_1, SECRET_2] {
        let leaks: Vec<_> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "secret in the log: {leaks:?}");
    }
}
