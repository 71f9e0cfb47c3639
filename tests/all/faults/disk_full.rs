//! Disk full under SQLite: the database file on a 8 MiB tmpfs the test mounts, filled by
//! a filler file until the server's writes fail. Every write is then refused with 503
//! `storage-unavailable` and `Retry-After`, in Kiosk's words (never a 500, never the
//! database's text), reads go on; once the filler is removed the same process answers
//! 200 again; and every call answered 200 has its usage once and its key-value data.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::json;

use super::check::Db;
use super::{Acked, Kiosk, TENANT, evaluate, partner_record, send};
use crate::common::api::{Reply, kind};

/// A tmpfs mounted for the test, unmounted (lazily: a process may still hold a file)
/// when dropped.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` on `dir`; fails the test, saying what it needs, when the
    /// mount is refused (never skips, under `CI=true` or not).
    fn tmpfs(dir: &Path, size: &str) -> Self {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("faults::disk_full needs `mount` (util-linux) to mount a tmpfs: {e}"));
        assert!(
            out.status.success(),
            "faults::disk_full mounts a {size} tmpfs on {} to fill it, which needs root or CAP_SYS_ADMIN \
             (run the tests as root, or in a container with --cap-add SYS_ADMIN); mount said: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a filler file into `dir` until the filesystem is full; its size.
fn fill(dir: &Path) -> u64 {
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    for size in [chunk.len(), 4096, 512, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("fill {}: {e}", dir.display()),
            }
        }
    }
    written
}

/// Fragments of the database's own words, which never reach a caller.
const DATABASE_WORDS: [&str; 6] = ["disk is full", "sqlite", "sqlx", "code:", "error returned", "database or disk"];

/// A refusal to retry: 503 `storage-unavailable`, `Retry-After`, Kiosk's words only.
/// Anything else is described for the final assertion.
fn unavailable(what: &str, reply: &Reply) -> Result<(), String> {
    let problem: serde_json::Value = serde_json::from_str(&reply.text).unwrap_or_default();
    let detail = problem["detail"].as_str().unwrap_or("").to_lowercase();
    let leaked = DATABASE_WORDS.iter().find(|w| detail.contains(*w));
    if reply.status != 503 || kind(&problem) != "storage-unavailable" || reply.header("retry-after").is_none() {
        return Err(format!("{what}: {} {:?} {}", reply.status, reply.header("retry-after"), reply.text));
    }
    match leaked {
        Some(words) => Err(format!("{what}: the database's words ({words}) in {}", reply.text)),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_to_retry_and_loses_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("db");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = Mount::tmpfs(&mnt, "8m");
    let url = format!("sqlite://{}", mnt.join("kiosk.db").display());
    // No window completes during the test: the ledger holds invokes and posts only.
    let server = Kiosk::start(dir.path(), &url, "[usage]\nwindow-seconds = 315360000\n", "full");
    let (api, tenant) = (&server.api, server.tenant.as_str());
    let installation = server.install().await;
    let invoke_path = format!("/v1/tenants/{TENANT}/installations/{installation}/invoke/evaluate");
    let mut acked = Acked::default();
    let mut wrong: Vec<String> = Vec::new();
    let post = async |acked: &mut Acked, keys: Vec<String>| {
        let records: Vec<_> = keys.iter().map(|k| partner_record(&installation, k)).collect();
        let body = json!({"records": records});
        let reply = send(api, &server.partner, Method::POST, "/v1/partners/acme/usage", Some(body)).await.unwrap();
        acked.post(&keys, &reply);
        reply
    };

    // Room to spare: every call and post is answered 200.
    for i in 0..20 {
        let campaign = format!("before-{i}");
        let reply = send(api, tenant, Method::POST, &invoke_path, Some(evaluate(&campaign))).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        acked.invoke(&installation, &campaign, &reply);
    }
    let reply = post(&mut acked, (0..5).map(|i| format!("before-{i}")).collect()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Full: calls (each writing a new key) go on until three in a row are refused; the
    // ones still answered 200 (SQLite reusing its log's room) must be kept.
    let filled = fill(&mnt);
    let (mut refused_in_a_row, mut answered) = (0, 0);
    for i in 0..3000 {
        let campaign = format!("full-{i}");
        let reply = send(api, tenant, Method::POST, &invoke_path, Some(evaluate(&campaign))).await.unwrap();
        acked.invoke(&installation, &campaign, &reply);
        if reply.status == 200 {
            refused_in_a_row = 0;
            answered += 1;
        } else {
            wrong.extend(unavailable(&format!("invoke {campaign} on a full disk"), &reply).err());
            refused_in_a_row += 1;
            if refused_in_a_row == 3 {
                break;
            }
        }
    }
    assert_eq!(refused_in_a_row, 3, "{filled} filler bytes, {answered} calls still answered 200: writes never failed");
    eprintln!("disk full: {filled} filler bytes; {answered} calls answered 200 after the fill, then refused");

    // Every other kind of write is refused the same way; reads go on.
    let reply = post(&mut acked, vec!["full-0".into(), "full-1".into()]).await;
    wrong.extend(unavailable("partner usage post on a full disk", &reply).err());
    let body = json!({"app": super::APP, "version": super::VERSION, "config": {"apiKey": "k"}});
    let installs = format!("/v1/tenants/{TENANT}/installations");
    let reply = send(api, tenant, Method::POST, &installs, Some(body)).await.unwrap();
    wrong.extend(unavailable("install on a full disk", &reply).err());
    let configure = json!({"config": {"apiKey": "k", "threshold": 0.2}});
    let reply = send(api, tenant, Method::PATCH, &format!("{installs}/{installation}"), Some(configure)).await.unwrap();
    wrong.extend(unavailable("configure on a full disk", &reply).err());
    let reply = send(api, tenant, Method::GET, &installs, None).await.unwrap();
    assert_eq!(reply.status, 200, "reads go on while the disk is full: {}", reply.text);

    // Space back: the same process answers 200 again, no restart.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    for i in 0..5 {
        let campaign = format!("after-{i}");
        let reply = send(api, tenant, Method::POST, &invoke_path, Some(evaluate(&campaign))).await.unwrap();
        assert_eq!(reply.status, 200, "space is back: {}", reply.text);
        acked.invoke(&installation, &campaign, &reply);
    }
    let reply = post(&mut acked, (0..5).map(|i| format!("after-{i}")).collect()).await;
    assert_eq!(reply.status, 200, "space is back: {}", reply.text);

    // Nothing answered 200 is lost, nothing refused counts: in the database, and in the
    // tenant's usage through the API.
    let db = Db::open(&url).await;
    let events = db.usage_exactly_once(&acked).await;
    db.kv_within_quota(1 << 20, &acked).await;
    db.close().await;
    let totals = api.usage(tenant, &format!("/v1/tenants/{TENANT}/usage")).await.totals;
    assert_eq!(totals.get("pacing-check").copied().unwrap_or(0), acked.calls.len() as u128, "{totals:?}");
    assert_eq!(totals.get("campaigns-monitored").copied().unwrap_or(0), acked.partner_keys.len() as u128);
    eprintln!(
        "disk full: {} calls and {} partner events answered 200, {events} events checked",
        acked.calls.len(),
        acked.partner_keys.len()
    );
    // A partner usage post whose ledger write fails is a 503 too (the writer's failure
    // keeps its kind; it was a 500 before).
    wrong.extend(acked.forbidden.iter().cloned());
    assert!(
        wrong.is_empty(),
        "answers on a full disk that are not 503 storage-unavailable:\n{}\nthe server's errors:\n{}",
        wrong.join("\n"),
        server.error_lines(20)
    );
}
