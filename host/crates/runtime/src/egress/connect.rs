//! Connecting to a vetted destination: one resolution, every address checked, the
//! connection made to the checked address (no second lookup, so no DNS rebinding), TLS
//! verified against the web's roots plus the operator's CA for that host, with the SNI
//! of the declared name. The pooled client of `gate` connects only through here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::settings::{EgressSettings, Mock};
use kiosk_domain::net::Scheme;
use kiosk_domain::net::non_public;

/// The longest a resolution, connection and TLS handshake may take together.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves a host name to addresses. Injectable, so tests map names to loopback
/// without touching the machine's resolver.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.map(|a| a.ip()).collect()) })
    }
}

/// Why a connection was not made, in Kiosk's words (remote text never appears).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("{host} could not be resolved")]
    Dns { host: String },
    #[error("{host} resolves to {ip}, a {class} address, which the operator has not opened for this host")]
    Address { host: String, ip: IpAddr, class: &'static str },
    #[error("could not connect to {host} ({addr}): {reason}")]
    Connect { host: String, addr: SocketAddr, reason: String },
    #[error("the TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// The TLS client configuration for a host: the web's roots, plus `extra_ca_pem`.
pub fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots.add(cert).map_err(|e| format!("not a CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no certificate in the file".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What `Connector` needs to know of the operator's rules, shared by every app.
pub(crate) struct ConnectPolicy {
    pub(crate) settings: EgressSettings,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) web_tls: Arc<rustls::ClientConfig>,
    /// Per `settings.hosts` entry, its TLS config when it names a CA.
    pub(crate) host_tls: Vec<Option<Arc<rustls::ClientConfig>>>,
    /// `settings.mocks`, checked.
    pub(crate) mocks: Vec<Mock>,
}

impl ConnectPolicy {
    /// The rule of `settings.hosts` for `host` and `partner`, by index.
    pub(crate) fn rule(&self, host: &str, partner: &str) -> Option<usize> {
        self.settings.hosts.iter().position(|r| r.applies(host, partner))
    }
}

/// The connector of one app's pooled client (a `tower::Service<Uri>`). The gate has
/// already decided the destination is allowed; this makes the connection safely.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) policy: Arc<ConnectPolicy>,
    pub(crate) partner: Arc<str>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectRefusal;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectRefusal>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.policy.clone();
        let partner = self.partner.clone();
        Box::pin(async move {
            // The call's deadline bounds the guest's wait; this bounds the socket, which
            // the pool may keep connecting after the call that asked for it is gone.
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&policy, &partner, &uri)).await {
                Ok(done) => done,
                Err(_) => {
                    Err(ConnectRefusal::Other(format!("connecting took longer than {} s", CONNECT_TIMEOUT.as_secs())))
                }
            }
        })
    }
}

async fn connect(policy: &ConnectPolicy, partner: &str, uri: &Uri) -> Result<Stream, ConnectRefusal> {
    let host = uri.host().ok_or_else(|| ConnectRefusal::Other("a request without a host".into()))?.to_string();
    let mut tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(ConnectRefusal::Other("only http and https are spoken".into())),
    };
    let mut port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let rule = policy.rule(&host, partner);
    let mut private_ok = rule.is_some_and(|i| policy.settings.hosts[i].private_addresses);
    let scheme = if tls { Scheme::Https } else { Scheme::Http };
    let mock = policy.mocks.iter().find(|m| m.destination.admits(scheme, &host, port));
    let addrs = match (mock, policy.settings.resolve.get(&host)) {
        // The operator named this stand-in (always loopback) for this destination.
        (Some(mock), _) => {
            port = mock.addr.port();
            private_ok = true;
            tls = mock.tls;
            vec![mock.addr.ip()]
        }
        (None, Some(fixed)) => fixed.clone(),
        (None, None) => {
            policy.resolver.resolve(&host, port).await.map_err(|_| ConnectRefusal::Dns { host: host.clone() })?
        }
    };
    if addrs.is_empty() {
        return Err(ConnectRefusal::Dns { host });
    }
    // Every address is checked before any is used: a name that answers one public and
    // one private address is refused whole, so the private one is never tried.
    if !private_ok && let Some((ip, class)) = addrs.iter().find_map(|ip| non_public(*ip).map(|c| (*ip, c))) {
        return Err(ConnectRefusal::Address { host, ip, class });
    }
    let mut last = None;
    let mut stream = None;
    for ip in addrs.iter().take(4) {
        let addr = SocketAddr::new(*ip, port);
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(ConnectRefusal::Connect { host: host.clone(), addr, reason: e.kind().to_string() }),
        }
    }
    let Some(tcp) = stream else {
        return Err(last.unwrap_or(ConnectRefusal::Dns { host }));
    };
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Stream::Plain(TokioIo::new(tcp)));
    }
    let config = rule.and_then(|i| policy.host_tls[i].clone()).unwrap_or_else(|| policy.web_tls.clone());
    let name =
        ServerName::try_from(host.clone()).map_err(|_| ConnectRefusal::Other(format!("{host:?} is not a name")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectRefusal::Tls { host, reason: tls_reason(&e) })?;
    Ok(Stream::Tls(Box::new(TokioIo::new(tls))))
}

/// A TLS failure in a few words (rustls's own text names the certificate problem).
fn tls_reason(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => format!("the certificate is not trusted ({c:?})"),
        Some(other) => other.to_string(),
        None => e.kind().to_string(),
    }
}

/// A connection to a destination, plain or TLS.
pub(crate) enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
