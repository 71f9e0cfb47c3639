//! `kiosk new` as a partner uses it: for each language the starter app builds with its
//! own `build.sh` (cargo, componentize-py, ComponentizeJS) and its `try.sh` runs it
//! through `kiosk run` unchanged — install, invoke, usage report.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn kiosk(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiosk")).args(args).current_dir(cwd).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn new_app_runs_unchanged(lang: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let made = kiosk(&["new", "acme/hello-world", "--lang", lang], scratch.path());
    assert!(made.status.success(), "kiosk new --lang {lang}: {}", text(&made));
    let dir = scratch.path().join("hello-world");
    assert!(text(&made).contains("created hello-world"), "{}", text(&made));

    // Build exactly as the README says, sharing one cargo target directory between runs.
    let build = Command::new("bash")
        .arg("build.sh")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", common::root().join("target/kiosk-new"))
        .output()
        .unwrap();
    assert!(build.status.success(), "build.sh of the {lang} app: {}", text(&build));
    assert!(dir.join("app.wasm").exists(), "{lang}: no app.wasm");

    let cache = scratch.path().join("cache");
    let run = Command::new("bash")
        .arg("try.sh")
        .current_dir(&dir)
        .env("KIOSK", env!("CARGO_BIN_EXE_kiosk"))
        .env("KIOSK_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let out = text(&run);
    assert!(run.status.success(), "try.sh of the {lang} app: {out}");
    assert!(out.contains("acme/hello-world@0.1.0 for tenant demo"), "{lang}: {out}");
    assert!(out.contains("\"message\": \"Hello, Ada!\""), "{lang}: {out}");
    let usage: Vec<&str> =
        out.lines().filter(|l| l.starts_with("  greeting") || l.starts_with("  people-greeted")).collect();
    assert_eq!(usage.len(), 2, "{lang}: the host's greeting and the app's report: {out}");
    assert!(out.contains("greeted Ada"), "{lang}: the app's log line: {out}");
}

#[test]
fn a_new_rust_app_builds_and_runs() {
    new_app_runs_unchanged("rust");
}

#[test]
fn a_new_python_app_builds_and_runs() {
    new_app_runs_unchanged("python");
}

#[test]
fn a_new_javascript_app_builds_and_runs() {
    new_app_runs_unchanged("js");
}

#[test]
fn kiosk_new_refuses_a_bad_name_and_a_used_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let bad = kiosk(&["new", "Acme/Hello World", "--lang", "python"], scratch.path());
    assert!(!bad.status.success());
    assert!(text(&bad).contains("lower-case letters, digits and '-'"), "{}", text(&bad));
    std::fs::create_dir(scratch.path().join("taken")).unwrap();
    std::fs::write(scratch.path().join("taken/keep.txt"), "mine").unwrap();
    let used = kiosk(&["new", "taken", "--partner", "acme", "--lang", "rust"], scratch.path());
    assert!(!used.status.success());
    assert!(text(&used).contains("taken exists and is not empty"), "{}", text(&used));
    assert_eq!(std::fs::read_to_string(scratch.path().join("taken/keep.txt")).unwrap(), "mine", "nothing overwritten");
}
