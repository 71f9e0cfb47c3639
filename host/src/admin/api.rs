//! The HTTP side of `kiosk admin`: the request a command makes, what to print of its
//! answer (`Shape`), and the client that sends it with the operator's token.

use anyhow::Context;
use reqwest::{Method, Url};
use serde_json::Value;

use kiosk_domain::text::sanitize_capped;

/// What to print of an answer.
pub(super) enum Shape {
    /// A list: follow `next`, print these columns (header, JSON member).
    List(&'static [(&'static str, &'static str)]),
    /// The first page of a list only (the audit log: the newest records).
    Page(&'static [(&'static str, &'static str)]),
    /// One object: every member, one row each.
    Object,
    /// Log lines: `atMs callId level message`.
    Logs,
    /// Nothing but this line (e.g. a 204).
    Done(String),
}

pub(super) struct Request {
    pub(super) method: Method,
    pub(super) path: Vec<String>,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) body: Option<Value>,
    pub(super) shape: Shape,
}

impl Request {
    pub(super) fn get(path: &[&str], shape: Shape) -> Self {
        Self::new(Method::GET, path, None, shape)
    }

    /// A POST whose answer is one object.
    pub(super) fn post(path: &[&str], body: Option<Value>) -> Self {
        Self::new(Method::POST, path, body, Shape::Object)
    }

    pub(super) fn new(method: Method, path: &[&str], body: Option<Value>, shape: Shape) -> Self {
        Self { method, path: path.iter().map(|s| s.to_string()).collect(), query: Vec::new(), body, shape }
    }

    pub(super) fn query(mut self, name: &'static str, value: Option<String>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value));
        }
        self
    }
}

/// `partner/name` → its two path segments (the API checks the names).
pub(super) fn app_segments(app: &str) -> anyhow::Result<(&str, &str)> {
    app.split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty() && !n.contains('/'))
        .with_context(|| format!("app {app:?} must be `partner/name`"))
}

/// An API problem, printed as the command's error.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
struct ApiProblem {
    detail: String,
}

/// Kiosk's API at `base` with a bearer token (`kiosk admin`, `kiosk catalog export`).
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) token: String,
}

impl Client {
    /// `base` with `path` as its (percent-encoded) segments and `query`.
    pub(crate) fn url<S: AsRef<str>, Q: AsRef<str>>(&self, path: &[S], query: &[(&str, Q)]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One request; a problem answer becomes an `ApiProblem` naming its type.
    pub(super) async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> anyhow::Result<Option<Value>> {
        let mut request = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach Kiosk at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{url} did not answer JSON"));
        }
        let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |name: &str| problem.get(name).and_then(Value::as_str).map(|s| sanitize_capped(s, 2048));
        let kind = text("type").map(|t| t.trim_start_matches("urn:kiosk:problem:").to_string());
        let mut detail =
            format!("{} {}", status.as_u16(), text("detail").or_else(|| text("title")).unwrap_or_default());
        if let Some(kind) = kind {
            detail.push_str(&format!(" ({kind})"));
        }
        if let Some(field) = text("field") {
            detail.push_str(&format!(" [field: {field}]"));
        }
        Err(ApiProblem { detail }.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn app_must_be_partner_slash_name() {
        assert_eq!(app_segments("acme/pacing").unwrap(), ("acme", "pacing"));
        for bad in ["acme", "/x", "acme/", "a/b/c"] {
            assert!(app_segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        let client = Client {
            http: reqwest::Client::new(),
            base: Url::parse("http://127.0.0.1:8080/").unwrap(),
            token: String::new(),
        };
        let url = client.url(&["v1", "registries", "reg.local:5000/../x"], &[] as &[(&str, &str)]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/registries/reg.local:5000%2F..%2Fx");
    }
}
