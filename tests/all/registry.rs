//! Distribution against a real registry (Debian's docker-registry): every auth and
//! transport mode, ORAS interop, each rejection with its own message and nothing cached,
//! and faults (down, 500 then 200, stall) within bounded time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiosk::artifact::{ArtifactError, SizeCaps, fetch_verified};
use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk::trust::TrustStore;
use kiosk::world::HOST_API_VERSION;

use crate::common;
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, PASSWORD, TestRegistry, USER, flaky_front, free_port, stalling_front};
use crate::common::{guest_bytes, guest_path, manifest_path};

const APP: &str = "acme/budget-pacing";

/// A change a hostile registry makes to an OCI manifest.
type ManifestEdit = Box<dyn Fn(&mut serde_json::Value)>;

/// A rejection case: repository, signature layers, manifest edit, expected message.
type Case = (&'static str, Vec<Vec<u8>>, Option<ManifestEdit>, &'static str);

struct Partner {
    gpg: Gpg,
    key: String,
    secret: Vec<u8>,
    cert: Vec<u8>,
}

fn partner(uid: &str) -> Partner {
    let gpg = Gpg::new();
    let key = gpg.generate(uid, "ed25519", "sign", "1y", None);
    let (secret, cert) = (gpg.export_secret(&key), gpg.export(&key));
    Partner { gpg, key, secret, cert }
}

fn trust(p: &Partner) -> TrustStore {
    let mut t = TrustStore::default();
    t.add("acme", &p.cert).unwrap();
    t
}

fn quick_transfer() -> TransferSettings {
    TransferSettings {
        connect_timeout_ms: 1_000,
        read_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        retries: 2,
        backoff_base_ms: 20,
        backoff_max_ms: 100,
    }
}

fn settings(host: &str) -> RegistrySettings {
    RegistrySettings { host: host.to_string(), insecure: true, ..RegistrySettings::default() }
}

fn manifest_bytes() -> Vec<u8> {
    std::fs::read(manifest_path("budget-pacing")).unwrap()
}

async fn publish_signed(registry: &Registry, repo: &str, tag: &str, p: &Partner) {
    let (m, w) = (manifest_bytes(), guest_bytes("budget-pacing"));
    let sigs = vec![sign_detached(&p.secret, &m).unwrap().0, sign_detached(&p.secret, &w).unwrap().0];
    push(registry, repo, tag, &assemble(&m, &w, &sigs), |_| {}).await.unwrap();
}

#[tokio::test]
async fn publish_and_pull_over_plain_http_basic_auth_and_tls() {
    let p = partner("Acme <release@acme.example>");
    let trust = trust(&p);

    // Plain HTTP, for a registry the operator marks insecure.
    let plain = TestRegistry::start(Mode::Plain);
    let registry = Registry::new(&settings(&plain.host), quick_transfer()).unwrap();
    publish_signed(&registry, APP, "1.4.34", &p).await;
    let a =
        fetch_verified(&registry.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap();
    assert_eq!((a.manifest.app.as_str(), a.signers.component.fingerprint.as_str()), (APP, p.key.as_str()));
    // Not marked insecure: Kiosk speaks HTTPS and the plain registry cannot answer it.
    let strict =
        Registry::new(&RegistrySettings { host: plain.host.clone(), ..Default::default() }, quick_transfer()).unwrap();
    let err =
        fetch_verified(&strict.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap_err();
    assert!(err.to_string().contains(&plain.host), "{err}");
    // The error points at the fix, and the handshake is not retried (it cannot heal).
    assert!(
        err.to_string().contains("answered in plain HTTP — if this registry is plain HTTP, mark it insecure"),
        "{err}"
    );
    match &err {
        kiosk::artifact::ArtifactError::Remote(remote) => assert_eq!(remote.attempts, 1, "not retried: {err}"),
        other => panic!("a registry failure, not {other}"),
    }

    // Basic auth (htpasswd): anonymous is refused, credentials work.
    let basic = TestRegistry::start(Mode::Basic);
    let with_creds =
        RegistrySettings { username: Some(USER.into()), password: Some(PASSWORD.into()), ..settings(&basic.host) };
    let registry = Registry::new(&with_creds, quick_transfer()).unwrap();
    publish_signed(&registry, APP, "1.4.34", &p).await;
    fetch_verified(&registry.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
        .await
        .unwrap();
    let anonymous = Registry::new(&settings(&basic.host), quick_transfer()).unwrap();
    let err = fetch_verified(
        &anonymous.repository(APP),
        APP,
        "1.4.34",
        &trust,
        &SizeCaps::default(),
        &HOST_API_VERSION,
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.to_lowercase().contains("not authorized"), "{err}");

    // TLS with the operator's CA bundle; without it the certificate is not trusted.
    let tls = TestRegistry::start(Mode::Tls);
    let with_ca = RegistrySettings { host: tls.host.clone(), ca_bundle: tls.ca_bundle.clone(), ..Default::default() };
    let registry = Registry::new(&with_ca, quick_transfer()).unwrap();
    publish_signed(&registry, APP, "1.4.34", &p).await;
    fetch_verified(&registry.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
        .await
        .unwrap();
    let no_ca =
        Registry::new(&RegistrySettings { host: tls.host.clone(), ..Default::default() }, quick_transfer()).unwrap();
    let err =
        fetch_verified(&no_ca.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap_err()
            .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn bearer_token_flow_through_www_authenticate() {
    let p = partner("Acme <release@acme.example>");
    let trust = trust(&p);
    let (realm, cert_pem) = common::registry::token_server();
    // The token service is another port: the operator lists it (it receives the credentials).
    let token_host = realm.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let reg = TestRegistry::start(Mode::Token { realm, cert_pem });
    let creds = RegistrySettings {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        token_hosts: vec![token_host],
        ..settings(&reg.host)
    };
    let registry = Registry::new(&creds, quick_transfer()).unwrap();
    publish_signed(&registry, APP, "1.4.34", &p).await;
    let a =
        fetch_verified(&registry.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap();
    assert_eq!(a.manifest.app, APP);
    // Wrong credentials: the token server refuses, and the error says so in Kiosk's words
    // (the token server's body, "bad credentials", stays out of it).
    let wrong = RegistrySettings { password: Some("wrong".into()), ..creds.clone() };
    let registry = Registry::new(&wrong, quick_transfer()).unwrap();
    let err =
        fetch_verified(&registry.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("authenticate") && err.contains("token service answered HTTP 401"), "{err}");
    assert!(!err.contains("bad credentials"), "{err}");
    // The same registry without its token host listed: the realm is refused before it is fetched.
    let unlisted = Registry::new(&RegistrySettings { token_hosts: vec![], ..creds }, quick_transfer()).unwrap();
    let err =
        fetch_verified(&unlisted.repository(APP), APP, "1.4.34", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("token realm") && err.contains("token-hosts"), "{err}");
}

/// Runs `kiosk <args>` with an operator config trusting `certs` and a data dir.
fn kiosk(args: &[&str], config: &Path) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_kiosk")).args(args).arg("--operator-config").arg(config).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn operator_config(dir: &Path, host: &str, partners: &[(&str, &Path)], caps: &str) -> PathBuf {
    let mut text = format!(
        "data-dir = \"{}\"\n[artifacts]\n{caps}\n[transfer]\nretries = 1\nbackoff-base-ms = 10\n[[registries]]\nhost = \"{host}\"\ninsecure = true\n",
        dir.join("data").display()
    );
    for (name, cert) in partners {
        text.push_str(&format!("[[partners]]\nname = \"{name}\"\ncertificates = [\"{}\"]\n", cert.display()));
    }
    let path = dir.join(format!("kiosk-{}.toml", partners.len() + caps.len()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Versions of the app that `kiosk pull` registered in the operator's store (the one
/// pin/blob system: the versions table pins a tag to its digest and keeps the component).
async fn registered(dir: &Path) -> usize {
    let url = format!("sqlite://{}", dir.join("data/kiosk.db").display());
    let store = kiosk::store::Store::connect(&url).await.unwrap();
    store.versions(APP).await.unwrap().len()
}

#[tokio::test]
async fn every_rejection_has_its_own_message_and_leaves_nothing_registered() {
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(Mode::Plain);
    let registry = Registry::new(&settings(&reg.host), quick_transfer()).unwrap();
    let acme = partner("Acme <release@acme.example>");
    let globex = partner("Globex <release@globex.example>");
    let stranger = partner("Stranger <x@stranger.example>");
    let old = Gpg::new();
    let expired = old.generate("Acme Old <old@acme.example>", "ed25519", "sign", "1d", Some("20200101T000000"));
    let (acme_cert, globex_cert, expired_cert) =
        (work.path().join("acme.asc"), work.path().join("globex.asc"), work.path().join("old.asc"));
    std::fs::write(&acme_cert, &acme.cert).unwrap();
    std::fs::write(&globex_cert, &globex.cert).unwrap();
    std::fs::write(&expired_cert, old.export(&expired)).unwrap();
    let partners = [("acme", acme_cert.as_path()), ("acme", expired_cert.as_path()), ("globex", globex_cert.as_path())];
    let config = operator_config(work.path(), &reg.host, &partners, "");
    let (m, w) = (manifest_bytes(), guest_bytes("budget-pacing"));
    let signed_by =
        |p: &Partner, m: &[u8], w: &[u8]| vec![p.gpg.sign_bytes(&p.key, m, false), p.gpg.sign_bytes(&p.key, w, false)];
    let file = work.path().join("to-sign");
    let old_sig = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        old.sign(&expired, &file, false, Some("20200101T120000"))
    };

    let mut cases: Vec<Case> = vec![
        ("unsigned", vec![], None, "carries no signature layer"),
        ("unregistered", signed_by(&stranger, &m, &w), None, "which is not registered for any partner"),
        ("other-partner", signed_by(&globex, &m, &w), None, r#"registered for partner "globex""#),
        ("expired", vec![old_sig(&m), old_sig(&w)], None, "which has expired"),
        ("other-bytes", signed_by(&acme, &m, b"not the component"), None, "is over other bytes"),
    ];
    cases.push((
        "undeclared-media-type",
        signed_by(&acme, &m, &w),
        Some(Box::new(|v| v["layers"][1]["mediaType"] = "application/octet-stream".into())),
        r#"undeclared media type "application/octet-stream""#,
    ));
    for (repo, sigs, edit, expected) in &cases {
        let mut blobs = assemble(&m, &w, sigs);
        if let Some(edit) = edit {
            let mut v: serde_json::Value = serde_json::from_slice(&blobs.manifest).unwrap();
            edit(&mut v);
            blobs.manifest = serde_json::to_vec(&v).unwrap();
            blobs.manifest_digest = kiosk::digest::Digest::of(&blobs.manifest);
        }
        let repository = format!("acme/{repo}");
        push(&registry, &repository, "1.4.34", &blobs, |_| {}).await.unwrap();
        let reference = format!("{}/{repository}:1.4.34", reg.host);
        let (ok, _, stderr) = kiosk(&["pull", &reference, "--app", APP], &config);
        assert!(!ok && stderr.contains(expected), "{repo}: expected {expected:?} in {stderr}");
        assert_eq!(registered(work.path()).await, 0, "{repo}: nothing registered");
    }

    // Version differs from the tag.
    let sigs = signed_by(&acme, &m, &w);
    push(&registry, APP, "1.4.35", &assemble(&m, &w, &sigs), |_| {}).await.unwrap();
    let (ok, _, stderr) = kiosk(&["pull", &format!("{}/{APP}:1.4.35", reg.host)], &config);
    assert!(!ok && stderr.contains(r#"manifest version 1.4.34 does not equal the tag "1.4.35""#), "{stderr}");

    // Over the caps (from the descriptors, before download).
    push(&registry, APP, "1.4.34", &assemble(&m, &w, &sigs), |_| {}).await.unwrap();
    let reference = format!("{}/{APP}:1.4.34", reg.host);
    let small = operator_config(work.path(), &reg.host, &partners, "app-manifest-bytes = 100");
    let (ok, _, stderr) = kiosk(&["pull", &reference], &small);
    assert!(!ok && stderr.contains("app manifest (config blob) is") && stderr.contains("cap of 100 bytes"), "{stderr}");
    let small = operator_config(work.path(), &reg.host, &partners, "component-bytes = 1000");
    let (ok, _, stderr) = kiosk(&["pull", &reference], &small);
    assert!(!ok && stderr.contains("component (wasm layer) is") && stderr.contains("cap of 1000 bytes"), "{stderr}");
    assert_eq!(registered(work.path()).await, 0);

    // Tampered in the registry's storage: the component blob's bytes changed on disk.
    // (Registry storage is content-addressed across repositories: use a component of its own.)
    let tampered_repo = "acme/tampered";
    let w2 = guest_bytes("negative-keywords");
    let sigs2 = signed_by(&acme, &m, &w2);
    push(&registry, tampered_repo, "1.4.34", &assemble(&m, &w2, &sigs2), |_| {}).await.unwrap();
    let blob = reg.blob_file(kiosk::digest::Digest::of(&w2).as_str());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (ok, _, stderr) = kiosk(&["pull", &format!("{}/{tampered_repo}:1.4.34", reg.host), "--app", APP], &config);
    assert!(!ok && stderr.contains("does not match its digest"), "{stderr}");
    assert_eq!(registered(work.path()).await, 0);

    // A good pull registers (and so pins) the version; then the tag moves to other bytes and is refused.
    let (ok, stdout, stderr) = kiosk(&["pull", &reference], &config);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pinned"), "{stdout}");
    assert_eq!(registered(work.path()).await, 1);
    let mut other = m.clone();
    other.extend_from_slice(b"\n");
    let sigs = signed_by(&acme, &other, &w);
    let moved = assemble(&other, &w, &sigs);
    push(&registry, APP, "1.4.34", &moved, |_| {}).await.unwrap();
    let (ok, _, stderr) = kiosk(&["pull", &reference], &config);
    assert!(
        !ok && stderr.contains("is pinned to sha256:") && stderr.contains(moved.manifest_digest.as_str()),
        "{stderr}"
    );
}

#[tokio::test]
async fn faults_end_in_a_clear_error_or_success_within_bounded_time() {
    let p = partner("Acme <release@acme.example>");
    let trust = trust(&p);
    let reg = TestRegistry::start(Mode::Plain);
    let direct = Registry::new(&settings(&reg.host), quick_transfer()).unwrap();
    publish_signed(&direct, APP, "1.4.34", &p).await;
    let pull = |host: String| {
        let trust = trust.clone();
        async move {
            let registry = Registry::new(&settings(&host), quick_transfer()).unwrap();
            let started = Instant::now();
            let result = fetch_verified(
                &registry.repository(APP),
                APP,
                "1.4.34",
                &trust,
                &SizeCaps::default(),
                &HOST_API_VERSION,
                None,
            )
            .await;
            (result, started.elapsed())
        }
    };

    // Down: nothing listens.
    let (result, elapsed) = pull(format!("127.0.0.1:{}", free_port())).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("after 3 attempts") && err.to_lowercase().contains("connect"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // 500 twice, then the registry answers: retried to success.
    let (result, elapsed) = pull(flaky_front(reg.host.clone(), 2)).await;
    assert_eq!(result.unwrap().manifest.app, APP);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Stalls: accepts and never answers.
    let (result, elapsed) = pull(stalling_front()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ArtifactError::Remote(_)), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert!(elapsed < Duration::from_secs(8), "bounded by 3 × 2 s request timeout plus backoff: {elapsed:?}");
}

#[test]
fn oras_sdk_interop_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(Mode::Plain);
    let p = partner("Acme <release@acme.example>");
    let cert = work.path().join("acme.asc");
    std::fs::write(&cert, &p.cert).unwrap();
    let config = operator_config(work.path(), &reg.host, &[("acme", cert.as_path())], "");
    let interop = common::root().join("tests/interop");

    // A partner pushes with ORAS after `gpg --detach-sign --armor`; Kiosk verifies it.
    let files = work.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::copy(manifest_path("budget-pacing"), files.join("manifest.json")).unwrap();
    std::fs::copy(guest_path("budget-pacing"), files.join("app.wasm")).unwrap();
    for f in ["manifest.json", "app.wasm"] {
        let sig = p.gpg.sign(&p.key, &files.join(f), false, None);
        std::fs::write(files.join(format!("{f}.asc")), sig).unwrap();
    }
    let out = Command::new("python3")
        .arg(interop.join("oras_push.py"))
        .args([&reg.host, &format!("{APP}:1.4.34")])
        .current_dir(&files)
        .output()
        .expect("python3 with the ORAS SDK (pip install oras)");
    assert!(out.status.success(), "oras push: {}", String::from_utf8_lossy(&out.stderr));
    let (ok, stdout, stderr) = kiosk(&["verify", &format!("{}/{APP}:1.4.34", reg.host), "--json"], &config);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((doc["app"].as_str(), doc["manifestSigner"].as_str()), (Some(APP), Some(p.key.as_str())));

    // Kiosk publishes; ORAS reads it back with the right media types and artifact type.
    let key = work.path().join("acme.sec");
    std::fs::write(&key, &p.secret).unwrap();
    let target = format!("{}/acme/published:1.4.34", reg.host);
    let manifest = manifest_path("budget-pacing");
    let wasm = guest_path("budget-pacing");
    let (ok, stdout, stderr) = kiosk(
        &["publish", manifest.to_str().unwrap(), wasm.to_str().unwrap(), &target, "--key", key.to_str().unwrap()],
        &config,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("signed by  {}", p.key)), "{stdout}");
    let pulled = work.path().join("pulled");
    let out = Command::new("python3")
        .arg(interop.join("oras_inspect.py"))
        .args([&reg.host, "acme/published:1.4.34", pulled.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "oras pull: {}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &doc["manifest"];
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.alli-marketplace.app+type");
    assert_eq!(m["config"]["mediaType"], "application/vnd.alli-marketplace.manifest.v1+json");
    let types: Vec<_> = m["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(types, ["application/wasm", "application/pgp-signature", "application/pgp-signature"]);
    assert_eq!(doc["files"], serde_json::json!(["app.wasm", "app.wasm.asc", "manifest.json.asc"]));
    assert_eq!(std::fs::read(pulled.join("app.wasm")).unwrap(), std::fs::read(&wasm).unwrap());
}
