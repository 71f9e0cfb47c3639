//! A sink's HTTP client, under the address rules of outbound HTTP: the name resolved
//! once (the operator's `[egress] resolve` entries first, as for apps), every address
//! checked — loopback, private, link-local and the rest refused unless the sink is
//! `private-addresses` — and the checked addresses the ones connected to; no redirect
//! followed, no proxy, HTTPS unless the sink allows `http`, the web's roots plus the
//! sink's `ca-file`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::settings::SinkSettings;

/// Resolution, connection and handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct SinkResolver {
    fixed: Arc<BTreeMap<String, Vec<IpAddr>>>,
    private_ok: bool,
}

/// Why a name was refused, found again in the error chain by `describe`.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl reqwest::dns::Resolve for SinkResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let fixed = self.fixed.get(&host).cloned();
        let private_ok = self.private_ok;
        Box::pin(async move {
            let ips: Vec<IpAddr> = match fixed {
                Some(ips) => ips,
                None => match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(found) => found.map(|a| a.ip()).collect(),
                    Err(_) => Vec::new(),
                },
            };
            let shown = kiosk_domain::text::sanitize_capped(&host, 255);
            if ips.is_empty() {
                return Err(Box::new(Refused(format!("{shown} could not be resolved")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            if !private_ok
                && let Some((ip, class)) = ips.iter().find_map(|ip| kiosk_domain::net::non_public(*ip).map(|c| (ip, c)))
            {
                return Err(Box::new(Refused(format!(
                    "{shown} resolves to {ip}, a {class} address; the sink must be private-addresses to reach it"
                ))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

/// The client of `sink`; an error names the setting at fault.
pub(super) fn build(sink: &SinkSettings, resolve: &BTreeMap<String, Vec<IpAddr>>) -> Result<reqwest::Client, String> {
    let at = format!("[[sinks]] {:?}", sink.name);
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .https_only(!sink.http)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(SinkResolver { fixed: Arc::new(resolve.clone()), private_ok: sink.private_addresses })
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(sink.timeout_seconds))
        .user_agent(concat!("kiosk-usage-export/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &sink.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("{at}: ca-file {} cannot be read ({})", path.display(), e.kind()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| format!("{at}: ca-file {} holds no PEM certificate", path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| format!("{at}: the HTTP client cannot be built ({e})"))
}

/// A failed request in Kiosk's words: the refusal if the resolver refused, else what
/// kind of failure (never the remote's text).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        source = err.source();
    }
    if e.is_timeout() {
        "the receiver did not answer in time".into()
    } else if e.is_connect() {
        "the receiver could not be reached".into()
    } else {
        "the request to the receiver failed".into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sink(endpoint: &str, private_addresses: bool) -> SinkSettings {
        let text = format!(
            "name = \"om\"\nkind = \"cloudevents\"\nendpoint = \"{endpoint}\"\nsecret-env = \"K\"\n\
             private-addresses = {private_addresses}\ntimeout-seconds = 2\n"
        );
        toml::from_str(&text).unwrap()
    }

    /// A name the operator maps to loopback, or that resolves there, is refused before
    /// any connection unless the sink is `private-addresses`; the refusal names it.
    #[tokio::test]
    async fn names_resolving_to_private_addresses_need_the_sinks_flag() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mut resolve = BTreeMap::new();
        resolve.insert("billing.test".to_string(), vec!["127.0.0.1".parse().unwrap()]);
        resolve.insert("meta.test".to_string(), vec!["8.8.8.8".parse().unwrap(), "169.254.169.254".parse().unwrap()]);
        for (host, words) in [
            ("billing.test", "billing.test resolves to 127.0.0.1, a loopback address"),
            ("meta.test", "meta.test resolves to 169.254.169.254, a link-local address"),
            ("localhost", "a loopback address"),
        ] {
            let s = sink(&format!("http://{host}:{port}/e"), false);
            let client = build(&SinkSettings { http: true, ..s }, &resolve).unwrap();
            let error = client.post(format!("http://{host}:{port}/e")).send().await.unwrap_err();
            let said = describe(&error);
            assert!(said.contains(words), "{host}: {said}");
        }
        assert!(listener.accept().is_err(), "nothing connected to the loopback listener");
        // With the flag the same name is reached (and refused by nobody but the receiver).
        let s = sink(&format!("http://billing.test:{port}/e"), true);
        let client = build(&SinkSettings { http: true, ..s }, &resolve).unwrap();
        let sent = tokio::spawn(async move { client.post(format!("http://billing.test:{port}/e")).send().await });
        listener.set_nonblocking(false).unwrap();
        let accepted = tokio::task::spawn_blocking(move || listener.accept().is_ok());
        assert!(accepted.await.unwrap(), "the flagged sink connected");
        sent.abort();
    }

    #[tokio::test]
    async fn https_only_unless_the_sink_allows_http() {
        let resolve = BTreeMap::new();
        let client = build(&sink("https://billing.example/e", false), &resolve).unwrap();
        let error = client.post("http://billing.example/e").send().await.unwrap_err();
        assert!(error.is_builder(), "plain http is refused before any lookup: {error}");
        let bad_ca = SinkSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..sink("https://b.example/", false) };
        assert!(build(&bad_ca, &resolve).unwrap_err().contains("ca-file /nonexistent/ca.pem cannot be read"));
    }
}
