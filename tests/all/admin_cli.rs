//! `kiosk admin` as an operator uses it: the real binary against a real `kiosk serve`
//! (demo seed, SQLite), tables when piped, JSON with `--json`, problems as errors that
//! name the cause and exit 1.

use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use crate::common;
use crate::common::api::Api;

const OPERATOR: &str = "op-admin-cli-test-token-0123456789";

struct Server {
    child: Child,
    api: Api,
    tenant_token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = common::registry::free_port();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[sandbox]\ntimeout-ms = 1000\n[server]\nlisten = \"127.0.0.1:{port}\"\noperator-token = \"{OPERATOR}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let demo = common::demo_app("budget-pacing");
    let (child, text) = common::spawn_serve(
        &["--config", config.to_str().unwrap(), "--demo-app", &demo],
        &[],
        &dir.path().join("kiosk.log"),
    );
    let tenant_token = common::demo_token(&text, "TENANT_TOKEN");
    Server { child, api: Api::new(format!("http://127.0.0.1:{port}")), tenant_token, _dir: dir }
}

/// `kiosk admin ARGS` against the server, with the operator token from the environment.
fn admin(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .arg("admin")
        .args(args)
        .env("KIOSK_URL", &server.api.base)
        .env("KIOSK_TOKEN", OPERATOR)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = admin(server, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "kiosk admin {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn json_of(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(server, &all)).unwrap()
}

/// Runs a failing command; returns its stderr.
fn fails(server: &Server, args: &[&str]) -> String {
    let out = admin(server, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "kiosk admin {args:?} should fail: {stderr}");
    stderr
}

fn names(items: &Value, member: &str) -> Vec<String> {
    items.as_array().unwrap().iter().map(|i| i[member].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn operator_runs_the_estate_from_the_command_line() {
    let server = start();

    // Partners and tenants: created, listed as a table (piped: ASCII) and as JSON.
    ok(&server, &["partners", "create", "globex", "--display", "Globex Corp"]);
    let table = ok(&server, &["partners", "list"]);
    assert!(table.contains("NAME") && table.contains("globex") && table.contains("acme"), "{table}");
    assert!(!table.contains('\u{2500}'), "no box drawing when piped: {table}");
    let partners = json_of(&server, &["partners", "list"]);
    assert!(names(&partners, "name").contains(&"globex".to_string()), "{partners}");
    let shown = json_of(&server, &["partners", "show", "globex"]);
    assert_eq!(shown["display"], "Globex Corp");

    ok(&server, &["tenants", "create", "t2"]);
    assert!(names(&json_of(&server, &["tenants", "list"]), "id").contains(&"t2".to_string()));

    // A bad name is the API's problem, named, and exit code 1.
    let err = fails(&server, &["tenants", "create", "Not A Slug"]);
    assert!(err.contains("422") && err.contains("invalid-name") && err.contains("field: id"), "{err}");
    // A missing resource is a 404 with its problem type.
    let err = fails(&server, &["partners", "show", "nobody"]);
    assert!(err.contains("404") && err.contains("not-found"), "{err}");

    // Tokens: the secret is printed once at creation, never by the list.
    let created = json_of(&server, &["tokens", "create", "--role", "tenant", "--scope", "t2", "--label", "cli"]);
    let secret = created["token"].as_str().unwrap().to_string();
    let listed = ok(&server, &["tokens", "list", "--json"]);
    assert!(!listed.contains(&secret), "a token list never shows a secret");
    assert!(listed.contains("\"cli\""), "{listed}");

    // Entitlements and the versions across partners.
    ok(&server, &["entitlements", "set", "t2", "acme/budget-pacing"]);
    let entitlements = json_of(&server, &["entitlements", "list", "--tenant", "t2"]);
    assert_eq!(names(&entitlements, "app"), ["acme/budget-pacing"], "{entitlements}");
    let versions = json_of(&server, &["versions", "list", "--app", "acme/budget-pacing"]);
    assert!(names(&versions, "version").contains(&"1.4.34".to_string()), "{versions}");
    let yanked = json_of(&server, &["versions", "yank", "acme/budget-pacing", "1.4.34"]);
    assert_eq!(yanked["yanked"], true, "{yanked}");
    ok(&server, &["versions", "unyank", "acme/budget-pacing", "1.4.34"]);

    // An installation made by the tenant, read by the operator with its effective limits.
    let api = &server.api;
    let id = api
        .install(&server.tenant_token, "demo", json!({"app": "acme/budget-pacing", "config": {"apiKey": "k-123"}}))
        .await
        .id;
    let installations = json_of(&server, &["installations", "list", "--tenant", "demo"]);
    assert_eq!(names(&installations, "id"), vec![id.clone()]);

    // Limits: a loosening is refused naming the ceiling; a tightening shows on the
    // installation with its source.
    let err = fails(&server, &["limits", "tenant", "set", "demo", "timeoutMs=5000"]);
    assert!(err.contains("422") && err.contains("ceiling") && err.contains("1000"), "{err}");
    ok(&server, &["limits", "tenant", "set", "demo", "timeoutMs=150"]);
    let shown = json_of(&server, &["installations", "show", "demo", &id]);
    assert_eq!(shown["limits"]["timeoutMs"], json!({"value": 150, "source": "tenant"}), "{shown}");
    let err = fails(&server, &["limits", "tenant", "set", "demo", "timeoutMs=soon"]);
    assert!(err.contains("timeoutMs"), "{err}");
    ok(&server, &["limits", "tenant", "clear", "demo"]);
    let shown = json_of(&server, &["installations", "show", "demo", &id]);
    assert_ne!(shown["limits"]["timeoutMs"]["source"], "tenant", "{shown}");

    // Logs of the installation (the install hook ran, so there may be lines; the
    // command answers either way) and the audit log with what the CLI did.
    ok(&server, &["logs", "demo", &id]);
    let audit = ok(&server, &["audit", "--limit", "50"]);
    assert!(audit.contains("ACTION") && audit.contains("tenant"), "{audit}");

    // Suspension through the CLI refuses the tenant's calls.
    ok(&server, &["tenants", "suspend", "demo"]);
    let input = json!({"campaignId": "c", "budget": 30, "flightDays": 30, "dailySpend": [1]});
    let (status, problem) = api.invoke(&server.tenant_token, "demo", &id, "evaluate", input).await;
    assert_eq!(status, 403);
    assert_eq!(problem["type"], "urn:kiosk:problem:tenant-suspended");
    ok(&server, &["tenants", "resume", "demo"]);
    // A tenant's own apps: switched on with its quota and ranges, shown, a bad range named.
    let on =
        json_of(&server, &["tenants", "set-private-apps", "t2", "--max-apps", "2", "--open-range", "10.20.0.0/16"]);
    assert_eq!(
        (&on["enabled"], &on["maxApps"], &on["openRanges"]),
        (&json!(true), &json!(2), &json!(["10.20.0.0/16"]))
    );
    let shown = json_of(&server, &["tenants", "private-apps", "t2"]);
    assert_eq!((&shown["source"], &shown["apps"]), (&json!("tenant"), &json!([])));
    let err = fails(&server, &["tenants", "set-private-apps", "*", "--open-range", "0.0.0.0/0"]);
    assert!(err.contains("invalid-private-app-policy") && err.contains("openRanges/0"), "{err}");
}

#[test]
fn without_a_token_or_server_the_command_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .args(["admin", "partners", "list"])
        .env_remove("KIOSK_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KIOSK_TOKEN"));

    let port = common::registry::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .args(["admin", "--url", &format!("http://127.0.0.1:{port}"), "--token", "x", "tenants", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Kiosk"), "{out:?}");
}
