//! `kiosk run`, the way a partner would use it.

use std::process::{Command, Output};

use crate::common;
use crate::common::{guest_path, manifest_path};

fn kiosk(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiosk")).args(args).arg("--cache-dir").arg(cache).output().expect("run kiosk")
}

#[test]
fn budget_pacing_runs_end_to_end_and_prints_output_usage_and_logs() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = guest_path("budget-pacing");
    let manifest = manifest_path("budget-pacing");
    let out = kiosk(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--tenant",
            "demo",
            "--config",
            r#"{"apiKey":"sk-live-very-secret"}"#,
            "--invoke",
            "evaluate",
            "--input",
            r#"{"campaignId":"spring-sale","budget":3000,"flightDays":30,"dailySpend":[120,130,95,160,140]}"#,
        ],
        cache.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#""status": "over""#), "{stdout}");
    assert!(stdout.contains(r#""spent": 645.0"#), "{stdout}");
    let usage_line = |sku: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(sku))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>())
    };
    assert_eq!(usage_line("pacing-check"), Some(vec!["pacing-check", "1", "host"]));
    assert_eq!(usage_line("rows-scanned"), Some(vec!["rows-scanned", "5", "guest"]));
    assert_eq!(usage_line("campaigns-monitored"), Some(vec!["campaigns-monitored", "1", "report"]));
    assert!(stdout.contains("campaign spring-sale is over (+29.0%)"), "{stdout}");
    assert!(!stdout.contains("sk-live-very-secret"), "the secret config value is never printed");
}

#[test]
fn negative_keywords_uses_its_defaults_and_storage() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = guest_path("negative-keywords");
    let manifest = manifest_path("negative-keywords");
    let out = kiosk(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--tenant",
            "demo",
            "--invoke",
            "add",
            "--input",
            r#"{"list":"brand-safety","keywords":["Free","cheap","free"]}"#,
            "--json",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["output"], serde_json::json!({"list": "brand-safety", "added": 2, "size": 2}));
    let skus: Vec<_> = doc["usage"].as_array().unwrap().iter().map(|e| e["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["keyword-write", "stored-lists"]);
}

#[test]
fn bad_inputs_are_refused_with_a_reason_naming_them() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = guest_path("budget-pacing");
    let manifest = manifest_path("budget-pacing");
    let run = |config: &str, manifest: &str, wasm: &str| {
        let out = kiosk(
            &["run", wasm, "--manifest", manifest, "--tenant", "t", "--config", config, "--invoke", "evaluate"],
            cache.path(),
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (w, m) = (wasm.to_str().unwrap(), manifest.to_str().unwrap());
    let err = run(r#"{"threshold":7}"#, m, w);
    assert!(
        err.contains("--config refused")
            && err.contains("/threshold: violates `maximum`")
            && err.contains("/apiKey: is required"),
        "{err}"
    );
    let err = run("{not json", m, w);
    assert!(err.contains("--config is not valid JSON"), "{err}");
    let err = run(r#"{"apiKey":"k"}"#, m, "/nonexistent/app.wasm");
    assert!(err.contains("cannot read component /nonexistent/app.wasm"), "{err}");
    // Written to a temporary directory: the target directory may live elsewhere
    // (CARGO_TARGET_DIR).
    let scratch = tempfile::tempdir().unwrap();
    let bad_manifest = scratch.path().join("bad-manifest.json");
    let mut json = common::manifest_json("budget-pacing");
    json["capabilities"]["network"] = true.into();
    std::fs::write(&bad_manifest, json.to_string()).unwrap();
    let err = run(r#"{"apiKey":"k"}"#, bad_manifest.to_str().unwrap(), w);
    assert!(err.contains("capabilities") && err.contains("unknown field `network`"), "{err}");
    // The app's own validation reaches the user.
    let err = run(r#"{"apiKey":"   "}"#, m, w);
    assert!(err.contains("validate-config: the app refused: apiKey must not be empty (invalid-config)"), "{err}");
}

/// `kiosk run` goes through the core's install: in a fresh store the tenant gets the
/// licence the app requires; in a store given with `--database` its entitlements apply,
/// as they would over the API.
#[tokio::test]
async fn run_against_a_given_store_checks_the_tenants_licence() {
    let cache = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let wasm = guest_path("budget-pacing");
    let manifest = scratch.path().join("licensed-manifest.json");
    let mut json = common::manifest_json("budget-pacing");
    json["licensing"]["requiresEntitlement"] = true.into();
    std::fs::write(&manifest, json.to_string()).unwrap();
    let (w, m) = (wasm.to_str().unwrap(), manifest.to_str().unwrap());
    let input = r#"{"campaignId":"c","budget":100,"flightDays":10,"dailySpend":[10]}"#;
    let run = |extra: &[&str]| {
        let mut args =
            vec!["run", w, "--manifest", m, "--tenant", "t1", "--config", r#"{"apiKey":"k"}"#, "--invoke", "evaluate"];
        args.extend(["--input", input]);
        args.extend(extra);
        // The keys and secrets key of a given store's run live in the data directory.
        Command::new(env!("CARGO_BIN_EXE_kiosk"))
            .args(&args)
            .arg("--cache-dir")
            .arg(cache.path())
            .env("XDG_DATA_HOME", scratch.path())
            .output()
            .expect("run kiosk")
    };
    // A fresh store: the licence is granted locally, the run succeeds.
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A given store: no licence there, so the install is refused, naming it.
    let db = format!("sqlite://{}", scratch.path().join("kiosk.db").display());
    let out = run(&["--database", &db, "--installation", "first"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tenant t1 has no licence for acme/budget-pacing"), "{err}");
    // The operator grants it in that store: the same command now runs.
    let store = kiosk::store::Store::connect(&db).await.unwrap();
    let grant = kiosk::store::EntitlementRow {
        tenant: "t1".into(),
        app: "acme/budget-pacing".into(),
        expires_ms: None,
        revoked: false,
    };
    store.set_entitlement(&grant, "test").await.unwrap();
    let out = run(&["--database", &db, "--installation", "second"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pacing-check"));
}
