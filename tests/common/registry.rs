//! A real OCI registry (Debian's `docker-registry`, distribution 2.8) started on a free
//! loopback port with a config of its own: plain HTTP, htpasswd basic auth, TLS from a
//! test CA, or token auth. And TCP front ends that inject faults.

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
    /// PEM of the CA that issued the registry's certificate (TLS mode).
    pub ca_bundle: Option<PathBuf>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: kiosk-test-secret\n",
            storage.display()
        );
        let mut ca_bundle = None;
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
            Mode::Token { realm, cert_pem } => {
                let bundle = dir.path().join("token-signer.pem");
                std::fs::write(&bundle, cert_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: kiosk-test-registry\n    issuer: kiosk-test-issuer\n    rootcertbundle: {}\n",
                    bundle.display()
                ));
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (apt-get install docker-registry)");
        let mut registry = Self { child, host, dir, ca_bundle };
        registry.wait_until_listening(port);
        registry
    }

    /// Waits (bounded) until the registry accepts connections.
    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
                panic!("docker-registry exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on port {port} within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's storage directory of a blob, for tampering tests.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
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
