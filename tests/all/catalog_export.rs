//! `kiosk catalog export DIR`: the real binary against a real server's catalog (apps
//! registered through the demo seed, one partner disabled), checked with stock tools:
//! `gpg --verify SHA256SUMS.asc SHA256SUMS` in a GnuPG home holding only the operator's
//! public key, and `sha256sum -c SHA256SUMS`. Every file is the API's document for the
//! same item; the same catalog gives the same bytes; a tampered file fails the check; a
//! key that cannot sign, a tenant's token or a non-empty DIR are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use kiosk::publish::{assemble_with_icon, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk_distribution::icon::IconFormat;

use crate::common::api::TestServer;
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, guest_path, manifest_json};

const OPERATOR: &str = "op-catalog-export-token-0123456789";

/// A 16 × 16 grey PNG (8-bit greyscale, one zlib-compressed IDAT).
const ICON: [u8; 72] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 16, 0, 0, 0, 16, 8, 0, 0, 0, 0, 58, 152,
    160, 189, 0, 0, 0, 15, 73, 68, 65, 84, 120, 218, 99, 104, 64, 3, 12, 35, 91, 0, 0, 5, 12, 128, 1, 227, 51, 89, 138,
    0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

/// Registers acme/budget-pacing@`version` with [`ICON`] from a real registry, signed by
/// a key of `gpg` the operator adds to acme's certificates.
async fn register_with_icon(s: &TestServer, gpg: &Gpg, registry: &TestRegistry, version: &str) {
    let fpr = gpg.generate("Acme Release <release@acme.example>", "ed25519", "sign", "1y", None);
    let certificate = String::from_utf8(gpg.export(&fpr)).unwrap();
    let body = serde_json::json!({"certificate": certificate});
    let (st, b) = s.call(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let path = format!("/v1/registries/{}", registry.host);
    let body = serde_json::json!({"insecure": true, "partners": {"acme": ["acme/"]}});
    assert_eq!(s.call(Some(OPERATOR), Method::PUT, &path, Some(body)).await.0, StatusCode::OK);
    let mut manifest = manifest_json("budget-pacing");
    manifest["version"] = version.into();
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let wasm = guest_bytes("budget-pacing");
    let secret = gpg.export_secret(&fpr);
    let sigs: Vec<Vec<u8>> = [&m[..], &wasm, &ICON].iter().map(|b| sign_detached(&secret, b).unwrap().0).collect();
    let settings = RegistrySettings { host: registry.host.clone(), insecure: true, ..Default::default() };
    let client = Registry::new(&settings, TransferSettings::default()).unwrap();
    let blobs = assemble_with_icon(&m, &wasm, Some((IconFormat::Png, &ICON)), &sigs);
    push(&client, "acme/budget-pacing", version, &blobs, |_| {}).await.unwrap();
    let acme = s.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let reference = serde_json::json!({"reference": format!("{}/acme/budget-pacing:{version}", registry.host)});
    let (st, b) =
        s.call(Some(&acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(reference)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
}

/// A server with acme/budget-pacing 1.0.0 and 1.1.0 (category analytics) and
/// globex/pacing-copy 2.0.0 (category search), globex disabled.
async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_path("budget-pacing");
    let builds = [("acme/budget-pacing", "1.0.0", "analytics"), ("acme/budget-pacing", "1.1.0", "analytics")];
    let mut demo = Vec::new();
    for (app, version, category) in builds.into_iter().chain([("globex/pacing-copy", "2.0.0", "search")]) {
        let mut manifest = manifest_json("budget-pacing");
        manifest["app"] = app.into();
        manifest["version"] = version.into();
        manifest["categories"] = serde_json::json!([category]);
        let path = dir.path().join(format!("{}-{version}.json", app.replace('/', "-")));
        std::fs::write(&path, manifest.to_string()).unwrap();
        demo.push(format!("{}={}", path.display(), wasm.display()));
    }
    let toml = format!("[server]\noperator-token = \"{OPERATOR}\"\n");
    let s = TestServer::start_with(dir.path(), None, &toml, demo).await.keeping(dir);
    let (st, b) = s.call(Some(OPERATOR), Method::POST, "/v1/partners/globex/disable", None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    s
}

/// `kiosk catalog export DIR --key KEY EXTRA…` with `token`, off the runtime's threads.
async fn export(s: &TestServer, dir: &Path, key: &Path, extra: &[&str], token: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiosk"));
    command
        .args(["catalog", "export"])
        .arg(dir)
        .arg("--key")
        .arg(key)
        .args(extra)
        .env("KIOSK_URL", &s.base)
        .env("KIOSK_TOKEN", token)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `program args` in `dir` (stock tools).
fn run(program: &str, args: &[&str], dir: &Path, envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap_or_else(|e| panic!("{program} must be installed: {e}"))
}

/// A GnuPG home holding only `public` (the operator's certificate).
struct Verifier {
    home: tempfile::TempDir,
}

impl Verifier {
    fn new(public: &[u8]) -> Self {
        let home = tempfile::Builder::new().prefix("kv").tempdir_in("/tmp").unwrap();
        let file = home.path().join("operator.asc");
        std::fs::write(&file, public).unwrap();
        let out =
            run("gpg", &["--batch", "--import", file.to_str().unwrap()], home.path(), &[("GNUPGHOME", home.path())]);
        assert!(out.status.success(), "gpg --import: {}", text(&out));
        Self { home }
    }

    /// `gpg --verify SHA256SUMS.asc SHA256SUMS` in `dir`.
    fn verify(&self, dir: &Path) -> Output {
        run("gpg", &["--batch", "--verify", "SHA256SUMS.asc", "SHA256SUMS"], dir, &[("GNUPGHOME", self.home.path())])
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").arg("--homedir").arg(self.home.path()).args(["--kill", "gpg-agent"]).output();
    }
}

/// Every file under `dir`, relative, `/`-separated, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_is_the_public_catalog_signed_and_checked_with_stock_tools() {
    let s = server().await;
    let registry = TestRegistry::start(Mode::Plain);
    let gpg = Gpg::new();
    register_with_icon(&s, &gpg, &registry, "1.2.0").await;
    let work = tempfile::tempdir().unwrap();
    let fpr = gpg.generate("Kiosk Operator <catalog@kiosk.example>", "ed25519", "sign", "1y", None);
    let key = work.path().join("operator.sec.asc");
    std::fs::write(&key, gpg.export_secret(&fpr)).unwrap();
    let mirror = work.path().join("mirror");

    let out = export(&s, &mirror, &key, &[], OPERATOR).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("signed by {fpr}")), "{}", text(&out));

    // The layout: only the public catalog (globex is disabled: its app and its category
    // are absent), and SHA256SUMS lists every other file, sorted.
    let app = "catalog/apps/acme/budget-pacing";
    let mut expected = vec![
        "SHA256SUMS".to_string(),
        "SHA256SUMS.asc".to_string(),
        "catalog/apps.json".to_string(),
        format!("{app}.json"),
        format!("{app}/versions.json"),
        format!("{app}/versions/1.0.0.json"),
        format!("{app}/versions/1.1.0.json"),
        format!("{app}/versions/1.2.0.icon.png"),
        format!("{app}/versions/1.2.0.json"),
        "catalog/categories.json".to_string(),
        "catalog/categories/analytics.json".to_string(),
    ];
    expected.sort();
    assert_eq!(files(&mirror), expected);
    let sums = std::fs::read_to_string(mirror.join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums.lines().map(|l| l.split_once("  ").unwrap().1).collect();
    let others: Vec<&str> = expected.iter().map(String::as_str).filter(|f| !f.starts_with("SHA256SUMS")).collect();
    assert_eq!(listed, others, "{sums}");

    // Each file is the API's document for the same item (lists: the items).
    let api = async |path: &str| {
        let (st, body) = s.call(Some(OPERATOR), Method::GET, path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
        body
    };
    assert_eq!(read_json(mirror.join("catalog/apps.json")), api("/v1/catalog/apps?limit=1000").await["items"]);
    assert_eq!(read_json(mirror.join("catalog/categories.json")), api("/v1/catalog/categories").await["items"]);
    assert_eq!(
        read_json(mirror.join("catalog/categories/analytics.json")),
        api("/v1/catalog/apps?category=analytics").await["items"]
    );
    assert_eq!(read_json(mirror.join(format!("{app}.json"))), api("/v1/catalog/apps/acme/budget-pacing").await);
    let versions = api("/v1/catalog/apps/acme/budget-pacing/versions").await;
    assert_eq!(read_json(mirror.join(format!("{app}/versions.json"))), versions["items"]);
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        let document = api(&format!("/v1/catalog/apps/acme/budget-pacing/versions/{version}")).await;
        assert_eq!(document["manifest"]["version"], version);
        assert!(document["skus"].is_array() && document["configSchema"].is_object(), "{document}");
        assert_eq!(read_json(mirror.join(format!("{app}/versions/{version}.json"))), document);
    }
    // The icon is the one the partner signed, as the API serves it.
    let icon = s
        .request(Some(OPERATOR), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.2.0/icon")
        .send()
        .await
        .unwrap();
    assert_eq!(icon.headers()["content-type"], "image/png");
    let served = icon.bytes().await.unwrap();
    assert_eq!(std::fs::read(mirror.join(format!("{app}/versions/1.2.0.icon.png"))).unwrap(), served.to_vec());
    assert_eq!(served.as_ref(), &ICON[..]);
    let all = std::fs::read_to_string(mirror.join("catalog/apps.json")).unwrap();
    assert!(!all.contains("globex") && all.ends_with("}\n]\n"), "{all}");

    // Stock tools verify it.
    let verifier = Verifier::new(&gpg.export(&fpr));
    let out = verifier.verify(&mirror);
    assert!(out.status.success(), "gpg --verify: {}", text(&out));
    assert!(text(&out).contains("Good signature"), "{}", text(&out));
    let out = run("sha256sum", &["-c", "SHA256SUMS"], &mirror, &[]);
    assert!(out.status.success(), "sha256sum -c: {}", text(&out));

    // The same catalog gives the same bytes (the signature aside: it carries its time).
    let again = work.path().join("again");
    let out = export(&s, &again, &key, &[], OPERATOR).await;
    assert!(out.status.success(), "{}", text(&out));
    for file in expected.iter().filter(|f| f.as_str() != "SHA256SUMS.asc") {
        assert_eq!(std::fs::read(mirror.join(file)).unwrap(), std::fs::read(again.join(file)).unwrap(), "{file}");
    }

    // A non-empty DIR is refused without --force (and left as it was); --force replaces it.
    let before = std::fs::read(mirror.join("SHA256SUMS.asc")).unwrap();
    let out = export(&s, &mirror, &key, &[], OPERATOR).await;
    assert!(!out.status.success() && text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(std::fs::read(mirror.join("SHA256SUMS.asc")).unwrap(), before);
    std::fs::write(mirror.join("stale.txt"), "from an older export").unwrap();
    let out = export(&s, &mirror, &key, &["--force"], OPERATOR).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(&mirror), expected, "replaced whole");
    assert!(verifier.verify(&mirror).status.success());
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temporary directories left: {leftovers:?}");

    // Tampering: a changed file fails sha256sum -c; a changed SHA256SUMS fails gpg.
    let apps = mirror.join("catalog/apps.json");
    let mut bytes = std::fs::read(&apps).unwrap();
    bytes.extend_from_slice(b" ");
    std::fs::write(&apps, bytes).unwrap();
    let out = run("sha256sum", &["-c", "SHA256SUMS"], &mirror, &[]);
    assert!(!out.status.success() && text(&out).contains("catalog/apps.json: FAILED"), "{}", text(&out));
    std::fs::write(mirror.join("SHA256SUMS"), sums.replace(&sums[..8], "00000000")).unwrap();
    assert!(!verifier.verify(&mirror).status.success(), "a changed SHA256SUMS fails the signature");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_cannot_sign_and_tenant_tokens_are_refused_before_anything_is_written() {
    let s = server().await;
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("mirror");
    let gpg = Gpg::new();
    let fpr = gpg.generate("Kiosk Operator <catalog@kiosk.example>", "ed25519", "sign", "1y", None);
    let write = |name: &str, bytes: &[u8]| {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    // A passphrase-protected key (exported as gpg keeps it).
    let home = tempfile::Builder::new().prefix("kp").tempdir_in("/tmp").unwrap();
    let protected = ["--batch", "--pinentry-mode", "loopback", "--passphrase", "correct horse"];
    let gpg_protected = |args: &[&str]| {
        let out = run("gpg", &[&protected[..], args].concat(), home.path(), &[("GNUPGHOME", home.path())]);
        assert!(out.status.success(), "gpg {args:?}: {}", text(&out));
        out.stdout
    };
    gpg_protected(&["--quick-gen-key", "Locked <locked@kiosk.example>", "ed25519", "sign", "1y"]);
    let encrypted =
        write("encrypted.asc", &gpg_protected(&["--armor", "--export-secret-keys", "locked@kiosk.example"]));
    let _ = Command::new("gpgconf").arg("--homedir").arg(home.path()).args(["--kill", "gpg-agent"]).output();

    let public = write("public.asc", &gpg.export(&fpr));
    let garbage = write("garbage.asc", b"not a key");
    let revoked_gpg = Gpg::new();
    let revoked_fpr = revoked_gpg.generate("Old <old@kiosk.example>", "ed25519", "sign", "1y", None);
    revoked_gpg.revoke(&revoked_fpr);
    let revoked = write("revoked.asc", &revoked_gpg.export_secret(&revoked_fpr));
    let cases = [
        (&encrypted, "is encrypted (passphrase-protected)"),
        (&public, "is a public certificate"),
        (&garbage, "not an OpenPGP key"),
        (&revoked, "is revoked"),
    ];
    for (key, words) in cases {
        let out = export(&s, &target, key, &[], OPERATOR).await;
        assert!(!out.status.success() && text(&out).contains(words), "{words:?} in {}", text(&out));
        assert!(!target.exists(), "nothing written");
    }

    // A tenant's catalog adds its private apps: the export takes an operator token.
    let key = write("operator.sec.asc", &gpg.export_secret(&fpr));
    s.create_tenant(OPERATOR, "t1").await;
    let tenant = s.create_token(OPERATOR, "tenant", Some("t1")).await.token;
    let out = export(&s, &target, &key, &[], &tenant).await;
    assert!(!out.status.success() && text(&out).contains("needs an operator token"), "{}", text(&out));
    assert!(!target.exists(), "nothing written");
}
