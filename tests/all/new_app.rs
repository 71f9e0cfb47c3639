//! `kiosk new` as a partner uses it: for each language the starter app builds with its
//! own `build.sh` (cargo, componentize-py, ComponentizeJS) and its `try.sh` runs it
//! through `kiosk run` unchanged — install, invoke, usage report. The Rust app's
//! `status` calls out to a mock of the partner's service (`kiosk run --mock`).

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

fn kiosk(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiosk")).args(args).current_dir(cwd).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `kiosk new acme/<name> --lang <lang>` in `scratch`, built by its own `build.sh`; where.
fn new_app_built(scratch: &Path, name: &str, lang: &str) -> PathBuf {
    let made = kiosk(&["new", &format!("acme/{name}"), "--lang", lang], scratch);
    assert!(made.status.success(), "kiosk new --lang {lang}: {}", text(&made));
    let dir = scratch.join(name);
    assert!(text(&made).contains(&format!("created {name}")), "{}", text(&made));

    // Build exactly as the README says, sharing one cargo target directory between runs.
    let build = Command::new("bash")
        .arg("build.sh")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", common::root().join("target/kiosk-new"))
        .output()
        .unwrap();
    assert!(build.status.success(), "build.sh of the {lang} app: {}", text(&build));
    assert!(dir.join("app.wasm").exists(), "{lang}: no app.wasm");
    dir
}

fn new_app_runs_unchanged(lang: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = new_app_built(scratch.path(), "hello-world", lang);

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

/// The `status` operation as the commented command in `try.sh` tries it: `--mock` sends
/// the request for the declared https://api.example.com to a plain-HTTP stand-in on
/// loopback, which sees the declared name in `Host` and the key `--config` gives (the
/// app held only its placeholder); the app returns the stand-in's status and body.
/// Rust only: the three templates make the same request.
#[test]
fn a_new_rust_apps_status_calls_its_service() {
    const BODY: &str = r#"{"service": "up"}"#;
    let scratch = tempfile::tempdir().unwrap();
    // Its own name: its cargo build does not overwrite the other Rust test's output.
    let dir = new_app_built(scratch.path(), "hello-status", "rust");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, heads) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(socket.read(&mut byte).unwrap(), 1, "the request head ended early");
            head.push(byte[0]);
        }
        // Sent before the answer: once kiosk has the answer, the head is here.
        seen.send(String::from_utf8_lossy(&head).to_ascii_lowercase()).unwrap();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        socket.write_all(answer.as_bytes()).unwrap();
    });

    let mock = format!("https://api.example.com=http://127.0.0.1:{port}");
    let cache = scratch.path().join("cache");
    let run = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .args(["run", "app.wasm", "--manifest", "manifest.json", "--tenant", "demo", "--json"])
        .args(["--config", r#"{"apiKey": "dev-key"}"#, "--invoke", "status", "--mock", &mock])
        .current_dir(&dir)
        .env("KIOSK_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let out = text(&run);
    assert!(run.status.success(), "kiosk run --invoke status: {out}");
    let head = heads.try_recv().unwrap_or_else(|_| panic!("the mock saw no request: {out}"));
    assert!(head.starts_with("get /v1/status http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: api.example.com\r\n"), "Host is the declared name: {head}");
    assert!(head.contains("\r\nauthorization: bearer dev-key\r\n"), "the key, not its placeholder: {head}");
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(doc["output"], serde_json::json!({"status": 200, "body": BODY}), "{out}");
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
