//! A local CloudEvents receiver over HTTPS, written from OpenMeter's ingest contract:
//! `POST` of `application/cloudevents-batch+json`, each event deduplicated on
//! (`source`, `id`), the whole batch refused (400) when one event is bad. It also checks
//! Kiosk's `Kiosk-Signature` (HMAC-SHA256 of `<t>.<body>`) and can be told to fail
//! (503), to refuse events of a given quantity (400), or to answer late.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// What the receiver holds and how it behaves.
#[derive(Default)]
pub(crate) struct Inbox {
    /// Accepted events by (source, id): the first body kept.
    pub(crate) events: Mutex<BTreeMap<(String, String), Value>>,
    /// Events received again with an id already held (harmless: deduplicated).
    pub(crate) duplicates: AtomicUsize,
    /// Resent events whose body differed from the first (must stay 0).
    pub(crate) changed: AtomicUsize,
    /// Requests answered 503 so far, and how many more to fail.
    pub(crate) failed: AtomicUsize,
    pub(crate) fail_next: AtomicUsize,
    /// A batch holding an event of this quantity is refused (400); 0: none.
    pub(crate) refuse_quantity: AtomicI64,
    /// Requests with a missing or wrong signature (must stay 0).
    pub(crate) bad_signatures: AtomicUsize,
    /// Answer every accepted batch this many ms late (taken, its answer delayed).
    pub(crate) delay_ms: AtomicU64,
    /// Requests that reached the handler.
    pub(crate) requests: AtomicUsize,
}

pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    pub(crate) inbox: Arc<Inbox>,
}

struct Shared {
    inbox: Arc<Inbox>,
    key: Vec<u8>,
}

fn signed(key: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    use hmac_check::verify;
    header.is_some_and(|h| verify(key, h, body))
}

/// HMAC-SHA256 by hand on `ring` (the test crate's own, so the check does not reuse the
/// code under test).
mod hmac_check {
    pub(super) fn verify(key: &[u8], header: &str, body: &[u8]) -> bool {
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = Some(value),
                Some(("v1", value)) => v1 = Some(value),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else { return false };
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(body);
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), &message);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        hex == v1
    }
}

async fn ingest(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let inbox = &s.inbox;
    inbox.requests.fetch_add(1, Ordering::SeqCst);
    if !signed(&s.key, headers.get("kiosk-signature").and_then(|h| h.to_str().ok()), &body) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if headers.get("content-type").and_then(|h| h.to_str().ok()) != Some("application/cloudevents-batch+json") {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    if inbox.fail_next.load(Ordering::SeqCst) > 0 {
        inbox.fail_next.fetch_sub(1, Ordering::SeqCst);
        inbox.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(Value::Array(batch)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let refuse = inbox.refuse_quantity.load(Ordering::SeqCst);
    for event in &batch {
        let valid = event["specversion"] == "1.0"
            && event["id"].is_string()
            && event["source"].is_string()
            && event["type"].is_string()
            && event["subject"].is_string()
            && event["time"].is_string()
            && event["data"]["quantity"].is_i64();
        if !valid || (refuse != 0 && event["data"]["quantity"].as_i64() == Some(refuse)) {
            return StatusCode::BAD_REQUEST;
        }
    }
    {
        let mut events = inbox.events.lock().unwrap();
        for event in batch {
            let key = (event["source"].as_str().unwrap().to_string(), event["id"].as_str().unwrap().to_string());
            match events.get(&key) {
                Some(first) => {
                    inbox.duplicates.fetch_add(1, Ordering::SeqCst);
                    if *first != event {
                        inbox.changed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                None => {
                    events.insert(key, event);
                }
            }
        }
    }
    let delay = inbox.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        // A receiver that took the batch but answers late (the stand-in of a slow
        // network), not a synchronisation.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    StatusCode::OK
}

/// axum's listener over TLS: each accepted connection does its handshake first.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            // Bounded: a client killed mid-handshake must not hold the listener.
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Starts the receiver for `name` (its certificate from a CA of its own), checking
/// signatures made with `key`.
pub(crate) async fn start(name: &str, key: &[u8]) -> Receiver {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Billing Test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let inbox = Arc::new(Inbox::default());
    let shared = Arc::new(Shared { inbox: inbox.clone(), key: key.to_vec() });
    let app = axum::Router::new().route("/api/v1/events", post(ingest)).with_state(shared);
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { port, ca_pem: ca.pem(), inbox }
}
