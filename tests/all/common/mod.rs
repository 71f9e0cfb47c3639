//! Shared helpers for Kiosk's end-to-end tests: real components built from
//! `plugins-examples/` and `tests/guests/` for wasm32-wasip2 (by `.ci/test`).

pub mod api;
pub mod gpg;
pub mod pg_proxy;
pub mod registry;

use std::path::PathBuf;
use std::sync::Arc;

use kiosk::kv::MemoryKv;
use kiosk::limits::SandboxLimits;
use kiosk::manifest::Manifest;
use kiosk::metering::MemorySink;
use kiosk::runtime::{AppVersion, Runtime, RuntimeSettings, Services};
use kiosk::store::{InstallationRow, Store};
use kiosk::world::HOST_API_VERSION;

use self::api::TestServer;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a guest component built by `.ci/test` (crate name with `_`).
pub fn guest_path(crate_name: &str) -> PathBuf {
    let dir = std::env::var_os("KIOSK_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
        target.join("wasm32-wasip2/release")
    });
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "guest component {} is missing: build the guests first (`bash .ci/test` does: \
         cargo build --release --target wasm32-wasip2 -p budget-pacing -p negative-keywords -p hostile-guest, \
         and plugins-examples/{{audience-forecast,ad-copy-check}}/build.sh for the Python and JS apps)",
        path.display()
    );
    path
}

pub fn guest_bytes(crate_name: &str) -> Vec<u8> {
    std::fs::read(guest_path(crate_name)).expect("read guest component")
}

/// The manifest of an example app or test guest.
pub fn manifest_path(crate_name: &str) -> PathBuf {
    match crate_name {
        "hostile-guest" => root().join("tests/guests/hostile/manifest.json"),
        "outbound-guest" => root().join("tests/guests/outbound/manifest.json"),
        "outbound-js-guest" => root().join("tests/guests/outbound-js/manifest.json"),
        other => root().join("plugins-examples").join(other).join("manifest.json"),
    }
}

pub fn manifest_json(crate_name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(manifest_path(crate_name)).expect("read manifest")).expect("manifest JSON")
}

pub fn parse_manifest(json: &serde_json::Value) -> Manifest {
    Manifest::parse(json.to_string().as_bytes(), &HOST_API_VERSION).expect("valid manifest")
}

/// A runtime with in-memory services whose contents the test can inspect.
pub struct Harness {
    pub runtime: Runtime,
    pub sink: Arc<MemorySink>,
    pub kv: Arc<MemoryKv>,
}

impl Harness {
    pub fn new(limits: SandboxLimits) -> Self {
        Self::with_cache(limits, None)
    }

    pub fn with_cache(limits: SandboxLimits, cache_dir: Option<PathBuf>) -> Self {
        Self::with_settings(RuntimeSettings { limits, cache_dir, ..Default::default() })
    }

    pub fn with_settings(settings: RuntimeSettings) -> Self {
        let sink = Arc::new(MemorySink::default());
        let kv = Arc::new(MemoryKv::default());
        let services = Services::separate(kv.clone(), sink.clone());
        let runtime = Runtime::new(settings, services).expect("runtime starts");
        Self { runtime, sink, kv }
    }

    /// Loads a guest with its manifest (optionally edited).
    pub fn app_with(&self, crate_name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> AppVersion {
        let mut json = manifest_json(crate_name);
        edit(&mut json);
        let component = self.runtime.load(&guest_bytes(crate_name)).expect("component loads");
        self.runtime.prepare(parse_manifest(&json), Arc::new(component))
    }

    pub fn app(&self, crate_name: &str) -> AppVersion {
        self.app_with(crate_name, |_| {})
    }
}

/// Set in a child process of this test binary to the one test it runs (see [`alone`]).
const ALONE: &str = "KIOSK_TEST_ALONE";

/// Runs the test `name` (its path in this binary, e.g. `hygiene::numbers_on_sqlite`)
/// alone in a child process of the test binary. The suites share one process and run at
/// the same time; a test that measures the whole process — its resident memory, its
/// metrics recorder — would measure the others too. Returns `true` in the parent once
/// the child ran the test and it passed (the test is done there), `false` in the child,
/// which then runs the test's body:
///
/// ```ignore
/// if common::alone("hygiene::numbers_on_sqlite") {
///     return;
/// }
/// ```
pub fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some_and(|running| running == name) {
        return false;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--test-threads=1"])
        .env(ALONE, name)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}, alone in a child process, failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 1 passed;"), "{name} did not run in the child process:\n{stdout}\n{stderr}");
    true
}

/// The PostgreSQL server tests use (`KIOSK_TEST_POSTGRES`, default the local one).
pub fn postgres_admin_url() -> String {
    std::env::var("KIOSK_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty PostgreSQL database for one test; returns its URL. Fails loudly when
/// PostgreSQL is not reachable (never skips).
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection as _;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running at {admin} (set KIOSK_TEST_POSTGRES): {e}"));
    let name = format!("kiosk_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// `manifest.json=component.wasm` of an example app or test guest, for the demo seed
/// (`kiosk serve --demo-app`).
pub fn demo_app(crate_name: &str) -> String {
    format!("{}={}", manifest_path(crate_name).display(), guest_path(crate_name).display())
}

/// `kiosk serve` in this process on `database` (SQLite in a fresh data directory when
/// `None`), with the operator config `extra` (TOML) and the hostile test guest registered
/// through the demo seed, its manifest edited by `edit`.
pub async fn hostile_server(
    database: Option<String>,
    extra: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> TestServer {
    guest_server("hostile-guest", database, extra, edit).await
}

/// `kiosk serve` in this process on `database` (SQLite in a fresh data directory when
/// `None`), with the operator config `extra` (TOML) and the test guest `crate_name`
/// registered through the demo seed, its manifest edited by `edit`.
pub async fn guest_server(
    crate_name: &str,
    database: Option<String>,
    extra: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut manifest = manifest_json(crate_name);
    edit(&mut manifest);
    let manifest_path = dir.path().join(format!("{crate_name}-manifest.json"));
    std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");
    let demo = format!("{}={}", manifest_path.display(), guest_path(crate_name).display());
    TestServer::start_with(dir.path(), database, extra, vec![demo]).await.keeping(dir)
}

/// `kiosk serve` in this process on `database` (SQLite in a fresh data directory when
/// `None`) with the example app budget-pacing registered through the demo seed at each
/// of `versions` (the same component, the manifest's version edited).
pub async fn budget_pacing_server(database: Option<String>, versions: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = guest_path("budget-pacing");
    let demo_apps = versions
        .iter()
        .map(|version| {
            let mut manifest = manifest_json("budget-pacing");
            manifest["version"] = (*version).into();
            let path = dir.path().join(format!("budget-pacing-{version}.json"));
            std::fs::write(&path, manifest.to_string()).expect("write manifest");
            format!("{}={}", path.display(), wasm.display())
        })
        .collect();
    TestServer::start_with(dir.path(), database, "", demo_apps).await.keeping(dir)
}

/// `kiosk serve ARGS` (the real binary) as a child process with `envs`, its stdout and
/// stderr in `log_path`; returns once it prints its listener line (bounded), with the
/// log so far: the bootstrap and demo tokens are printed before that line.
pub fn spawn_serve(args: &[&str], envs: &[(&str, &str)], log_path: &std::path::Path) -> (std::process::Child, String) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let log = std::fs::File::create(log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .arg("serve")
        .args(args)
        .envs(envs.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // A start bound, not a speed claim: a loaded machine compiles the demo app first.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if text.contains("kiosk listening on") {
            return (child, text);
        }
        assert!(child.try_wait().unwrap().is_none(), "kiosk serve exited: {text}");
        assert!(Instant::now() < deadline, "kiosk serve did not start within 60 s: {text}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The value of `export NAME=…` in `kiosk serve --demo-app`'s output.
pub fn demo_token(log: &str, name: &str) -> String {
    log.lines().find_map(|l| l.trim().strip_prefix(&format!("export {name}=")).map(str::to_string)).unwrap()
}

/// Partner `acme` with a certificate and budget-pacing 1.4.34 written straight into
/// `store` (no registry, no signature check): enough for rows that need a version.
pub async fn register_budget_pacing(store: &Store) {
    store.create_partner("acme", "Acme", "operator").await.unwrap();
    store.add_certificate("acme", "ABCD", b"cert bytes", "operator").await.unwrap();
    let text = std::fs::read_to_string(manifest_path("budget-pacing")).unwrap();
    let manifest = Manifest::parse(text.as_bytes(), &HOST_API_VERSION).unwrap();
    store
        .register_version(&manifest, &text, "sha256:m", "sha256:c", b"\0asm", "ABCD", "ref", "partner:acme")
        .await
        .unwrap();
}

/// `tenant`'s installation `id` of budget-pacing 1.4.34, empty config.
pub fn budget_pacing_row(tenant: &str, id: &str) -> InstallationRow {
    InstallationRow {
        id: id.into(),
        tenant: tenant.into(),
        app: "acme/budget-pacing".into(),
        version: "1.4.34".into(),
        config: "{}".into(),
        secrets: Vec::new(),
        created_ms: 1,
        updated_ms: 1,
        row_version: 0,
        upgrade_policy: Default::default(),
    }
}

/// The hostile guest's manifest with `edit` applied, written beside the test's data.
pub fn hostile_manifest(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut manifest = manifest_json("hostile-guest");
    edit(&mut manifest);
    let path = dir.join("hostile-manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    format!("{}={}", path.display(), guest_path("hostile-guest").display())
}

/// Sends `call` until it answers that a change made on the other replica holds (its
/// `.0`), and fails if a call sent `CALL_READS_FRESH` or more after `changed` (when the
/// change's answer was received) does not: the bound each replica's call cache keeps
/// (`kiosk_store::call_cache`). Calls sent before may still be served as before. The
/// answer that showed the change is returned.
pub async fn holds_within_bound<T: std::fmt::Debug>(
    changed: std::time::Instant,
    what: &str,
    mut call: impl AsyncFnMut() -> (bool, T),
) -> T {
    let bound = kiosk::store::CALL_READS_FRESH;
    loop {
        let sent = changed.elapsed();
        let (holds, body) = call().await;
        if holds {
            return body;
        }
        assert!(
            sent < bound,
            "{what}: a call sent {sent:?} after the change did not see it (bound {bound:?}): {body:?}"
        );
    }
}
