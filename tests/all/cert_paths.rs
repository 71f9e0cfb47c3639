//! One trust use case under every front end: a certificate added with `kiosk pull --cert`
//! and one added over the API are the same registration (merged copies, one partner per
//! fingerprint), and a revocation given through either quarantines every version the
//! certificate signed — on SQLite and PostgreSQL, with real gpg keys, a real registry
//! and the real `kiosk` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiosk_api::trust::{CertificateView, CertificatesAdded, QuarantinedVersion};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::api::{Page, TestServer};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{fresh_postgres_database, guest_bytes, manifest_json};
use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk::server::serve::ServeOptions;

const OPERATOR: &str = "operator-token-cert-paths";
const APP: &str = "acme/budget-pacing";

/// The operator's config: a data directory, the operator token, the test registry.
fn config(dir: &Path, host: &str) -> PathBuf {
    let path = dir.join("kiosk.toml");
    let text = format!(
        "data-dir = \"{}\"\n[server]\noperator-token = \"{OPERATOR}\"\n[[registries]]\nhost = \"{host}\"\ninsecure = true\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `kiosk pull --cert acme=<cert> <reference>` on the operator's store; its outcome and stderr.
fn pull(config: &Path, database: Option<&str>, cert: (&str, &Path), reference: &str) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiosk"));
    command.args(["pull", reference, "--app", APP, "--cert"]);
    command.arg(format!("{}={}", cert.0, cert.1.display())).arg("--operator-config").arg(config);
    match database {
        Some(url) => command.env("KIOSK_DATABASE_URL", url),
        None => command.env_remove("KIOSK_DATABASE_URL"),
    };
    let out = command.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The server of the operator's `config` (the one `kiosk pull` reads too).
async fn start(config: &Path, database: Option<&str>) -> TestServer {
    let options = ServeOptions {
        config: Some(config.to_path_buf()),
        database: database.map(str::to_string),
        ..Default::default()
    };
    TestServer::serve(options, config.parent().unwrap()).await
}

async fn publish(registry: &Registry, secret_key: &[u8], version: &str) {
    let mut manifest = manifest_json("budget-pacing");
    manifest["version"] = version.into();
    let wasm = guest_bytes("budget-pacing");
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let signatures = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, &wasm).unwrap().0];
    push(registry, APP, version, &assemble(&m, &wasm, &signatures), |_| {}).await.unwrap();
}

async fn quarantined(server: &TestServer) -> Vec<String> {
    let page: Page<QuarantinedVersion> =
        server.call_as(Some(OPERATOR), Method::GET, "/v1/versions/quarantined", None, StatusCode::OK).await;
    page.items.iter().map(|v| format!("{}@{}", v.app, v.version)).collect()
}

#[tokio::test]
async fn a_certificate_from_kiosk_pull_or_the_api_is_revoked_alike_on_sqlite() {
    revoked_alike(None).await;
}

#[tokio::test]
async fn a_certificate_from_kiosk_pull_or_the_api_is_revoked_alike_on_postgresql() {
    revoked_alike(Some(fresh_postgres_database().await)).await;
}

async fn revoked_alike(database: Option<String>) {
    let database = database.as_deref();
    let dir = tempfile::tempdir().unwrap();
    let registry_server = TestRegistry::start(Mode::Plain);
    let host = registry_server.host.clone();
    let config = config(dir.path(), &host);
    let registry = Registry::new(
        &RegistrySettings { host: host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    // Key A is trusted through `kiosk pull --cert`, key B over the API.
    let gpg = Gpg::new();
    let a = gpg.generate("Acme A <a@acme.example>", "ed25519", "sign", "1y", None);
    let b = gpg.generate("Acme B <b@acme.example>", "ed25519", "sign", "1y", None);
    let file = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let (a_cert, a_revocation) = (file("a.asc", gpg.export(&a)), file("a-rev.asc", gpg.revocation_certificate(&a)));
    let (b_cert, b_revocation) = (gpg.export(&b), file("b-rev.asc", gpg.revocation_certificate(&b)));
    publish(&registry, &gpg.export_secret(&a), "1.0.0").await;
    publish(&registry, &gpg.export_secret(&b), "2.0.0").await;

    // Through the CLI: A is registered for acme and 1.0.0 with it.
    let (ok, stderr) = pull(&config, database, ("acme", &a_cert), &format!("{host}/{APP}:1.0.0"));
    assert!(ok, "kiosk pull --cert registers the version: {stderr}");
    // A is acme's now, for the CLI as for the API: another partner cannot claim it.
    let (ok, stderr) = pull(&config, database, ("globex", &a_cert), &format!("{host}/{APP}:1.0.0"));
    assert!(!ok && stderr.contains("registered for another partner"), "{stderr}");

    // Through the API: B is registered for acme and 2.0.0 with it.
    let server = start(&config, database).await;
    let certificate = json!({"certificate": String::from_utf8(b_cert).unwrap()});
    let _: CertificatesAdded = server
        .call_as(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(certificate), StatusCode::CREATED)
        .await;
    let registry_body = json!({"insecure": true, "partners": {"acme": ["acme/"]}});
    let (status, body) =
        server.call(Some(OPERATOR), Method::PUT, &format!("/v1/registries/{host}"), Some(registry_body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let partner = server.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let reference = json!({"reference": format!("{host}/{APP}:2.0.0")});
    let (status, body) = server
        .call(Some(&partner), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(reference))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(quarantined(&server).await.is_empty(), "nothing is quarantined yet");

    // The certificate the CLI added, revoked over the API: 1.0.0 is quarantined.
    let revocation = std::fs::read_to_string(&a_revocation).unwrap();
    let revocation = json!({"certificate": revocation});
    let added: CertificatesAdded = server
        .call_as(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(revocation), StatusCode::OK)
        .await;
    assert_eq!(added.quarantined, [format!("{APP}@1.0.0")], "{added:?}");
    server.started.state.close().await;

    // The certificate the API added, revoked with `kiosk pull --cert`: 2.0.0 is
    // quarantined (the pull itself is then refused: its signer is revoked).
    let (ok, stderr) = pull(&config, database, ("acme", &b_revocation), &format!("{host}/{APP}:2.0.0"));
    assert!(!ok, "a version signed by a revoked certificate is not pulled: {stderr}");
    let server = start(&config, database).await;
    assert_eq!(quarantined(&server).await, [format!("{APP}@1.0.0"), format!("{APP}@2.0.0")]);
    let certificates: Page<CertificateView> =
        server.call_as(Some(OPERATOR), Method::GET, "/v1/partners/acme/certificates", None, StatusCode::OK).await;
    let states: Vec<&str> = certificates.items.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(states, ["revoked", "revoked"], "{certificates:?}");
    server.started.state.close().await;
}
