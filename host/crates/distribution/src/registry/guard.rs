//! The hops a registry client may make: normalised authorities, the redirect and
//! token-realm rules (`Guard`), and the resolver that refuses non-public addresses.

use std::net::SocketAddr;

use kiosk_domain::net::non_public;
use reqwest::Url;

use super::MAX_REDIRECTS;

/// `host[:port]`, normalised as a URL authority (lowercase host; a default port is
/// dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    pub(super) fn parse(text: &str) -> Option<Self> {
        if text.is_empty()
            || text.len() > 255
            || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return None;
        }
        let url = Url::parse(&format!("https://{text}/")).ok()?;
        Some(Self { host: url.host_str()?.to_ascii_lowercase(), port: url.port() })
    }

    /// Whether `url` is on this authority (no port: the scheme's default port).
    fn matches(&self, url: &Url) -> bool {
        let default = match url.scheme() {
            "https" => 443,
            "http" => 80,
            _ => return false,
        };
        url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port.unwrap_or(default))
    }
}

/// `scheme://host:port` of a URL, for messages (no path, query or credentials).
pub(super) fn origin(url: &Url) -> String {
    let host = kiosk_domain::text::sanitize_capped(url.host_str().unwrap_or("?"), 255);
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The hops one registry may make: its own authority, its listed blob and token hosts.
#[derive(Debug)]
pub(super) struct Guard {
    pub(super) registry: Authority,
    pub(super) blob_hosts: Vec<Authority>,
    pub(super) token_hosts: Vec<Authority>,
    pub(super) insecure: bool,
}

impl Guard {
    fn scheme_allowed(&self, url: &Url) -> bool {
        url.scheme() == "https" || (url.scheme() == "http" && self.insecure)
    }

    /// Whether a redirect to `next` (after `previous`) may be followed; else why not.
    pub(super) fn redirect(&self, next: &Url, previous: &[Url]) -> Result<(), String> {
        let target = origin(next);
        if previous.len() > MAX_REDIRECTS {
            return Err(format!("the registry redirected more than {MAX_REDIRECTS} times"));
        }
        if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
            return Err(format!(
                "the registry redirected from HTTPS to plain HTTP ({target}), which Kiosk never follows"
            ));
        }
        if !self.scheme_allowed(next) {
            return Err(format!("the registry redirected to {target}, which is not HTTPS"));
        }
        if self.registry.matches(next) || self.blob_hosts.iter().any(|h| h.matches(next)) {
            return Ok(());
        }
        Err(format!(
            "the registry redirected to {target}, a host the operator has not listed for this registry (blob-hosts)"
        ))
    }

    /// The token realm as a URL, if the rules allow fetching it; else why not.
    pub(super) fn realm(&self, realm: &str) -> Result<Url, String> {
        let url = Url::parse(realm).map_err(|_| "the registry's token realm is not a URL".to_string())?;
        let target = origin(&url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("the registry's token realm {target} carries credentials, which is refused"));
        }
        if !self.scheme_allowed(&url) {
            return Err(format!("the registry's token realm {target} is not HTTPS, which is refused"));
        }
        if !(self.registry.matches(&url) || self.token_hosts.iter().any(|h| h.matches(&url))) {
            return Err(format!(
                "the registry's token realm {target} is on a host the operator has not listed for this registry \
                 (token-hosts)"
            ));
        }
        Ok(url)
    }
}

/// A refusal made inside reqwest (redirect policy, resolver), found again in the error
/// chain by `classify`.
#[derive(Debug)]
pub(super) enum Refusal {
    Redirect(String),
    Address(String),
    Dns,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Redirect(words) | Refusal::Address(words) => f.write_str(words),
            Refusal::Dns => f.write_str("the name could not be resolved"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether `name` may resolve to non-public addresses without a flag: `localhost`.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The DNS resolver of registry clients: the system's resolver, then the address check.
/// The addresses checked are the addresses connected to (no second lookup).
#[derive(Debug)]
pub(super) struct GuardedResolver {
    pub(super) allow_private: bool,
    /// A tenant's registry: every address must be public or in one of these ranges,
    /// `localhost` included; `allow_private` is not consulted.
    pub(super) open_ranges: Option<std::sync::Arc<Vec<ipnet::IpNet>>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow = self.allow_private || is_localhost(&host);
        let open_ranges = self.open_ranges.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    tracing::warn!(%host, error = %e, "registry host name did not resolve");
                    Vec::new()
                }
            };
            if addrs.is_empty() {
                return Err(Box::new(Refusal::Dns) as Box<dyn std::error::Error + Send + Sync>);
            }
            if let Some(open) = &open_ranges {
                if let Some(class) = addrs.iter().find_map(|a| kiosk_domain::net::reachable(a.ip(), open).err()) {
                    tracing::warn!(%host, ?addrs, "a tenant's registry resolves to a non-public address; refused");
                    return Err(Box::new(Refusal::Address(format!(
                        "{} resolves to a {class} address, which Kiosk does not contact for a tenant unless the \
                         operator opens its range for the tenant",
                        kiosk_domain::text::sanitize_capped(&host, 255)
                    ))) as Box<dyn std::error::Error + Send + Sync>);
                }
            } else if !allow && let Some(class) = addrs.iter().find_map(|a| non_public(a.ip())) {
                tracing::warn!(%host, ?addrs, "registry host name resolves to a non-public address; refused");
                return Err(Box::new(Refusal::Address(format!(
                    "{} resolves to a {class} address, which Kiosk does not contact unless the operator marks \
                     the registry private-addresses",
                    kiosk_domain::text::sanitize_capped(&host, 255)
                ))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_named() {
        for (ip, class) in [
            ("127.0.0.1", Some("loopback")),
            ("127.9.9.9", Some("loopback")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("fd00::1", Some("private")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), class, "{ip}");
        }
        assert!(is_localhost("localhost") && is_localhost("Registry.LOCALHOST.") && !is_localhost("localhost.evil"));
    }

    fn guard(insecure: bool) -> Guard {
        Guard {
            registry: Authority::parse("registry.example").unwrap(),
            blob_hosts: vec![Authority::parse("blobs.example:8443").unwrap()],
            token_hosts: vec![Authority::parse("auth.example").unwrap()],
            insecure,
        }
    }

    #[test]
    fn redirects_stay_on_listed_hosts_and_never_downgrade() {
        let g = guard(false);
        let from = [Url::parse("https://registry.example/v2/acme/app/blobs/sha256:00").unwrap()];
        let ok = |u: &str| g.redirect(&Url::parse(u).unwrap(), &from);
        assert!(ok("https://registry.example/other").is_ok());
        assert!(ok("https://REGISTRY.example:443/other").is_ok());
        assert!(ok("https://blobs.example:8443/x").is_ok());
        assert!(ok("https://blobs.example/x").unwrap_err().contains("has not listed"));
        assert!(ok("http://registry.example/x").unwrap_err().contains("from HTTPS to plain HTTP"));
        assert!(ok("https://127.0.0.1:5000/x").unwrap_err().contains("https://127.0.0.1:5000"));
        assert!(ok("https://auth.example/x").is_err(), "token hosts are not blob hosts");
        // An insecure registry may use plain HTTP, but never after HTTPS.
        let g = guard(true);
        let plain = [Url::parse("http://registry.example/v2/").unwrap()];
        assert!(g.redirect(&Url::parse("http://registry.example/b").unwrap(), &plain).is_ok());
        assert!(g.redirect(&Url::parse("http://registry.example/b").unwrap(), &from).is_err());
    }

    #[test]
    fn token_realms_must_be_https_on_a_listed_host() {
        let g = guard(false);
        assert!(g.realm("https://registry.example/token").is_ok());
        assert!(g.realm("https://auth.example/token?x=1").is_ok());
        assert!(g.realm("http://auth.example/token").unwrap_err().contains("not HTTPS"));
        assert!(g.realm("https://169.254.169.254/latest").unwrap_err().contains("token-hosts"));
        assert!(g.realm("https://user:pw@auth.example/token").unwrap_err().contains("credentials"));
        assert!(g.realm("not a url").is_err());
        assert!(guard(true).realm("http://auth.example/token").is_ok());
    }

    /// A tenant's registry: a name resolving to loopback is refused, `localhost` too,
    /// unless every address it resolves to is in a range the operator opened.
    #[tokio::test]
    async fn a_tenants_names_resolve_only_to_public_or_opened_addresses() {
        use reqwest::dns::Resolve as _;
        let resolve = |open: Vec<&str>| {
            let open = open.into_iter().map(|r| kiosk_domain::net::parse_open_range(r).unwrap()).collect();
            let resolver = GuardedResolver { allow_private: true, open_ranges: Some(std::sync::Arc::new(open)) };
            resolver.resolve("localhost".parse().unwrap())
        };
        let refused = resolve(vec![]).await.err().expect("localhost is loopback");
        assert!(refused.to_string().contains("loopback"), "{refused}");
        let only_v4 = resolve(vec!["10.0.0.0/8"]).await;
        assert!(only_v4.is_err(), "a range that is not the address's opens nothing");
        let opened = resolve(vec!["127.0.0.0/8", "::1/128"]).await.expect("opened");
        assert!(opened.into_iter().all(|a| a.ip().is_loopback()));
    }
}
