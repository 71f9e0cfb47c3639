//! What an app declares it may reach (`capabilities.outbound` of a 0.2.0 manifest), the
//! SKUs the host meters on outbound traffic, and the secret placeholders a 0.2.0 app
//! holds instead of its tenants' secrets. Pure: the runtime's `egress` module enforces.

use serde::Deserialize;

use crate::net::Destination;

/// Most outbound entries one manifest may declare.
pub const MAX_OUTBOUND_ENTRIES: usize = 32;
/// Most secrets one entry may bind.
pub const MAX_BOUND_SECRETS: usize = 16;
/// Longest JSON pointer a manifest may name, bytes.
pub const MAX_POINTER_BYTES: usize = 256;

/// One `capabilities.outbound` entry as written: a fixed destination or the config
/// pointer of a URL the tenant sets, and the secrets bound to it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundEntry {
    /// `scheme://host[:port]` (`*.` at most as the first label; no path).
    #[serde(default)]
    pub destination: Option<String>,
    /// A JSON pointer into the installation's configuration whose value, a URL the
    /// tenant enters (e.g. a webhook), is a destination for that installation only.
    #[serde(default)]
    pub config_url: Option<String>,
    /// JSON pointers of `writeOnly` configuration values the host may put into this
    /// destination's request headers in place of their placeholders.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// A checked outbound entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub target: Target,
    pub secrets: Vec<String>,
}

/// Where an outbound entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Fixed(Destination),
    /// The pointer of a URL in the installation's configuration.
    ConfigUrl(String),
}

impl Target {
    /// How the tenant names this entry when narrowing an installation's egress: the
    /// destination as the host writes it (`https://api.acme.example`), or
    /// `config:<pointer>` for a configured URL.
    pub fn key(&self) -> String {
        match self {
            Target::Fixed(d) => d.to_string(),
            Target::ConfigUrl(p) => format!("config:{p}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Fixed(d) => d.fmt(f),
            Target::ConfigUrl(p) => write!(f, "the URL the tenant sets at {p}"),
        }
    }
}

/// What `to` may reach that `from` may not: each entry of `to` whose target `from` does
/// not declare, or to which `to` binds a secret `from` does not, as the tenant would be
/// told ("https://api.acme.example (receives /apiKey)"). Empty when `to` widens nothing,
/// so moving an installation from `from` to `to` needs no new consent.
pub fn widening(from: &[Outbound], to: &[Outbound]) -> Vec<String> {
    to.iter()
        .filter(|entry| {
            !from.iter().any(|old| old.target == entry.target && entry.secrets.iter().all(|s| old.secrets.contains(s)))
        })
        .map(|entry| match entry.secrets.as_slice() {
            [] => entry.target.to_string(),
            secrets => format!("{} (receives {})", entry.target, secrets.join(", ")),
        })
        .collect()
}

/// How the host meters a SKU on outbound traffic (`skus[].outbound`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SkuOutbound {
    /// A destination the manifest declares (`capabilities.outbound[].destination`).
    pub destination: String,
    pub per: EgressUnit,
}

/// The unit of an egress-metered SKU.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EgressUnit {
    /// One unit per request that got a response.
    Request,
    /// One unit per KiB (1,024 bytes, rounded up per call) of response bodies received.
    KibReceived,
}

/// Checks `capabilities.outbound`; an error is (field path, rule).
pub fn check_entries(entries: &[OutboundEntry]) -> Result<Vec<Outbound>, (String, String)> {
    if entries.len() > MAX_OUTBOUND_ENTRIES {
        return Err((
            "capabilities.outbound".into(),
            format!("{} entries; at most {MAX_OUTBOUND_ENTRIES} are accepted", entries.len()),
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = |field: &str| format!("capabilities.outbound[{i}].{field}");
        let target = match (&e.destination, &e.config_url) {
            (Some(d), None) => Target::Fixed(Destination::parse(d).map_err(|rule| (at("destination"), rule))?),
            (None, Some(p)) => {
                check_pointer(p).map_err(|rule| (at("configUrl"), rule))?;
                Target::ConfigUrl(p.clone())
            }
            _ => {
                return Err((
                    format!("capabilities.outbound[{i}]"),
                    "needs exactly one of `destination` and `configUrl`".into(),
                ));
            }
        };
        if e.secrets.len() > MAX_BOUND_SECRETS {
            return Err((at("secrets"), format!("at most {MAX_BOUND_SECRETS} secrets per destination")));
        }
        for (j, p) in e.secrets.iter().enumerate() {
            check_pointer(p).map_err(|rule| (format!("capabilities.outbound[{i}].secrets[{j}]"), rule))?;
        }
        if out.iter().any(|o: &Outbound| o.target == target) {
            return Err((at("destination"), format!("{target} is declared twice")));
        }
        out.push(Outbound { target, secrets: e.secrets.clone() });
    }
    Ok(out)
}

/// A JSON pointer a manifest may name: `/` then up to 255 bytes, no braces (they
/// delimit placeholders), no control characters.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.len() > MAX_POINTER_BYTES {
        return Err(format!("{p:?} must be a JSON pointer (starting with '/') of at most {MAX_POINTER_BYTES} bytes"));
    }
    if p.contains(['{', '}']) || p.chars().any(char::is_control) {
        return Err(format!("{p:?} may not contain braces or control characters"));
    }
    Ok(())
}

/// What a 0.2.0 app receives in place of the secret at `pointer`.
pub fn placeholder(pointer: &str) -> String {
    format!("{PLACEHOLDER_OPEN}{pointer}}}")
}

const PLACEHOLDER_OPEN: &str = "{kiosk-secret:";

/// Replaces the placeholders in `text` whose pointer `value_of` knows (the secrets bound
/// to the request's destination); others stay as they are. Returns the text and the
/// pointers substituted, or `None` if `text` has no placeholder at all.
pub fn substitute<'a>(text: &str, value_of: impl Fn(&str) -> Option<&'a str>) -> Option<(String, Vec<String>)> {
    if !text.contains(PLACEHOLDER_OPEN) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + PLACEHOLDER_OPEN.len()..];
        match after.find('}') {
            Some(end) => {
                let pointer = &after[..end];
                match value_of(pointer) {
                    Some(value) => {
                        out.push_str(value);
                        used.push(pointer.to_string());
                    }
                    None => out.push_str(&rest[start..start + PLACEHOLDER_OPEN.len() + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Some((out, used))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_only_when_bound() {
        let p = placeholder("/apiKey");
        assert_eq!(p, "{kiosk-secret:/apiKey}");
        let bound = |ptr: &str| (ptr == "/apiKey").then_some("s3cret");
        let (text, used) = substitute(&format!("Bearer {p}"), bound).unwrap();
        assert_eq!((text.as_str(), used), ("Bearer s3cret", vec!["/apiKey".to_string()]));
        let (text, used) = substitute("{kiosk-secret:/other} {kiosk-secret:", bound).unwrap();
        assert_eq!(text, "{kiosk-secret:/other} {kiosk-secret:");
        assert!(used.is_empty());
        assert!(substitute("plain", bound).is_none());
    }

    #[test]
    fn widening_names_new_destinations_and_newly_bound_secrets() {
        let entry = |d: &str, secrets: &[&str]| OutboundEntry {
            destination: Some(d.to_string()),
            config_url: None,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        };
        let old = check_entries(&[entry("https://api.acme.example", &["/apiKey"])]).unwrap();
        let same = check_entries(&[entry("https://api.acme.example", &[])]).unwrap();
        assert!(widening(&old, &same).is_empty(), "fewer secrets widen nothing");
        assert!(widening(&old, &old).is_empty());
        let more = check_entries(&[
            entry("https://api.acme.example", &["/apiKey", "/other"]),
            entry("https://new.acme.example", &[]),
        ])
        .unwrap();
        assert_eq!(
            widening(&old, &more),
            ["https://api.acme.example (receives /apiKey, /other)", "https://new.acme.example"]
        );
        assert_eq!(widening(&[], &old), ["https://api.acme.example (receives /apiKey)"]);
    }

    #[test]
    fn entries_name_the_bad_field() {
        let entry = |d: Option<&str>, c: Option<&str>| OutboundEntry {
            destination: d.map(str::to_string),
            config_url: c.map(str::to_string),
            secrets: vec![],
        };
        assert!(check_entries(&[entry(Some("https://api.acme.example"), None), entry(None, Some("/hook"))]).is_ok());
        let (field, rule) = check_entries(&[entry(Some("https://10.0.0.1"), None)]).unwrap_err();
        assert_eq!(field, "capabilities.outbound[0].destination");
        assert!(rule.contains("address"), "{rule}");
        let (field, _) = check_entries(&[entry(None, None)]).unwrap_err();
        assert_eq!(field, "capabilities.outbound[0]");
        let (field, _) = check_entries(&[entry(None, Some("hook"))]).unwrap_err();
        assert_eq!(field, "capabilities.outbound[0].configUrl");
    }
}
