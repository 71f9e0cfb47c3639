//! `[egress]` of the operator config: the operator's layer of the three (manifest →
//! operator → tenant, each only narrowing) and the bounds of outbound HTTP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use kiosk_domain::net::{Destination, HostPattern};
use serde::Deserialize;

/// `[egress]`. Each default is in `Default` with its reason.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EgressSettings {
    /// Whether 0.2.0 apps may send any request at all.
    pub enabled: bool,
    /// Only hosts listed in `[[egress.hosts]]` may be reached (else any public host an
    /// app declares, less `deny`).
    pub only_listed: bool,
    /// Hosts no app may reach, whatever it declares.
    pub deny: Vec<HostPattern>,
    /// Rules for named hosts: which partners, private addresses, plain HTTP, a CA.
    pub hosts: Vec<HostRule>,
    /// Names answered without DNS (like `/etc/hosts`): a local mock of a partner's API,
    /// a split-horizon name. The addresses are still checked.
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
    /// Declared destinations answered by a stand-in on this machine (a partner's local
    /// mock of its API; `kiosk run --mock`): the connection goes to a loopback address.
    pub mocks: Vec<MockRule>,
    /// Requests one call may send.
    pub max_requests_per_call: u32,
    /// Requests one call may have in flight at once.
    pub max_concurrent_requests_per_call: u32,
    /// Bytes of one request's body.
    pub max_request_body_bytes: u64,
    /// Bytes of one response's body the guest may read.
    pub max_response_body_bytes: u64,
    /// Header fields of one request or response.
    pub max_headers: u32,
    /// Bytes of one request's or response's header section.
    pub max_header_bytes: u32,
    /// Requests per second one tenant's calls may start (sustained), all apps together.
    pub tenant_requests_per_second: u32,
    /// Requests one tenant's calls may have in flight at once, all apps together.
    pub tenant_max_concurrent: u32,
    /// How long an idle pooled connection is kept for the next call.
    pub idle_connection_seconds: u64,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            // Safe by default: only what an app declares, only public addresses, only
            // HTTPS, and the tenant sees it before installing.
            enabled: true,
            // Declared public hosts are the partner's own business; an operator who vets
            // every host sets this.
            only_listed: false,
            deny: Vec::new(),
            hosts: Vec::new(),
            resolve: BTreeMap::new(),
            // Stand-ins are for a partner's own machine and tests, named one by one.
            mocks: Vec::new(),
            // A call is one interactive step: a handful of API round trips.
            max_requests_per_call: 32,
            // Enough for a fan-out to a few endpoints; a call cannot open hundreds.
            max_concurrent_requests_per_call: 8,
            // A JSON API request or a webhook payload.
            max_request_body_bytes: 1024 * 1024,
            // A page of an API's answer; a 1 GiB response is cut here.
            max_response_body_bytes: 8 * 1024 * 1024,
            // Real APIs send a few dozen headers.
            max_headers: 100,
            // Far above any real header section, far below a memory problem.
            max_header_bytes: 64 * 1024,
            // 100 requests per second per tenant is a busy integration, not a flood.
            tenant_requests_per_second: 100,
            // Bounds the sockets one tenant holds open at once.
            tenant_max_concurrent: 32,
            // Long enough for the next call to reuse the connection (no handshake).
            idle_connection_seconds: 30,
        }
    }
}

/// `[[egress.hosts]]`: what the operator says of one host (or `*.` domain).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostRule {
    pub host: HostPattern,
    /// Only these partners' apps may reach it (absent: any partner that declares it).
    #[serde(default)]
    pub partners: Option<Vec<String>>,
    /// It may resolve to loopback, private or link-local addresses (an on-premises
    /// service, a local mock). Only the operator can say so, and only by name.
    #[serde(default)]
    pub private_addresses: bool,
    /// Plain `http://` is allowed to it.
    #[serde(default)]
    pub http: bool,
    /// PEM file of CA certificates its TLS certificate may chain to, besides the web's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[[egress.mocks]]`: requests to `destination` (as the app declares it) are sent to
/// `to`, an `http://` or `https://` loopback address with its port. The request keeps
/// the declared name in `Host` (and, over `https://`, in SNI, verified against the
/// host's `ca-file`). Only loopback: a mock is never a way around the address checks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MockRule {
    pub destination: String,
    pub to: String,
}

/// A checked `[[egress.mocks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Mock {
    pub destination: Destination,
    /// Whether the stand-in speaks TLS.
    pub tls: bool,
    pub addr: SocketAddr,
}

impl MockRule {
    /// Parses `destination = "https://api.acme.example"`, `to = "http://127.0.0.1:8080"`;
    /// an error names the entry and what is wrong.
    pub fn parse(&self) -> Result<Mock, String> {
        let named = |why: String| format!("egress.mocks {:?}: {why}", self.destination);
        let destination = Destination::parse(&self.destination).map_err(named)?;
        if destination.host.to_string().starts_with("*.") {
            return Err(named("a mock stands in for one host, not a `*.` pattern".into()));
        }
        let (tls, rest) = if let Some(rest) = self.to.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = self.to.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(named(format!("to {:?} must be http://127.0.0.1:<port> (or https://, or [::1])", self.to)));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| named(format!("to {:?} must be a loopback address and port, e.g. 127.0.0.1:8080", self.to)))?;
        if !addr.ip().is_loopback() {
            return Err(named(format!("to {:?} is not a loopback address; a mock runs on this machine", self.to)));
        }
        Ok(Mock { destination, tls, addr })
    }
}

impl HostRule {
    /// Whether the rule is about `host` for apps of `partner`.
    pub fn applies(&self, host: &str, partner: &str) -> bool {
        self.host.matches(host) && self.partners.as_ref().is_none_or(|p| p.iter().any(|x| x == partner))
    }
}

impl EgressSettings {
    /// Checks the bounds; an error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value, max) in [
            ("max-requests-per-call", u64::from(self.max_requests_per_call), 10_000),
            ("max-concurrent-requests-per-call", u64::from(self.max_concurrent_requests_per_call), 1_000),
            ("max-request-body-bytes", self.max_request_body_bytes, 1 << 30),
            ("max-response-body-bytes", self.max_response_body_bytes, 1 << 30),
            ("max-headers", u64::from(self.max_headers), 1_000),
            ("max-header-bytes", u64::from(self.max_header_bytes), 1 << 20),
            ("tenant-requests-per-second", u64::from(self.tenant_requests_per_second), 1_000_000),
            ("tenant-max-concurrent", u64::from(self.tenant_max_concurrent), 100_000),
            ("idle-connection-seconds", self.idle_connection_seconds, 3_600),
        ] {
            if value == 0 || value > max {
                return Err(format!("egress.{name} is {value} but must be 1-{max}"));
            }
        }
        for mock in &self.mocks {
            mock.parse()?;
        }
        for (name, addrs) in &self.resolve {
            if !kiosk_domain::net::is_dns_name(name.trim_end_matches('.')) || addrs.is_empty() {
                return Err(format!(
                    "egress.resolve: {name:?} must be a lowercase host name with at least one address"
                ));
            }
        }
        Ok(())
    }
}
