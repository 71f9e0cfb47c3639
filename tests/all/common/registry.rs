//! A real OCI registry (Debian's `docker-registry`, distribution 2.8) started on a free
//! loopback port with a config of its own: plain HTTP, htpasswd basic auth, TLS from a
//! test CA, TLS that demands a client certificate, or token auth. And TCP front ends
//! that inject faults.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "partner-ci";
pub const PASSWORD: &str = "s3cret-push-password";

/// How the registry authenticates and serves.
#[derive(Debug, Clone)]
pub enum Mode {
    Plain,
    Basic,
    Tls,
    /// TLS from a test CA that demands a client certificate issued by a client CA
    /// (distribution's `http.tls.clientcas`: the handshake requires and verifies one).
    /// Pushes go to a second registry on the same storage ([`MutualTls::push_host`]).
    MutualTls,
    /// Token auth: `realm` is the token endpoint; `cert` (PEM) signs tokens.
    Token {
        realm: String,
        cert_pem: String,
    },
}

pub struct TestRegistry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
    /// PEM of the CA that issued the registry's certificate (TLS modes).
    pub ca_bundle: Option<PathBuf>,
    /// The client side of [`Mode::MutualTls`].
    pub mutual_tls: Option<MutualTls>,
    /// The registry [`MutualTls::push_host`] names.
    pusher: Option<Child>,
}

/// What a client of a [`Mode::MutualTls`] registry needs.
#[derive(Debug, Clone)]
pub struct MutualTls {
    /// PEM of the CA that issued the registry's certificate.
    pub ca_pem: String,
    /// A client certificate the registry accepts, and its private key (PEM).
    pub client_certificate_pem: String,
    pub client_key_pem: String,
    /// A plain-HTTP registry on the same storage, for pushes: oci-client (Kiosk's push
    /// client) cannot present a client certificate.
    pub push_host: String,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.pusher.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl TestRegistry {
    pub fn start(mode: Mode) -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let base = |host: &str| {
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: kiosk-test-secret\n",
                storage.display()
            )
        };
        let mut config = base(&host);
        let mut ca_bundle = None;
        let mut mutual_tls = None;
        match &mode {
            Mode::Plain => {}
            Mode::Basic => {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash(PASSWORD, 5).unwrap();
                std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kiosk-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            Mode::Tls => {
                let (ca_pem, cert_pem, key_pem) = test_ca_and_server_cert();
                let (ca, cert, key) =
                    (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
                std::fs::write(&ca, ca_pem).unwrap();
                std::fs::write(&cert, cert_pem).unwrap();
                std::fs::write(&key, key_pem).unwrap();
                config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
                ca_bundle = Some(ca);
            }
            Mode::MutualTls => {
                let (ca_pem, cert_pem, key_pem) = test_ca_and_server_cert();
                let (client_ca_pem, client_certificate_pem, client_key_pem) = test_client_ca_and_cert();
                let files = ["ca.pem", "cert.pem", "key.pem", "client-ca.pem"].map(|f| dir.path().join(f));
                for (file, pem) in files.iter().zip([&ca_pem, &cert_pem, &key_pem, &client_ca_pem]) {
                    std::fs::write(file, pem).unwrap();
                }
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                    files[1].display(),
                    files[2].display(),
                    files[3].display()
                ));
                ca_bundle = Some(files[0].clone());
                let push_host = format!("127.0.0.1:{}", free_port());
                mutual_tls = Some(MutualTls { ca_pem, client_certificate_pem, client_key_pem, push_host });
            }
            Mode::Token { realm, cert_pem } => {
                let bundle = dir.path().join("token-signer.pem");
                std::fs::write(&bundle, cert_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: kiosk-test-registry\n    issuer: kiosk-test-issuer\n    rootcertbundle: {}\n",
                    bundle.display()
                ));
            }
        }
        let child = spawn(dir.path(), "registry", &config);
        let pusher = mutual_tls.as_ref().map(|m| spawn(dir.path(), "pusher", &base(&m.push_host)));
        let mut registry = Self { child, host, dir, ca_bundle, mutual_tls, pusher };
        wait_until_listening(&mut registry.child, &registry.host, &registry.dir.path().join("registry.log"));
        if let (Some(pusher), Some(m)) = (registry.pusher.as_mut(), &registry.mutual_tls) {
            wait_until_listening(pusher, &m.push_host, &registry.dir.path().join("pusher.log"));
        }
        registry
    }
}

/// Starts `docker-registry serve` on `config` (written to `dir/{name}.yml`; its log
/// `dir/{name}.log`).
fn spawn(dir: &std::path::Path, name: &str, config: &str) -> Child {
    let config_path = dir.join(format!("{name}.yml"));
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("docker-registry must be installed (apt-get install docker-registry)")
}

/// Waits (bounded) until the registry `child` accepts connections on `host`.
fn wait_until_listening(child: &mut Child, host: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect(host).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("docker-registry exited with {status}: {log}");
        }
        assert!(Instant::now() < deadline, "docker-registry did not listen on {host} within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl TestRegistry {
    /// The registry's storage directory of a blob, for tampering tests.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

/// A client CA, and a client certificate (`clientAuth`) it issued: (ca, cert, key) as PEM.
pub fn test_client_ca_and_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Kiosk Test Client CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "kiosk");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A CA, and a server certificate for 127.0.0.1 it issued: (ca, cert, key) as PEM.
pub fn test_ca_and_server_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Kiosk Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A front end on a free port: the first `failures` connections get `HTTP 500` (with
/// `Retry-After: 0`), later ones are piped to `upstream`.
pub fn flaky_front(upstream: String, failures: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { return };
            if i < failures {
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut client, &mut buf);
                let _ = client.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(&upstream) else { return };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut client, mut server) = (client, server);
                let up = std::thread::spawn(move || std::io::copy(&mut c2, &mut server));
                let _ = std::io::copy(&mut s2, &mut client);
                let _ = up.join();
            });
        }
    });
    addr.to_string()
}

/// A front end that accepts connections and never answers.
pub fn stalling_front() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => return,
            }
        }
    });
    addr.to_string()
}

/// A token server for the registry's token auth (the Docker `WWW-Authenticate: Bearer`
/// flow): checks basic credentials, then issues an ES256 JWT whose `x5c` header carries
/// a certificate the registry trusts (its `rootcertbundle`). Returns (realm URL, cert PEM).
pub fn token_server() -> (String, String) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Kiosk Test Token Signer");
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, cert_der) = (cert.pem(), cert.der().to_vec());
    let rng = ring::rand::SystemRandom::new();
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let expected_auth = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = vec![0u8; 8192];
            let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let authorized = request.lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == expected_auth)
            });
            if !authorized {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            let target = request.split_whitespace().nth(1).unwrap_or("");
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let scope = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("scope="))
                .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
                .unwrap_or_default();
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) =
                (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&cert_der)]});
            let claims = serde_json::json!({
                "iss": "kiosk-test-issuer", "sub": USER, "aud": "kiosk-test-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{n}"),
                "access": [{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
            });
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
            let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
            let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (realm, cert_pem)
}
