//! Mutual TLS to a registry: a real docker-registry that demands a client certificate
//! (distribution's `http.tls.clientcas`). Without one, registration fails in Kiosk's
//! words (a TLS handshake failure); with the operator's client certificate and key set
//! over the API it succeeds; the key and the certificate are sealed and never returned;
//! a key that is not the certificate's, or PEM that is not what its field needs, is
//! refused naming the field. The config file's variant (PEM files) pulls too.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use kiosk::artifact::{SizeCaps, fetch_verified};
use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk::trust::TrustStore;
use kiosk::world::HOST_API_VERSION;

use crate::common::api::{TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, MutualTls, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

const OPERATOR: &str = "operator-token-mtls";
const APP: &str = "acme/budget-pacing";

fn quick_transfer() -> TransferSettings {
    TransferSettings { retries: 1, backoff_base_ms: 10, backoff_max_ms: 50, ..TransferSettings::default() }
}

/// Pushes `APP@version`, signed by `secret_key`, through the registry's plain-HTTP
/// sibling (oci-client cannot present a client certificate).
async fn publish(m: &MutualTls, secret_key: &[u8], version: &str) {
    let pusher = Registry::new(
        &RegistrySettings { host: m.push_host.clone(), insecure: true, ..Default::default() },
        quick_transfer(),
    )
    .unwrap();
    let mut manifest = manifest_json("budget-pacing");
    manifest["version"] = version.into();
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let wasm = guest_bytes("budget-pacing");
    let sigs = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, &wasm).unwrap().0];
    push(&pusher, APP, version, &assemble(&m, &wasm, &sigs), |_| {}).await.unwrap();
}

/// Another key pair's private key (PEM): a key that belongs to no certificate here.
fn stranger_key() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

#[tokio::test]
async fn registration_presents_the_operators_client_certificate() {
    let reg = TestRegistry::start(Mode::MutualTls);
    let m = reg.mutual_tls.clone().unwrap();
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    publish(&m, &gpg.export_secret(&key), "1.0.0").await;

    let s = TestServer::fresh(None, &format!("[server]\noperator-token = \"{OPERATOR}\"\n")).await;
    s.create_partner(OPERATOR, "acme").await;
    let cert = String::from_utf8(gpg.export(&key)).unwrap();
    let (st, b) = s
        .call(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(json!({"certificate": cert})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let acme = s.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let path = format!("/v1/registries/{}", reg.host);
    let register = async || {
        let reference = format!("{}/{APP}:1.0.0", reg.host);
        let body = json!({"reference": reference});
        s.call(Some(&acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(body)).await
    };

    // (1) The registry trusted (its CA) but no client certificate: the handshake fails,
    // said in Kiosk's words, and nothing is registered.
    let trusted = json!({"caPem": m.ca_pem, "partners": {"acme": ["acme/"]}});
    let (st, view) = s.call(Some(OPERATOR), Method::PUT, &path, Some(trusted.clone())).await;
    assert_eq!((st, &view["clientCertificateSet"]), (StatusCode::OK, &json!(false)), "{view}");
    let (st, problem) = register().await;
    assert_eq!((st, kind(&problem)), (StatusCode::BAD_GATEWAY, "registry-unavailable"), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("TLS handshake failed"), "{detail}");
    for remote in ["alert", "remote error", "certificate required", "bad certificate"] {
        assert!(!detail.to_lowercase().contains(remote), "no remote text ({remote:?}): {detail}");
    }
    assert!(s.store().versions(APP).await.unwrap().is_empty());

    // (4) Refusals name the field, quote no PEM, and change nothing.
    let before = s.store().table_counts().await.unwrap();
    let with = |certificate: Option<&str>, key: Option<&str>| {
        let mut body = trusted.clone();
        if let Some(c) = certificate {
            body["clientCertificatePem"] = c.into();
        }
        if let Some(k) = key {
            body["clientKeyPem"] = k.into();
        }
        body
    };
    let garbage_certificate = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let other_key = stranger_key();
    let (cert_pem, key_pem) = (m.client_certificate_pem.as_str(), m.client_key_pem.as_str());
    let cases = [
        (with(Some(cert_pem), None), "clientKeyPem", "needs clientKeyPem"),
        (with(None, Some(key_pem)), "clientCertificatePem", "needs clientCertificatePem"),
        (with(Some(cert_pem), Some(&other_key)), "clientKeyPem", "does not belong to the client certificate"),
        (with(Some("not PEM at all"), Some(key_pem)), "clientCertificatePem", "no certificate found"),
        (with(Some(garbage_certificate), Some(key_pem)), "clientCertificatePem", "not a valid X.509 certificate"),
        (with(Some(cert_pem), Some("garbage")), "clientKeyPem", "no private key found"),
        (with(Some(cert_pem), Some(cert_pem)), "clientKeyPem", "other than the private key"),
        (with(Some(key_pem), Some(key_pem)), "clientCertificatePem", "holds a private key"),
        (with(Some(&cert_pem.repeat(150)), Some(key_pem)), "clientCertificatePem", "at most 65536 bytes"),
    ];
    for (body, field, words) in cases {
        let (st, problem) = s.call(Some(OPERATOR), Method::PUT, &path, Some(body)).await;
        assert_eq!((st, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid-registry"), "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{words:?} in {detail}");
        for pem in [cert_pem, key_pem, other_key.as_str()] {
            assert!(!detail.contains(pem.lines().nth(1).unwrap()), "quotes no PEM: {detail}");
        }
        assert_eq!(s.store().table_counts().await.unwrap(), before, "nothing written");
    }

    // (2) The operator sets the client certificate and its key: registration succeeds.
    let (st, view) = s.call(Some(OPERATOR), Method::PUT, &path, Some(with(Some(cert_pem), Some(key_pem)))).await;
    assert_eq!(st, StatusCode::OK, "{view}");
    assert_eq!((&view["clientCertificateSet"], &view["credentialsSet"]), (&json!(true), &json!(false)), "{view}");
    let (st, registered) = register().await;
    assert_eq!(st, StatusCode::CREATED, "{registered}");
    assert_eq!(registered["signer"], key, "{registered}");

    // (3) Never returned, and sealed at rest.
    let reply = s.send(Some(OPERATOR), Method::GET, "/v1/registries", None).await;
    let key_body = key_pem.lines().nth(1).unwrap();
    let cert_body = cert_pem.lines().nth(1).unwrap();
    for text in [key_body, cert_body, "PRIVATE KEY", "BEGIN CERTIFICATE-----\n"] {
        assert!(!reply.text.contains(text), "{text:?} is not in {}", reply.text);
    }
    let listed: Value = reply.json();
    let item = listed["items"].as_array().unwrap().iter().find(|r| r["host"] == reg.host.as_str()).unwrap();
    assert_eq!((&item["clientCertificateSet"], &item["caPemSet"]), (&json!(true), &json!(true)), "{item}");
    for row in s.store().registries().await.unwrap() {
        let sealed = row.secret.unwrap_or_default();
        assert!(!sealed.windows(key_body.len()).any(|w| w == key_body.as_bytes()), "the key is sealed");
    }
    assert!(s.audit_has(OPERATOR, "registry.put", &reg.host).await);

    // Set without them again: the client certificate is gone.
    let (st, view) = s.call(Some(OPERATOR), Method::PUT, &path, Some(trusted)).await;
    assert_eq!((st, &view["clientCertificateSet"]), (StatusCode::OK, &json!(false)), "{view}");
}

/// The config file's variant: `client-certificate` and `client-key` as PEM files.
#[tokio::test]
async fn config_file_client_certificate_files_pull_and_bad_files_name_the_setting() {
    let reg = TestRegistry::start(Mode::MutualTls);
    let m = reg.mutual_tls.clone().unwrap();
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    publish(&m, &gpg.export_secret(&key), "1.0.0").await;
    let mut trust = TrustStore::default();
    trust.add("acme", &gpg.export(&key)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, client_key) = (file("client.pem", &m.client_certificate_pem), file("client.key", &m.client_key_pem));
    let config = |entry: String| {
        let path = file("kiosk.toml", &format!("[[registries]]\n{entry}"));
        kiosk::config::OperatorConfig::load(&path)
    };
    let entry = format!(
        "host = \"{}\"\nca-bundle = \"{}\"\nclient-certificate = \"{}\"\nclient-key = \"{}\"\n",
        reg.host,
        reg.ca_bundle.as_ref().unwrap().display(),
        cert.display(),
        client_key.display()
    );
    let settings = config(entry).unwrap().configured_registry(&reg.host).cloned().unwrap();
    let pull = async |settings: &RegistrySettings| {
        let registry = Registry::new(settings, quick_transfer()).unwrap();
        fetch_verified(&registry.repository(APP), APP, "1.0.0", &trust, &SizeCaps::default(), &HOST_API_VERSION, None)
            .await
    };
    let artifact = pull(&settings).await.unwrap();
    assert_eq!(artifact.signers.component.fingerprint, key);
    let without = RegistrySettings { client_certificate: None, client_key: None, ..settings.clone() };
    let err = pull(&without).await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");

    // A file that cannot be read, or a key that is not the certificate's: the registry
    // and the setting are named.
    let missing = RegistrySettings { client_key: Some(dir.path().join("absent.key")), ..settings.clone() };
    let err = Registry::new(&missing, quick_transfer()).unwrap_err().to_string();
    assert!(err.contains(&reg.host) && err.contains("cannot read client-key"), "{err}");
    let mismatched = RegistrySettings { client_key: Some(file("other.key", &stranger_key())), ..settings.clone() };
    let err = Registry::new(&mismatched, quick_transfer()).unwrap_err().to_string();
    assert!(err.contains(&reg.host) && err.contains("client-key: ") && err.contains("does not belong"), "{err}");
    let swapped = RegistrySettings { client_certificate: Some(client_key.clone()), ..settings.clone() };
    let err = Registry::new(&swapped, quick_transfer()).unwrap_err().to_string();
    assert!(err.contains("client-certificate: ") && err.contains("holds a private key"), "{err}");
    // One without the other is refused when the config is read.
    let err = config(format!("host = \"{}\"\nclient-certificate = \"{}\"\n", reg.host, cert.display())).unwrap_err();
    assert!(format!("{err:#}").contains("client-certificate needs client-key"), "{err:#}");
}
