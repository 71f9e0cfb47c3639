//! Local billing receivers over HTTPS, each written from its system's public contract:
//! - OpenMeter's CloudEvents ingest (`/api/v1/events`): `application/cloudevents-batch+json`,
//!   each event deduplicated on (`source`, `id`), the whole batch refused (400) when one
//!   event is bad;
//! - Stripe's meter events (`/v1/billing/meter_events`): form-encoded, the secret key as
//!   a bearer token, `event_name`, `payload[stripe_customer_id]`, `payload[value]` (a whole
//!   number), `timestamp` within the past 35 days or 5 minutes ahead, `identifier` unique
//!   (a repeat refused, 400) unless the request repeats its `Idempotency-Key`, which gets
//!   the first answer again (kept only for a request that executed, as Stripe does);
//! - AWS Marketplace's `BatchMeterUsage` (`/`, `X-Amz-Target`): at most 25 records, each
//!   `Timestamp` under 6 hours old, the product code expected; per record `Success`
//!   (again for the same customer, dimension, hour and quantity), `DuplicateRecord` for a
//!   changed quantity, `CustomerNotSubscribed` for a customer told so;
//! - Kiosk's own webhook (`/hooks/usage`): `{sink, records}`, deduplicated by `id`.
//!
//! All but Stripe check Kiosk's `Kiosk-Signature` (HMAC-SHA256 of `<t>.<body>`). Each can
//! be told to fail (503), to refuse what carries a given quantity (400), or to answer late.

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
    /// Every request is refused (400).
    pub(crate) refuse_all: std::sync::atomic::AtomicBool,
    /// Requests with a missing or wrong signature (must stay 0).
    pub(crate) bad_signatures: AtomicUsize,
    /// Answer every accepted batch this many ms late (taken, its answer delayed).
    pub(crate) delay_ms: AtomicU64,
    /// Requests that reached the handler.
    pub(crate) requests: AtomicUsize,
    /// AWS: customers answered `CustomerNotSubscribed`.
    pub(crate) unsubscribed: Mutex<std::collections::BTreeSet<String>>,
    /// Stripe: first answers by `Idempotency-Key`.
    pub(crate) idempotent: Mutex<BTreeMap<String, StatusCode>>,
}

impl Inbox {
    /// Holds `event` under `key`: a repeat is counted, and counted as changed if it differs.
    fn hold(&self, key: (String, String), event: Value) -> bool {
        let mut events = self.events.lock().unwrap();
        match events.get(&key) {
            Some(first) => {
                self.duplicates.fetch_add(1, Ordering::SeqCst);
                let same = *first == event;
                if !same {
                    self.changed.fetch_add(1, Ordering::SeqCst);
                }
                same
            }
            None => {
                events.insert(key, event);
                true
            }
        }
    }

    /// Counts the request; the answer for a receiver told to fail, if it is.
    fn failing(&self) -> Option<StatusCode> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Some(StatusCode::SERVICE_UNAVAILABLE);
        }
        None
    }

    /// A receiver that took the request but answers late (the stand-in of a slow network),
    /// not a synchronisation.
    async fn answer_late(&self) {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    fn refused(&self, quantity: Option<i64>) -> bool {
        let refuse = self.refuse_quantity.load(Ordering::SeqCst);
        self.refuse_all.load(Ordering::SeqCst) || (refuse != 0 && quantity == Some(refuse))
    }
}

pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    pub(crate) inbox: Arc<Inbox>,
}

struct Shared {
    inbox: Arc<Inbox>,
    key: Vec<u8>,
    /// The AWS product code records must carry.
    product: String,
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
    if !signed(&s.key, headers.get("kiosk-signature").and_then(|h| h.to_str().ok()), &body) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if headers.get("content-type").and_then(|h| h.to_str().ok()) != Some("application/cloudevents-batch+json") {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    if let Some(status) = inbox.failing() {
        return status;
    }
    let Ok(Value::Array(batch)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for event in &batch {
        let valid = event["specversion"] == "1.0"
            && event["id"].is_string()
            && event["source"].is_string()
            && event["type"].is_string()
            && event["subject"].is_string()
            && event["time"].is_string()
            && event["data"]["quantity"].is_i64();
        if !valid || inbox.refused(event["data"]["quantity"].as_i64()) {
            return StatusCode::BAD_REQUEST;
        }
    }
    for event in batch {
        let key = (event["source"].as_str().unwrap().to_string(), event["id"].as_str().unwrap().to_string());
        inbox.hold(key, event);
    }
    inbox.answer_late().await;
    StatusCode::OK
}

async fn webhook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let inbox = &s.inbox;
    if !signed(&s.key, headers.get("kiosk-signature").and_then(|h| h.to_str().ok()), &body) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(status) = inbox.failing() {
        return status;
    }
    let Ok(hook) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
    let Some(records) = hook["records"].as_array() else { return StatusCode::BAD_REQUEST };
    if hook["sink"] != "billing"
        || records.iter().any(|r| !r["id"].is_string() || inbox.refused(r["quantity"].as_i64()))
    {
        return StatusCode::BAD_REQUEST;
    }
    for record in records {
        inbox.hold(("webhook".into(), record["id"].as_str().unwrap().into()), record.clone());
    }
    inbox.answer_late().await;
    StatusCode::OK
}

async fn stripe(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let inbox = &s.inbox;
    let bearer = format!("Bearer {}", String::from_utf8_lossy(&s.key));
    if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some(bearer.as_str()) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(status) = inbox.failing() {
        return status;
    }
    let key = headers.get("idempotency-key").and_then(|h| h.to_str().ok()).map(str::to_string);
    if let Some(first) = key.as_ref().and_then(|k| inbox.idempotent.lock().unwrap().get(k).copied()) {
        inbox.duplicates.fetch_add(1, Ordering::SeqCst);
        return first;
    }
    let form: BTreeMap<String, String> =
        form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let timestamp = form.get("timestamp").and_then(|t| t.parse::<i64>().ok());
    let value = form.get("payload[value]").and_then(|v| v.parse::<i64>().ok());
    let valid = ["event_name", "identifier", "payload[stripe_customer_id]"].iter().all(|f| form.contains_key(*f))
        && form["identifier"].len() <= 100
        && form["event_name"].len() <= 100
        && value.is_some()
        && timestamp.is_some_and(|t| t > now - 35 * 86_400 && t <= now + 300);
    let status = if !valid || inbox.refused(value) {
        StatusCode::BAD_REQUEST
    } else {
        let event = serde_json::to_value(&form).unwrap();
        let fresh = !inbox.events.lock().unwrap().contains_key(&("stripe".to_string(), form["identifier"].clone()));
        inbox.hold(("stripe".into(), form["identifier"].clone()), event);
        // A repeated identifier without its key is refused (uniqueness enforced).
        if fresh { StatusCode::OK } else { StatusCode::BAD_REQUEST }
    };
    // As Stripe: a result is kept for the key only if the request executed (a request
    // refused by validation is not).
    if let Some(key) = key
        && status.is_success()
    {
        inbox.idempotent.lock().unwrap().insert(key, status);
    }
    inbox.answer_late().await;
    status
}

async fn aws(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let inbox = &s.inbox;
    if !signed(&s.key, headers.get("kiosk-signature").and_then(|h| h.to_str().ok()), &body) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    let target = headers.get("x-amz-target").and_then(|h| h.to_str().ok());
    let json = headers.get("content-type").and_then(|h| h.to_str().ok()) == Some("application/x-amz-json-1.1");
    if target != Some("AWSMPMeteringService.BatchMeterUsage") || !json {
        return (StatusCode::BAD_REQUEST, r#"{"__type":"InvalidRequest"}"#.into());
    }
    if let Some(status) = inbox.failing() {
        return (status, String::new());
    }
    let Ok(call) = serde_json::from_slice::<Value>(&body) else { return (StatusCode::BAD_REQUEST, String::new()) };
    let records = call["UsageRecords"].as_array().cloned().unwrap_or_default();
    if call["ProductCode"] != s.product.as_str() || records.is_empty() || records.len() > 25 {
        return (StatusCode::BAD_REQUEST, r#"{"__type":"InvalidProductCodeException"}"#.into());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for r in &records {
        let fresh = r["Timestamp"].as_i64().is_some_and(|t| t > now - 6 * 3600 && t <= now);
        let quantity = r["Quantity"].as_i64();
        if !fresh || !quantity.is_some_and(|q| (0..=i64::from(i32::MAX)).contains(&q)) || inbox.refused(quantity) {
            return (StatusCode::BAD_REQUEST, r#"{"__type":"TimestampOutOfBoundsException"}"#.into());
        }
    }
    let mut results = Vec::new();
    for r in records {
        let customer = r["CustomerIdentifier"].as_str().unwrap_or_default().to_string();
        let status = if inbox.unsubscribed.lock().unwrap().contains(&customer) {
            "CustomerNotSubscribed"
        } else {
            let key = format!("{customer}/{}/{}", r["Dimension"].as_str().unwrap_or_default(), r["Timestamp"]);
            if inbox.hold(("aws".into(), key), r.clone()) { "Success" } else { "DuplicateRecord" }
        };
        results.push(serde_json::json!({"UsageRecord": r, "MeteringRecordId": "m", "Status": status}));
    }
    inbox.answer_late().await;
    (StatusCode::OK, serde_json::json!({"Results": results, "UnprocessedRecords": []}).to_string())
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
    let app = routes(inbox.clone(), key);
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { port, ca_pem: ca.pem(), inbox }
}

fn routes(inbox: Arc<Inbox>, key: &[u8]) -> axum::Router {
    let shared = Arc::new(Shared { inbox, key: key.to_vec(), product: "kioskprod1".into() });
    axum::Router::new()
        .route("/api/v1/events", post(ingest))
        .route("/hooks/usage", post(webhook))
        .route("/v1/billing/meter_events", post(stripe))
        .route("/", post(aws))
        .with_state(shared)
}

/// The same receivers over plain HTTP (a sink set through the API trusts the web's roots
/// only; `http = true` reaches this one).
pub(crate) async fn start_plain(key: &[u8]) -> Receiver {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let inbox = Arc::new(Inbox::default());
    let app = routes(inbox.clone(), key);
    tokio::spawn(async move {
        let _ = axum::serve(tcp, app).await;
    });
    Receiver { port, ca_pem: String::new(), inbox }
}
