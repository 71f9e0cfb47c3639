//! Failures talking to a registry, in Kiosk's words (`RemoteFailure`, `RemoteError`),
//! and how one failed attempt is classified from reqwest's error chain.

use reqwest::Response;

use super::MAX_REDIRECTS;
use super::guard::{Refusal, origin};

/// What went wrong talking to a registry, in Kiosk's words: never a remote body or a
/// remote error text (those go to the server log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The registry answered with this HTTP status.
    Status(u16),
    /// The registry's token service answered with this HTTP status.
    TokenStatus(u16),
    /// The token service's answer held no usable token.
    TokenInvalid,
    Timeout,
    ConnectionRefused,
    Dns,
    Tls {
        certificate: bool,
    },
    /// Kiosk spoke TLS and the registry answered in plain HTTP.
    PlainHttp,
    Connection,
    /// The connection broke off while the answer was being read.
    Interrupted,
    /// A redirect the rules refuse (the words say which rule).
    Redirect(String),
    /// A token realm the rules refuse.
    Realm(String),
    /// A host name that resolves to an address the rules refuse.
    Address(String),
}

fn status_words(code: u16) -> &'static str {
    match code {
        400 => "bad request",
        401 => "not authorized",
        403 => "forbidden",
        404 => "not found",
        429 => "too many requests",
        500..=599 => "server error",
        _ => "unexpected status",
    }
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(code) => write!(f, "the registry answered HTTP {code} ({})", status_words(*code)),
            Self::TokenStatus(code) => {
                write!(f, "the registry's token service answered HTTP {code} ({})", status_words(*code))
            }
            Self::TokenInvalid => f.write_str("the registry's token service answered without a usable token"),
            Self::Timeout => f.write_str("no answer in time (timeout)"),
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::Dns => f.write_str("the host name could not be resolved (DNS)"),
            Self::Tls { certificate: true } => {
                f.write_str("TLS failed: the registry's certificate is not trusted or not valid for it")
            }
            Self::Tls { certificate: false } => f.write_str("TLS handshake failed"),
            Self::PlainHttp => f.write_str(
                "TLS handshake failed: the registry answered in plain HTTP — if this registry is plain HTTP, mark it \
                 insecure (`insecure = true`, or `\"insecure\": true` in PUT /v1/registries/{host})",
            ),
            Self::Connection => f.write_str("the connection failed"),
            Self::Interrupted => f.write_str("the connection broke off during the transfer"),
            Self::Redirect(words) | Self::Realm(words) | Self::Address(words) => f.write_str(words),
        }
    }
}

impl RemoteFailure {
    /// Worth another attempt.
    pub fn transient(&self) -> bool {
        match self {
            Self::Status(code) | Self::TokenStatus(code) => *code == 429 || *code >= 500,
            Self::Timeout | Self::ConnectionRefused | Self::Dns | Self::Connection | Self::Interrupted => true,
            _ => false,
        }
    }

    /// A rule of the operator's allowlist refused a hop (redirect, realm, address).
    pub fn is_policy(&self) -> bool {
        matches!(self, Self::Redirect(_) | Self::Realm(_) | Self::Address(_))
    }

    /// The registry (or its token service) answered and refused (4xx other than 429).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status(c) | Self::TokenStatus(c) if (400..500).contains(c) && *c != 429)
            || *self == Self::TokenInvalid
    }
}

/// A registry request that failed for good.
#[derive(Debug)]
pub struct RemoteError {
    /// `host/repository`.
    pub source_name: String,
    /// What Kiosk was doing (`resolve tag 1.4.34`, `fetch component sha256:…`).
    pub what: String,
    pub failure: RemoteFailure,
    pub attempts: u32,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.source_name, self.what, self.failure)?;
        if self.failure.transient() {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// One failed attempt: the failure in Kiosk's words, and details for the server log.
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) failure: RemoteFailure,
    pub(super) detail: String,
}

impl Attempt {
    pub(super) fn transport(e: &reqwest::Error) -> Self {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        Self { failure: classify(e), detail }
    }

    /// A non-2xx answer: the status in Kiosk's words; the start of the body to the log.
    pub(super) async fn status(failure: RemoteFailure, mut resp: Response) -> Self {
        let mut body = Vec::new();
        while body.len() < 1024 {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let detail = format!(
            "{} answered {}; body: {}",
            origin(resp.url()),
            resp.status(),
            kiosk_domain::text::sanitize_capped(&String::from_utf8_lossy(&body), 512)
        );
        Self { failure, detail }
    }

    pub(super) fn policy(failure: RemoteFailure) -> Self {
        let detail = failure.to_string();
        Self { failure, detail }
    }
}

/// Kiosk's words for a transport error (the error chain is walked, never shown).
fn classify(e: &reqwest::Error) -> RemoteFailure {
    let mut tls = None;
    let mut plain_http = false;
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return match refusal {
                Refusal::Redirect(words) => RemoteFailure::Redirect(words.clone()),
                Refusal::Address(words) => RemoteFailure::Address(words.clone()),
                Refusal::Dns => RemoteFailure::Dns,
            };
        }
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            tls = Some(matches!(t, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented));
            // An HTTP answer is not a TLS record: its first byte is no TLS content type.
            plain_http |= matches!(t, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = err.source();
    }
    if e.is_timeout() {
        RemoteFailure::Timeout
    } else if plain_http {
        RemoteFailure::PlainHttp
    } else if let Some(certificate) = tls {
        RemoteFailure::Tls { certificate }
    } else if refused {
        RemoteFailure::ConnectionRefused
    } else if e.is_dns() {
        RemoteFailure::Dns
    } else if e.is_redirect() {
        RemoteFailure::Redirect(format!("the registry redirected more than {MAX_REDIRECTS} times"))
    } else if e.is_body() || e.is_decode() {
        RemoteFailure::Interrupted
    } else {
        RemoteFailure::Connection
    }
}
