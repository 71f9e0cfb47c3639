//! The compile cache across process starts, through the real `kiosk` binary.

use std::path::Path;
use std::process::Command;

use crate::common::{guest_path, manifest_path};

fn kiosk_run(cache_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .arg("run")
        .arg(guest_path("budget-pacing"))
        .arg("--manifest")
        .arg(manifest_path("budget-pacing"))
        .args(["--tenant", "acme-retail", "--config", r#"{"apiKey":"k-123"}"#, "--invoke", "evaluate"])
        .args(["--input", r#"{"campaignId":"c1","budget":300,"flightDays":30,"dailySpend":[10,10,10]}"#, "--json"])
        .arg("--cache-dir")
        .arg(cache_dir)
        .output()
        .expect("run kiosk");
    assert!(out.status.success(), "kiosk run failed: {}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(doc["output"]["status"], "on-track", "{doc}");
    doc
}

fn cache_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    entries
}

#[test]
fn a_second_process_loads_from_the_cache_and_a_corrupt_entry_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let first = kiosk_run(dir.path());
    assert_eq!(first["component"]["cache"], "compiled");
    let entries = cache_entries(dir.path());
    assert_eq!(entries.len(), 1, "one entry, no temp files left: {entries:?}");
    let digest = first["component"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert!(entries[0].file_name().unwrap().to_str().unwrap().starts_with(&digest), "keyed by component digest");

    let second = kiosk_run(dir.path());
    assert_eq!(second["component"]["cache"], "hit", "the second process must not compile");

    // Flip one byte in the middle of the compiled code.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let third = kiosk_run(dir.path());
    let cache = third["component"]["cache"].as_str().unwrap();
    assert!(cache.starts_with("rebuilt") && cache.contains("checksum mismatch"), "{cache}");
    assert_eq!(kiosk_run(dir.path())["component"]["cache"], "hit", "the rebuilt entry is good");

    // A truncated entry (e.g. a crash of another writer) is rebuilt too.
    std::fs::write(&entries[0], &bytes[..20]).unwrap();
    let cache = kiosk_run(dir.path())["component"]["cache"].as_str().unwrap().to_string();
    assert!(cache.starts_with("rebuilt") && cache.contains("bad header"), "{cache}");
    assert_eq!(cache_entries(dir.path()).len(), 1);
}

#[test]
fn different_engine_settings_use_a_different_entry() {
    let dir = tempfile::tempdir().unwrap();
    kiosk_run(dir.path());
    let config = dir.path().join("operator.toml");
    // Fuel changes the generated code, so it must not reuse the entry compiled without it.
    std::fs::write(&config, "[sandbox]\nfuel = 100000000\n").unwrap();
    let cache_dir = dir.path().join("cache");
    for expected in ["compiled", "hit"] {
        assert_eq!(cache_outcome(&cache_dir, &config), expected);
    }
    let plain = cache_entries(dir.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "cwasm")).unwrap();
    let fueled = cache_entries(&cache_dir).pop().unwrap();
    assert_ne!(plain.file_name(), fueled.file_name(), "engine settings are part of the key");
}

/// `kiosk run` of budget-pacing with the compile cache in `cache_dir` and `operator`
/// config; returns the cache outcome.
fn cache_outcome(cache_dir: &Path, operator: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .arg("run")
        .arg(guest_path("budget-pacing"))
        .arg("--manifest")
        .arg(manifest_path("budget-pacing"))
        .args(["--tenant", "t", "--config", r#"{"apiKey":"k"}"#, "--invoke", "evaluate", "--json"])
        .args(["--input", r#"{"campaignId":"c1","budget":300,"flightDays":30,"dailySpend":[10]}"#])
        .arg("--operator-config")
        .arg(operator)
        .arg("--cache-dir")
        .arg(cache_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["component"]["cache"].as_str().unwrap().to_string()
}

#[test]
fn hosts_with_other_pool_limits_share_a_cache_directory_without_discarding_entries() {
    // wasmtime validates a component against the pooling limits when it loads one, and
    // its compatibility hash leaves them out: the limits are part of Kiosk's key, so
    // two hosts with other memory limits keep an entry each and never load (and
    // discard) an artefact made for the other.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (small, large) = (dir.path().join("small.toml"), dir.path().join("large.toml"));
    std::fs::write(&small, "[sandbox]\nmemory-mib = 32\n").unwrap();
    std::fs::write(&large, "[sandbox]\nmemory-mib = 128\n").unwrap();
    assert_eq!(cache_outcome(&cache, &small), "compiled");
    assert_eq!(cache_outcome(&cache, &large), "compiled");
    assert_eq!(cache_outcome(&cache, &small), "hit");
    assert_eq!(cache_outcome(&cache, &large), "hit");
    assert_eq!(cache_entries(&cache).len(), 2);
}
