//! How pulls authenticate: the `WWW-Authenticate` challenge, the token flow (its realm
//! checked by the guard first) and the configured credentials.

use std::collections::BTreeMap;

use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde::Deserialize;

use super::RegistrySource;
use super::error::{Attempt, RemoteFailure};
use super::pull::read_capped;
use crate::artifact::{ArtifactError, BlobSource as _};

/// A token answer is a few KiB of JSON.
const TOKEN_ANSWER_CAP: u64 = 64 * 1024;

/// How pull requests of one repository authenticate.
#[derive(Clone)]
pub(super) enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    /// Parameter names in lowercase.
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted or token values). Public for
/// the fuzz targets (`tests/fuzz/`): a registry's header is hostile input.
pub fn parse_challenge(text: &str) -> Option<Challenge> {
    let text = text.trim();
    let (scheme, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = BTreeMap::new();
    rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { scheme: scheme.to_string(), params })
}

impl RegistrySource<'_> {
    pub(super) async fn authorization(&self) -> Result<Authorization, ArtifactError> {
        let mut cached = self.authorization.lock().await;
        if let Some(found) = &*cached {
            return Ok(found.clone());
        }
        let found = self.registry.pull(&self.name(), "authenticate", || self.authenticate()).await?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// `GET /v2/`; a Bearer challenge starts the token flow (realm checked first), a
    /// Basic one takes the configured credentials.
    async fn authenticate(&self) -> Result<Authorization, Attempt> {
        let registry = self.registry;
        if let RegistryAuth::Bearer(token) = &registry.auth {
            return Ok(Authorization::Bearer(token.clone()));
        }
        let resp = Self::send(registry.http.get(format!("{}/v2/", registry.base))).await?;
        if resp.status().is_success() {
            return Ok(Authorization::None);
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            let code = resp.status().as_u16();
            return Err(Attempt::status(RemoteFailure::Status(code), resp).await);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .collect();
        let basic = match &registry.auth {
            RegistryAuth::Basic(user, password) => Some((user.clone(), password.clone())),
            _ => None,
        };
        let Some(bearer) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")) else {
            return Ok(basic.map_or(Authorization::None, |(u, p)| Authorization::Basic(u, p)));
        };
        let Some(realm) = bearer.params.get("realm") else {
            return Err(Attempt::policy(RemoteFailure::Realm(
                "the registry asked for a token but named no token realm".into(),
            )));
        };
        let url = registry.guard.realm(realm).map_err(|words| Attempt {
            failure: RemoteFailure::Realm(words),
            detail: format!("token realm {realm:?} refused"),
        })?;
        let mut query = vec![("scope", format!("repository:{}:pull", self.repository))];
        if let Some(service) = bearer.params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut request = registry.http.get(url).query(&query);
        if let Some((user, password)) = &basic {
            request = request.basic_auth(user, Some(password));
        }
        let resp = Self::success(Self::send(request).await?, RemoteFailure::TokenStatus).await?;
        let invalid = || Attempt::policy(RemoteFailure::TokenInvalid);
        let body = read_capped(resp, TOKEN_ANSWER_CAP).await?.ok_or_else(invalid)?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| invalid())?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
            .ok_or_else(invalid)?;
        Ok(Authorization::Bearer(token))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = parse_challenge(r#"Basic realm="kiosk \"test\"""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("Basic", r#"kiosk "test""#));
        assert_eq!(parse_challenge("Bearer realm=https://a/t, service=x").unwrap().params["service"], "x");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }
}
