//! The stand-ins of the egress tests: the partner's HTTPS API on loopback (rcgen
//! certificates), an internal service that must never be reached, and a Kiosk server
//! with test guests or example apps registered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk::store::Principal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;
use crate::common::api::TestServer;

/// A request the stand-in API received: method, path, Host, Authorization and body.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) host: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// The partner's API stand-in: HTTPS on a loopback port, keep-alive, a few behaviours by path.
pub(crate) struct PartnerApi {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (a reused connection is not counted again).
    pub(crate) connections: Arc<AtomicUsize>,
}

/// A plain TCP service that must never be reached; counts connections.
pub(crate) struct Internal {
    pub(crate) port: u16,
    pub(crate) connections: Arc<AtomicUsize>,
}

pub(crate) fn start_internal() -> Internal {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Internal { port, connections }
}

pub(crate) async fn start_partner_api(internal_port: u16) -> PartnerApi {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Partner Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = [
        "api.acme.test",
        "other.acme.test",
        "rebind.acme.test",
        "hooks.tenant.test",
        // The example apps' partner APIs.
        "reporting.acme.example",
        "audience.acme.example",
        "brand.acme.example",
    ];
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen2, connections2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            connections2.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                // Keep-alive: one request after another on the connection.
                while let Some(request) = read_request(&mut tls).await {
                    seen.lock().unwrap().push(request.clone());
                    if !respond(&mut tls, &request, internal_port).await {
                        return;
                    }
                }
            });
        }
    });
    PartnerApi { port, ca_pem: ca.pem(), seen, connections }
}

pub(crate) async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Seen> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 || head.len() > 65_536 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let (mut host, mut authorization, mut length, mut chunked) = (String::new(), None, 0usize, false);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "host" => host = value.trim().to_string(),
                "authorization" => authorization = Some(value.trim().to_string()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.ok()?;
    if chunked {
        // `size CRLF data CRLF` ... `0 CRLF CRLF`.
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte).await.ok()?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Seen { method, path, host, authorization, body })
}

/// Answers one request; `false` when the connection is done.
pub(crate) async fn respond<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, request: &Seen, internal_port: u16) -> bool {
    let path = request.path.split('?').next().unwrap_or("");
    match path {
        "/redirect" => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: https://internal.test:{internal_port}/admin\r\ncontent-length: 0\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.is_ok()
        }
        "/huge" => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n").await;
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..16_384 {
                if s.write_all(&chunk).await.is_err() {
                    return false;
                }
            }
            false
        }
        "/drip" => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await;
            for _ in 0..100 {
                if s.write_all(b"x").await.is_err() || s.flush().await.is_err() {
                    return false;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            false
        }
        "/big" => {
            let body = vec![b'b'; 20 * 1024];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.is_ok() && s.write_all(&body).await.is_ok()
        }
        // The example apps' APIs (plugins-examples): budget-pacing 1.5's reporting API,
        // audience-forecast's audience sizes, ad-copy-check's brand-safety check.
        "/v1/campaigns/spring%2Fsale/daily-spend" => json_answer(s, r#"{"dailySpend":[150,150,150]}"#).await,
        "/v1/audiences/runners" => json_answer(s, r#"{"dailyReach":123456}"#).await,
        "/v1/check" => json_answer(s, r#"{"flagged":["miracle"]}"#).await,
        _ => json_answer(s, r#"{"ok":true}"#).await,
    }
}

async fn json_answer<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, body: &str) -> bool {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await.is_ok() && s.write_all(body.as_bytes()).await.is_ok()
}

/// A server with a test guest or the example apps registered.
pub(crate) struct Server {
    pub(crate) s: TestServer,
    /// The app the test guest is registered as.
    pub(crate) app: String,
}

impl std::ops::Deref for Server {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

impl Server {
    pub(crate) async fn token(&self, tenant: &str) -> String {
        self.store().create_token(&Principal::Tenant(tenant.into()), "test", "operator").await.unwrap().1
    }

    pub(crate) async fn install(&self, token: &str, tenant: &str, config: Value) -> String {
        self.install_version(token, tenant, &self.app, "0.0.1", config).await
    }

    pub(crate) async fn install_version(
        &self,
        token: &str,
        tenant: &str,
        app: &str,
        version: &str,
        config: Value,
    ) -> String {
        self.s.install(token, tenant, json!({"app": app, "version": version, "config": config})).await.id
    }

    /// The messages of tenant `demo`'s installation `id`'s log.
    pub(crate) async fn logs(&self, token: &str, id: &str) -> Vec<String> {
        self.log_messages(token, "demo", id).await
    }
}

/// Every byte the database holds, as text (SQLite: the database file and its WAL;
/// PostgreSQL: every row of every table of the test's database).
pub(crate) async fn database_bytes(dir: &std::path::Path, postgres_url: Option<&str>) -> Vec<u8> {
    match postgres_url {
        None => {
            let mut bytes = Vec::new();
            for name in ["kiosk.db", "kiosk.db-wal"] {
                if let Ok(b) = std::fs::read(dir.join("data").join(name)) {
                    bytes.extend(b);
                }
            }
            assert!(!bytes.is_empty(), "the SQLite database was not found");
            bytes
        }
        Some(url) => {
            use sqlx::{Connection as _, Row as _};
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let mut bytes = Vec::new();
            for table in tables {
                let rows = sqlx::query(&format!("SELECT t::text AS row FROM \"{table}\" t"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for row in rows {
                    let text: String = row.get("row");
                    bytes.extend(text.into_bytes());
                }
            }
            bytes
        }
    }
}

pub(crate) fn xored(secret: &str) -> Value {
    secret.bytes().map(|b| b ^ 0x5a).collect::<Vec<u8>>().into()
}

pub(crate) fn error_of(body: &Value) -> String {
    body["output"]["error"].as_str().unwrap_or_else(|| panic!("an error expected: {body}")).to_string()
}

/// The stand-ins, and a server with the test guest `guest` registered, its manifest's
/// port 8443 replaced by the stand-in API's.
pub(crate) struct Setup {
    pub(crate) internal: Internal,
    pub(crate) api: PartnerApi,
    pub(crate) database: Option<String>,
    pub(crate) server: Server,
    pub(crate) port: u16,
    pub(crate) _ca_dir: tempfile::TempDir,
}

pub(crate) async fn setup(guest: &str, postgres: bool) -> Setup {
    let internal = start_internal();
    let api = start_partner_api(internal.port).await;
    let database = if postgres { Some(common::fresh_postgres_database().await) } else { None };
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("partner-ca.pem");
    std::fs::write(&ca_file, &api.ca_pem).unwrap();
    let port = api.port;
    // A call's deadline of 10 s (the default is 1 s): a call here makes up to 20 HTTPS
    // requests in series, which a CI machine running every suite at once must not race;
    // the deadline itself is tested by sandbox:: and containment::.
    let extra = format!(
        r#"
[sandbox]
timeout-ms = 10000

[egress]
max-requests-per-call = 20
max-concurrent-requests-per-call = 4
max-response-body-bytes = 1048576

[egress.resolve]
"api.acme.test" = ["127.0.0.1"]
"other.acme.test" = ["127.0.0.1"]
"rebind.acme.test" = ["127.0.0.1"]
"hooks.tenant.test" = ["127.0.0.1"]
"internal.test" = ["127.0.0.1"]

[[egress.hosts]]
host = "api.acme.test"
private-addresses = true
ca-file = "{ca}"

[[egress.hosts]]
host = "other.acme.test"
private-addresses = true
ca-file = "{ca}"

[[egress.hosts]]
host = "hooks.tenant.test"
private-addresses = true
ca-file = "{ca}"
"#,
        ca = ca_file.display()
    );
    let s = common::guest_server(guest, database.clone(), &extra, |m| {
        let text = m.to_string().replace(":8443", &format!(":{port}"));
        *m = serde_json::from_str(&text).unwrap();
        m["limits"]["timeoutMs"] = 10_000.into();
    })
    .await;
    s.store().create_tenant("other", "Other", "operator").await.unwrap();
    let app = common::manifest_json(guest)["app"].as_str().unwrap().to_string();
    let server = Server { s, app };
    Setup { internal, api, database, server, port, _ca_dir: ca_dir }
}
