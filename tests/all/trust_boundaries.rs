//! Trust boundaries toward partners and registries (SPEC §2 step 5, issue 9): the
//! partner API registers only from registries the operator configured, under the
//! repository prefixes assigned to the partner; redirects, token realms and resolved
//! addresses are checked; no remote body reaches an answer; `oci-layout:` is the
//! operator's. Fake registries and a fake internal service run on loopback; every
//! refusal is checked for the internal service's marker and for contact with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiosk::artifact::{ArtifactError, BlobSource, LayoutSource, Part, SizeCaps, fetch_verified};
use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk::trust::TrustStore;
use kiosk::world::HOST_API_VERSION;
use kiosk_api::registries::RegistryView;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::api::{Page, TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

/// What the internal service answers; it must never appear in a Kiosk answer.
const MARKER: &str = "db_password=hunter2";

/// A reply of a fake server.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: body.as_bytes().to_vec(),
    }
}

type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A fake HTTP(S) server on loopback: one request per connection, answered by
/// `handler(path)`. `hits` counts connections (any contact at all).
struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Fake {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn fake(
    ip: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> Fake {
    let handler: Handler = Arc::new(handler);
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let (handler, tls) = (Arc::clone(&handler), tls.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                match tls {
                    Some(config) => {
                        let mut stream = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
                        serve_one(&mut stream, &handler);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => {
                        let mut tcp = tcp;
                        serve_one(&mut tcp, &handler);
                    }
                }
            });
        }
    });
    Fake { addr, hits }
}

fn serve_one(stream: &mut (impl Read + Write), handler: &Handler) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 65536 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let r = handler(&path);
    let mut out = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", r.status, r.body.len());
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&r.body);
    let _ = stream.flush();
}

/// A CA and a TLS server config for 127.0.0.1 it issued: (config, CA PEM).
fn tls_server() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Kiosk Trust-Boundary Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (Arc::new(config), ca.pem())
}

/// A fake registry: `/v2/` answers 200, everything else `other(path)`.
fn registry(tls: Option<Arc<rustls::ServerConfig>>, other: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Fake {
    fake("127.0.0.1", tls, move |path| if path == "/v2/" { reply(200, &[], "{}") } else { other(path) })
}

struct World {
    s: TestServer,
    operator: String,
    acme: String,
    globex: String,
}

impl World {
    /// (status, problem or body, raw text); no answer carries the internal service's
    /// marker, in its headers or its body.
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value, String) {
        let reply = self.s.send(Some(token), method, path, body).await;
        let headers = format!("{:?}", reply.headers);
        let text = &reply.text;
        assert!(!headers.contains(MARKER) && !text.contains(MARKER), "the internal body leaked: {headers} {text}");
        (reply.status, reply.json(), reply.text)
    }

    /// Registers `reference` as acme/budget-pacing (or `app` of `partner`).
    async fn register_as(&self, partner: &str, app: &str, reference: &str) -> (StatusCode, Value) {
        let token = if partner == "acme" { &self.acme } else { &self.globex };
        let (s, v, _) = self
            .call(
                token,
                Method::POST,
                &format!("/v1/partners/{partner}/apps/{app}/versions"),
                Some(json!({"reference": reference})),
            )
            .await;
        (s, v)
    }

    async fn register(&self, reference: &str) -> (StatusCode, Value) {
        self.register_as("acme", "budget-pacing", reference).await
    }

    async fn put_registry(&self, host: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.call(&self.operator, Method::PUT, &format!("/v1/registries/{host}"), Some(body)).await;
        (s, v)
    }
}

/// Starts the server with `registries` (TOML `[[registries]]` tables) in its config.
async fn world(registries: &str) -> World {
    let operator = "operator-token-for-trust-boundaries".to_string();
    let toml = format!(
        "[server]\noperator-token = \"{operator}\"\n\
         [transfer]\nretries = 1\nbackoff-base-ms = 10\nbackoff-max-ms = 20\nconnect-timeout-ms = 1000\n\
         read-timeout-ms = 2000\nrequest-timeout-ms = 4000\n{registries}"
    );
    let s = TestServer::fresh(None, &toml).await;
    for p in ["acme", "globex"] {
        s.create_partner(&operator, p).await;
    }
    let acme = s.create_token(&operator, "partner", Some("acme")).await.token;
    let globex = s.create_token(&operator, "partner", Some("globex")).await.token;
    World { s, operator, acme, globex }
}

fn registry_toml(host: &str, extra: &str) -> String {
    format!("[[registries]]\nhost = \"{host}\"\ninsecure = true\n{extra}\n")
}

#[tokio::test]
async fn partners_register_only_from_configured_registries_under_their_prefixes() {
    let internal = fake("127.0.0.1", None, |_| reply(200, &[], MARKER));
    let answering = registry(None, |_| reply(404, &[], MARKER));
    let w = world(&registry_toml(
        &answering.host(),
        r#"partners = { acme = ["acme/", "shared/acme-"], globex = ["globex/"] }"#,
    ))
    .await;

    // A host the operator never configured: refused before any network I/O.
    for host in [internal.host(), "registry.example".to_string(), "169.254.169.254".to_string()] {
        let (s, v) = w.register(&format!("{host}/acme/budget-pacing:1.4.34")).await;
        assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
        assert!(v["detail"].as_str().unwrap().contains("not configured by the operator"), "{v}");
        assert_eq!(v["field"], "reference");
    }
    assert_eq!(internal.hits(), 0, "an unconfigured host is never contacted");

    // A repository outside the partner's prefixes, on a configured registry.
    let host = answering.host();
    for repo in ["globex/budget-pacing", "shared/globex-tools", "acmeish/app", "budget-pacing"] {
        let (s, v) = w.register(&format!("{host}/{repo}:1.4.34")).await;
        assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{repo}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains("outside the repository prefixes assigned to partner acme"), "{detail}");
        assert!(detail.contains("acme/, shared/acme-"), "{detail}");
    }
    // Path tricks are not repository names at all.
    for repo in ["acme/../globex/app", "acme/./x", "acme//x", "ACME/app", "acme/app%2F..%2Fx"] {
        let (s, v) = w.register(&format!("{host}/{repo}:1.4.34")).await;
        assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid-reference"), "{repo}: {v}");
    }
    // A partner the operator assigned nothing on a registry: refused, and told so.
    let (s, v) = w.put_registry("registry.example", json!({"partners": {"acme": ["acme/"]}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w.register_as("globex", "app", "registry.example/globex/app:1.0.0").await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("no repository prefix"), "{v}");
    assert_eq!(answering.hits(), 0, "refusals come before any network I/O");

    // Inside the prefix the registry is contacted (it answers 404 with the marker: the
    // problem says "not found" in Kiosk's words).
    let (s, v) = w.register(&format!("{host}/acme/budget-pacing:1.4.34")).await;
    assert_eq!((s, kind(&v)), (StatusCode::NOT_FOUND, "tag-not-found"), "{v}");
    assert!(answering.hits() > 0);

    // A partner's oci-layout: reference is refused, whatever the path.
    for reference in ["oci-layout:/etc:shadow", "oci-layout:/tmp/some-layout:1.4.34"] {
        let (s, v) = w.register(reference).await;
        assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "layout-not-allowed"), "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(!detail.contains("Not a directory") && !detail.contains("shadow"), "{detail}");
    }
}

#[tokio::test]
async fn redirects_realms_and_remote_bodies_stay_outside() {
    let internal = fake("127.0.0.1", None, |_| reply(200, &[], MARKER));
    let internal_url = format!("http://{}/admin?token=1", internal.host());

    // Plain registries (marked insecure by the operator).
    let to_internal = {
        let target = internal_url.clone();
        registry(None, move |_| reply(307, &[("Location", &target)], MARKER))
    };
    let server_error = registry(None, |_| reply(500, &[("Content-Type", "text/plain")], MARKER));
    let unauthorized = registry(None, |_| reply(401, &[], &format!(r#"{{"errors":[{{"message":"{MARKER}"}}]}}"#)));
    let bad_manifest = registry(None, |_| {
        reply(200, &[], &format!(r#"{{"schemaVersion":"{MARKER}","config":{{"mediaType":"{MARKER}"}}}}"#))
    });
    // Well-formed manifests whose strings carry the marker: described, never quoted.
    let zeros = format!("sha256:{}", "0".repeat(64));
    let odd_type = {
        let body = json!({"schemaVersion": 2, "artifactType": MARKER,
                          "config": {"mediaType": "x/y", "digest": zeros, "size": 1}, "layers": []})
        .to_string();
        registry(None, move |_| reply(200, &[], &body))
    };
    let odd_digest = {
        let config =
            json!({"mediaType": "application/vnd.alli-marketplace.manifest.v1+json", "digest": zeros, "size": 1});
        let body = json!({"schemaVersion": 2, "config": config,
                          "layers": [{"mediaType": "application/wasm", "digest": format!("sha256:{MARKER}"), "size": 1}]})
        .to_string();
        registry(None, move |_| reply(200, &[], &body))
    };
    let token_service = fake("127.0.0.1", None, |_| reply(401, &[], MARKER));
    let token_registry = {
        let realm = format!(r#"Bearer realm="http://{}/token",service="fake""#, token_service.host());
        fake("127.0.0.1", None, move |_| reply(401, &[("WWW-Authenticate", &realm)], MARKER))
    };
    let prefixes = r#"partners = { acme = ["acme/"] }"#;
    let mut toml = String::new();
    for f in [&to_internal, &server_error, &unauthorized, &bad_manifest, &odd_type, &odd_digest] {
        toml.push_str(&registry_toml(&f.host(), prefixes));
    }
    toml.push_str(&registry_toml(
        &token_registry.host(),
        &format!("{prefixes}\ntoken-hosts = [\"{}\"]", token_service.host()),
    ));
    let w = world(&toml).await;
    let reference = |f: &Fake| format!("{}/acme/budget-pacing:1.4.34", f.host());

    // A redirect to a loopback internal service (another host, plain HTTP): refused
    // without contacting it.
    let (s, v) = w.register(&reference(&to_internal)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("redirected to") && detail.contains("blob-hosts"), "{detail}");
    assert!(!detail.contains("/admin") && !detail.contains("token=1"), "no path or query of the target: {detail}");

    // Non-2xx answers carrying an internal body: the status in Kiosk's words only.
    let (s, v) = w.register(&reference(&server_error)).await;
    assert_eq!((s, kind(&v)), (StatusCode::BAD_GATEWAY, "registry-unavailable"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("HTTP 500 (server error) (after 2 attempts)"), "{v}");
    let (s, v) = w.register(&reference(&unauthorized)).await;
    assert_eq!((s, kind(&v)), (StatusCode::BAD_GATEWAY, "registry-refused"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("HTTP 401 (not authorized)"), "{v}");
    let (s, v) = w.register(&reference(&token_registry)).await;
    assert_eq!((s, kind(&v)), (StatusCode::BAD_GATEWAY, "registry-refused"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("token service answered HTTP 401"), "{v}");
    // A 2xx body that is not a manifest: described, never quoted.
    let (s, v) = w.register(&reference(&bad_manifest)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "artifact-refused"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("the OCI manifest is not valid"), "{v}");
    let (s, v) = w.register(&reference(&odd_type)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "artifact-refused"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("artifactType is \"(not a media type)\""), "{v}");
    let (s, v) = w.register(&reference(&odd_digest)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "artifact-refused"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("digest sha256:… is not a sha256 digest"), "{v}");

    // HTTPS registries (the operator's CA): a same-host redirect to plain HTTP, a plain
    // HTTP token realm, and an HTTPS realm on a host not listed.
    let (tls, ca_pem) = tls_server();
    let downgrade = {
        let port = Arc::new(std::sync::OnceLock::<u16>::new());
        let p = Arc::clone(&port);
        let f = registry(Some(Arc::clone(&tls)), move |path| {
            let location = format!("http://127.0.0.1:{}{path}", p.get().unwrap());
            reply(302, &[("Location", &location)], MARKER)
        });
        port.set(f.addr.port()).unwrap();
        f
    };
    let http_realm = {
        let realm = format!(r#"Bearer realm="http://{}/token",service="fake""#, internal.host());
        fake("127.0.0.1", Some(Arc::clone(&tls)), move |_| reply(401, &[("WWW-Authenticate", &realm)], MARKER))
    };
    let unlisted_realm = fake("127.0.0.1", Some(Arc::clone(&tls)), |_| {
        reply(401, &[("WWW-Authenticate", r#"Bearer realm="https://169.254.169.254/latest/token""#)], MARKER)
    });
    for (f, token_hosts) in
        [(&downgrade, json!([])), (&http_realm, json!([internal.host()])), (&unlisted_realm, json!([]))]
    {
        let body = json!({"caPem": ca_pem, "username": "kiosk", "password": "registry-secret",
                          "partners": {"acme": ["acme/"]}, "tokenHosts": token_hosts});
        let (s, v) = w.put_registry(&f.host(), body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = w.register(&reference(&downgrade)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("from HTTPS to plain HTTP"), "{v}");
    let (s, v) = w.register(&reference(&http_realm)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("token realm") && v["detail"].as_str().unwrap().contains("not HTTPS")
    );
    let (s, v) = w.register(&reference(&unlisted_realm)).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("token-hosts"), "{v}");

    assert_eq!(internal.hits(), 0, "the internal service was never contacted");
    assert!(downgrade.hits() > 0 && http_realm.hits() > 0, "the HTTPS fakes were reached (TLS worked)");
}

#[tokio::test]
async fn names_resolving_to_private_addresses_need_the_operators_flag() {
    // The machine's host name usually resolves to loopback (/etc/hosts). A registry
    // configured by that name is refused after resolution unless marked private.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let loopback = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.ip().is_loopback()))
        .filter(|_| !name.is_empty() && name != "localhost");
    // Under CI the machine must provide this (Debian lists its host name in /etc/hosts);
    // a missing part fails there, it never skips.
    let Some(addr) = loopback else {
        assert!(
            std::env::var_os("CI").is_none(),
            "host name {name:?} does not resolve to a loopback address: add it to /etc/hosts"
        );
        eprintln!("skipped outside CI: host name {name:?} does not resolve to a loopback address");
        return;
    };
    let answering =
        fake(
            &addr.ip().to_string(),
            None,
            |p| {
                if p == "/v2/" { reply(200, &[], "{}") } else { reply(404, &[], MARKER) }
            },
        );
    let host = format!("{name}:{}", answering.addr.port());
    let w = world("").await;
    let (s, v) = w.put_registry(&host, json!({"insecure": true, "partners": {"acme": ["acme/"]}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let reference = format!("{host}/acme/budget-pacing:1.4.34");
    let (s, v) = w.register(&reference).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("resolves to a loopback address"), "{v}");
    assert_eq!(answering.hits(), 0, "refused at resolution, before connecting");

    let body = json!({"insecure": true, "privateAddresses": true, "partners": {"acme": ["acme/"]}});
    let (s, v) = w.put_registry(&host, body).await;
    assert_eq!((s, v["privateAddresses"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, v) = w.register(&reference).await;
    assert_eq!((s, kind(&v)), (StatusCode::NOT_FOUND, "tag-not-found"), "{v}");
    assert!(answering.hits() > 0);
}

#[tokio::test]
async fn redirects_to_listed_blob_hosts_are_followed() {
    // A real registry behind a front that redirects every request to it: registration
    // works once the operator lists the real registry as a blob host, and only then.
    let real = TestRegistry::start(Mode::Plain);
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let (secret, cert) = (gpg.export_secret(&key), String::from_utf8(gpg.export(&key)).unwrap());
    let pusher = Registry::new(
        &RegistrySettings { host: real.host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    let m = serde_json::to_vec_pretty(&manifest_json("budget-pacing")).unwrap();
    let wasm = guest_bytes("budget-pacing");
    let sigs = vec![sign_detached(&secret, &m).unwrap().0, sign_detached(&secret, &wasm).unwrap().0];
    push(&pusher, "acme/budget-pacing", "1.4.34", &assemble(&m, &wasm, &sigs), |_| {}).await.unwrap();
    let front = |real: String| {
        fake("127.0.0.1", None, move |path| reply(307, &[("Location", &format!("http://{real}{path}"))], ""))
    };
    let (listed, unlisted) = (front(real.host.clone()), front(real.host.clone()));
    let prefixes = r#"partners = { acme = ["acme/"] }"#;
    let toml = registry_toml(&listed.host(), &format!("{prefixes}\nblob-hosts = [\"{}\"]", real.host))
        + &registry_toml(&unlisted.host(), prefixes);
    let w = world(&toml).await;
    let (s, v, _) =
        w.call(&w.operator, Method::POST, "/v1/partners/acme/certificates", Some(json!({"certificate": cert}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (s, v) = w.register(&format!("{}/acme/budget-pacing:1.4.34", unlisted.host())).await;
    assert_eq!((s, kind(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "registry-not-allowed"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("blob-hosts"), "{v}");
    let (s, v) = w.register(&format!("{}/acme/budget-pacing:1.4.34", listed.host())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["signer"], key);
}

#[tokio::test]
async fn registry_settings_are_validated_and_shown() {
    let w = world("").await;
    for (body, field) in [
        (json!({"partners": {"acme": [""]}}), "partners"),
        (json!({"partners": {"acme": ["../"]}}), "partners"),
        (json!({"partners": {"": ["x/"]}}), "partners"),
        (json!({"blobHosts": ["https://blobs.example/path"]}), "blobHosts"),
        (json!({"tokenHosts": ["user@auth.example"]}), "tokenHosts"),
    ] {
        let (s, v) = w.put_registry("registry.example", body.clone()).await;
        assert_eq!(
            (s, kind(&v), v["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid-registry", Some(field)),
            "{body}: {v}"
        );
    }
    let (s, v) = w.put_registry("registry.example/x", json!({})).await;
    assert_ne!(s, StatusCode::OK, "{v}");
    let body = json!({"partners": {"acme": ["acme/", "shared/acme-"]}, "blobHosts": ["blobs.example"],
                      "tokenHosts": ["auth.example:8443"]});
    let (s, v) = w.put_registry("Registry.Example", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list, _) = w.call(&w.operator, Method::GET, "/v1/registries", None).await;
    let list: Page<RegistryView> = serde_json::from_value(list).unwrap();
    let entry = &list.items[0];
    assert_eq!(entry.partners["acme"], ["acme/", "shared/acme-"], "{entry:?}");
    assert_eq!(entry.partners.len(), 1, "{entry:?}");
    assert_eq!(entry.blob_hosts, ["blobs.example"], "{entry:?}");
    assert_eq!(entry.token_hosts, ["auth.example:8443"], "{entry:?}");
    assert!(!entry.private_addresses, "{entry:?}");

    // The config file is checked the same way at start-up.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiosk.toml");
    std::fs::write(&path, "[[registries]]\nhost = \"registry.example\"\npartners = { acme = [\"\"] }\n").unwrap();
    let err = format!("{:#}", kiosk::config::OperatorConfig::load(&path).unwrap_err());
    assert!(err.contains("prefix \"\" of partner \"acme\""), "{err}");
    std::fs::write(&path, "[[registries]]\nhost = \"registry.example\"\nblob-hosts = [\"s3.example/bucket\"]\n")
        .unwrap();
    let err = format!("{:#}", kiosk::config::OperatorConfig::load(&path).unwrap_err());
    assert!(err.contains("blob-hosts"), "{err}");
}

#[test]
fn signature_layers_that_are_not_signatures_are_not_quoted() {
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let mut trust = TrustStore::default();
    trust.add("acme", &gpg.export(&key)).unwrap();
    let layers = [
        MARKER.as_bytes().to_vec(),
        format!("-----BEGIN PGP SIGNATURE-----\n\n{MARKER}\n-----END PGP SIGNATURE-----\n").into_bytes(),
    ];
    let err = trust.verify_artifact("acme", b"{}", b"wasm", &layers).unwrap_err().to_string();
    assert!(err.contains("not an OpenPGP signature") && !err.contains(MARKER) && !err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn crafted_layouts_never_turn_digests_into_paths() {
    let dir = tempfile::tempdir().unwrap();
    let layout_dir = dir.path().join("layout");
    let layout = LayoutSource::new(&layout_dir);
    let (m, w) = (serde_json::to_vec(&manifest_json("budget-pacing")).unwrap(), guest_bytes("budget-pacing"));
    layout.write("1.4.34", &m, &w, &[]).unwrap();
    // A file the traversal would reach.
    std::fs::write(dir.path().join("secret"), MARKER).unwrap();
    let trust = TrustStore::default();
    let caps = SizeCaps::default();

    // index.json pointing outside the layout.
    let index_path = layout_dir.join("index.json");
    let good_index = std::fs::read_to_string(&index_path).unwrap();
    let mut index: Value = serde_json::from_str(&good_index).unwrap();
    for digest in ["sha256:../../secret", "sha256:../../../../../../etc/passwd", "sha256:ABCDEF", "md5:abc"] {
        index["manifests"][0]["digest"] = digest.into();
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let err = fetch_verified(&layout, "acme/budget-pacing", "1.4.34", &trust, &caps, &HOST_API_VERSION, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::BadDigest { part: Part::OciManifest, .. }), "{digest}: {err}");
        assert!(!err.to_string().contains(MARKER) && !err.to_string().contains("Not a directory"), "{err}");
    }
    // A manifest whose layers point outside the layout: refused before any blob is read.
    std::fs::write(&index_path, &good_index).unwrap();
    let index: Value = serde_json::from_str(&good_index).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest_file = layout_dir.join("blobs/sha256").join(manifest_digest.trim_start_matches("sha256:"));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    manifest["layers"][0]["digest"] = "sha256:../../../secret".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let crafted = kiosk::digest::Digest::of(&bytes);
    std::fs::write(layout_dir.join("blobs/sha256").join(crafted.hex()), &bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = crafted.as_str().into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = fetch_verified(&layout, "acme/budget-pacing", "1.4.34", &trust, &caps, &HOST_API_VERSION, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest { part: Part::Component, .. }), "{err}");
    // The source refuses such a descriptor on its own too.
    let desc = kiosk::artifact::Descriptor {
        media_type: "application/wasm".into(),
        digest: "sha256:../../../secret".into(),
        size: MARKER.len() as u64,
        annotations: Default::default(),
    };
    let err = layout.fetch(Part::Component, &desc, 1 << 20).await.unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest { .. }), "{err}");

    // index.json that is not an index: described, never quoted.
    std::fs::write(&index_path, format!(r#"{{"schemaVersion": "{MARKER}"}}"#)).unwrap();
    let err = layout.resolve("1.4.34", 1 << 20).await.unwrap_err().to_string();
    assert!(
        err.contains("index.json has a missing field or a field of the wrong type") && !err.contains(MARKER),
        "{err}"
    );
}
