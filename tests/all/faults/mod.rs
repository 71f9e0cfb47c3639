//! Faults on purpose (issue 31): real `kiosk serve` processes driven by a client while
//! the test breaks what they stand on, then what an operator would check afterwards.
//!
//! - `disk_full`: the SQLite file on a small tmpfs the test mounts, filled until writes
//!   fail: 503 `storage-unavailable` with `Retry-After`, never 500 nor the database's
//!   words; 200 again without a restart once space is back; nothing answered 200 lost.
//!   Needs root (or CAP_SYS_ADMIN) for `mount -t tmpfs`; fails, never skips, without it.
//! - `sigkill`: a scripted workload (install, configure, invokes writing key-value data
//!   and metering usage, partner usage posts, uninstall, usage windows collected every
//!   second) SIGKILLed at a random moment and restarted on the same database, then the
//!   ledger, the windows, key-value quotas and the installations' audit checked
//!   (`check`). `KIOSK_KILL_ITERATIONS` kills (3 by default, so CI stays short);
//!   `KIOSK_KILL_SEED` repeats a run (the seed is printed). A long run:
//!
//!   ```text
//!   KIOSK_KILL_ITERATIONS=100 cargo test --release --test all faults::sigkill -- --nocapture
//!   ```
//!
//!   (`KIOSK_FAULTS_BIN=<a copy of target/release/kiosk>` keeps a long run off a binary
//!   that a build replaces meanwhile.)
//! - `pg_cut`: PostgreSQL backends of the server terminated again and again
//!   (`pg_terminate_backend`) under concurrent invokes and partner posts: 200 or 503
//!   with `Retry-After`, never 500; the server recovers by itself; every usage event
//!   answered 200 is in the ledger exactly once.
//! - `failover`: two replicas on one PostgreSQL; one SIGKILLed under keyed invokes, its
//!   unanswered requests sent again with their `Idempotency-Key` to the other: each
//!   request billed exactly once, as the call it was answered with.

mod check;
mod disk_full;
mod failover;
mod pg_cut;
mod sigkill;

use std::path::{Path, PathBuf};
use std::process::Child;

use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Api, Reply};

/// The app every harness installs: budget-pacing (`evaluate` writes a key per campaign,
/// meters `pacing-check` on the host and `rows-scanned` in the guest; `usage.report`
/// reports `campaigns-monitored` per window).
pub const APP: &str = "acme/budget-pacing";
pub const VERSION: &str = "1.4.34";
pub const TENANT: &str = "demo";
pub const OPERATOR: &str = "operator-token-faults-0123456789abcdef";

/// A `kiosk serve` process (the real binary) with the budget-pacing demo seed, killed
/// with SIGKILL when dropped.
pub struct Kiosk {
    child: Child,
    pub api: Api,
    pub tenant: String,
    pub partner: String,
    pub log: PathBuf,
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Kiosk {
    /// `kiosk serve` on `database` with the config `data-dir = dir/data`, the operator
    /// token and then `toml`; its output in `dir/kiosk-<name>.log`. Returns once it
    /// listens (the demo seed's tokens are printed before that).
    pub fn start(dir: &Path, database: &str, toml: &str, name: &str) -> Self {
        let port = common::registry::free_port();
        let config = dir.join(format!("kiosk-{name}.toml"));
        let text = format!(
            "data-dir = \"{}\"\n[server]\noperator-token = \"{OPERATOR}\"\nsecrets-key = \"{}\"\n{toml}",
            dir.join("data").display(),
            "5a".repeat(32)
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("kiosk-{name}.log"));
        let demo = common::demo_app("budget-pacing");
        let listen = format!("127.0.0.1:{port}");
        let args =
            ["--config", config.to_str().unwrap(), "--database", database, "--demo-app", &demo, "--listen", &listen];
        let (child, text) = spawn(&args, &log);
        Self {
            child,
            api: Api::new(format!("http://127.0.0.1:{port}")),
            tenant: common::demo_token(&text, "TENANT_TOKEN"),
            partner: common::demo_token(&text, "PARTNER_TOKEN"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (std's `Child::kill`), then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's error lines so far (at most `n`), for a failure message: the test's
    /// directory, and the log in it, is gone once the test fails.
    pub fn error_lines(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).take(n).collect();
        lines.join("\n")
    }

    /// Installs budget-pacing for the demo tenant; the installation's id.
    pub async fn install(&self) -> String {
        let body = json!({"app": APP, "version": VERSION, "config": {"apiKey": "k"}});
        self.api.install(&self.tenant, TENANT, body).await.id
    }
}

/// `kiosk serve ARGS` as `common::spawn_serve` starts it, from `KIOSK_FAULTS_BIN` when
/// set: a long run (`KIOSK_KILL_ITERATIONS=…`) on a copy of the binary is not disturbed
/// by a rebuild of `target/release/kiosk` meanwhile.
fn spawn(args: &[&str], log_path: &Path) -> (Child, String) {
    let Some(bin) = std::env::var_os("KIOSK_FAULTS_BIN") else { return common::spawn_serve(args, &[], log_path) };
    let log = std::fs::File::create(log_path).unwrap();
    let mut child = std::process::Command::new(bin)
        .arg("serve")
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A start bound, not a speed claim (as `common::spawn_serve`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if text.contains("kiosk listening on") {
            return (child, text);
        }
        assert!(child.try_wait().unwrap().is_none(), "kiosk serve exited: {text}");
        assert!(std::time::Instant::now() < deadline, "kiosk serve did not start within 60 s: {text}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The input of `evaluate` for `campaign` (one key-value entry per campaign).
pub fn evaluate(campaign: &str) -> Value {
    json!({"campaignId": campaign, "budget": 300, "flightDays": 30, "dailySpend": [10, 11]})
}

/// A partner usage record of `key` for `installation`, one `campaigns-monitored`.
pub fn partner_record(installation: &str, key: &str) -> Value {
    json!({"tenant": TENANT, "app": APP, "installation": installation, "sku": "campaigns-monitored",
           "quantity": 1, "timestampMs": now_ms() - 1000, "idempotencyKey": key})
}

/// What the server acknowledged (and refused) — what the checks hold it to.
#[derive(Debug, Default, Clone)]
pub struct Acked {
    /// Calls answered 200: call id and the number of usage events the answer listed.
    pub calls: Vec<(String, usize)>,
    /// Calls answered 503 (the host could not keep them): none of their usage may count.
    pub failed_calls: Vec<String>,
    /// Partner idempotency keys answered `recorded` or `duplicate`.
    pub partner_keys: Vec<String>,
    /// Key-value keys (`campaign/<id>`) of calls answered 200, per installation.
    pub kv_keys: Vec<(String, String)>,
    /// Statuses that must never be: each request and its answer.
    pub forbidden: Vec<String>,
}

impl Acked {
    /// Files one invoke's answer: 200 acknowledges its usage and key; a problem with a
    /// `callId` refuses them; a 500 is forbidden; a 503 must say when to retry.
    pub fn invoke(&mut self, installation: &str, campaign: &str, reply: &Reply) {
        let body: Value = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
        if reply.status == 200 {
            let usage = body["usage"].as_array().map_or(0, Vec::len);
            self.calls.push((body["callId"].as_str().unwrap().to_string(), usage));
            self.kv_keys.push((installation.to_string(), format!("campaign/{campaign}")));
            return;
        }
        // A call that returned an app error commits its usage; one refused for the host's
        // sake (503: storage, usage not recorded) commits nothing.
        if let (503, Some(call)) = (reply.status.as_u16(), body["callId"].as_str()) {
            self.failed_calls.push(call.to_string());
        }
        self.problem("invoke", reply);
    }

    /// Files one partner post of `keys`: 200 acknowledges those recorded or duplicate.
    pub fn post(&mut self, keys: &[String], reply: &Reply) {
        if reply.status == 200 {
            let body: Value = serde_json::from_str(&reply.text).unwrap();
            for (key, result) in keys.iter().zip(body["results"].as_array().unwrap()) {
                let status = result["status"].as_str().unwrap();
                assert!(status == "recorded" || status == "duplicate", "{key}: {result}");
                self.partner_keys.push(key.clone());
            }
            return;
        }
        self.problem("partner usage post", reply);
    }

    /// Any other answer: a 500 (or a 503 without `Retry-After`) is filed as forbidden.
    pub fn problem(&mut self, what: &str, reply: &Reply) {
        let retry = reply.header("retry-after").is_some();
        if reply.status.is_server_error() && (reply.status == 500 || !retry) {
            self.forbidden.push(format!("{what}: {} (Retry-After: {retry}) {}", reply.status, reply.text));
        }
    }
}

/// Sends `body` to `path` and reads the answer whole; `None` when the server did not
/// answer (killed, or its connection cut).
pub async fn send(api: &Api, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Reply> {
    let mut request = api.request(Some(token), method, path).timeout(std::time::Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.ok()?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.ok()?;
    Some(Reply { status, headers, text })
}
