//! The manifest's optional catalog metadata (SPEC §3): who publishes the app (a display
//! name and https links) and what changed in this version (plain text). Both are signed
//! with the rest of the manifest and shown by the catalog and the console, so each is
//! checked here at registration: bounded, free of control characters, links https only.
//! The icon is a layer of its own (`kiosk_distribution::icon`), not a manifest field.

use serde::{Deserialize, Serialize};

/// Longest publisher name, in characters: a company or team name fits a catalog card.
pub const MAX_PUBLISHER_NAME_CHARS: usize = 100;

/// Longest publisher link, bytes: ample for a documentation or support URL, and what
/// browsers and proxies accept without trouble.
pub const MAX_LINK_BYTES: usize = 2048;

/// Largest changelog, bytes: the notes of one release (several screens of text), small
/// enough to list a few versions' notes before an upgrade.
pub const MAX_CHANGELOG_BYTES: usize = 16 * 1024;

/// Who publishes the app, as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publisher {
    /// Display name (plain text).
    pub name: String,
    /// The publisher's or the app's web page (`https://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// Where tenants get help (`https://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support: Option<String>,
}

/// A field at fault and the rule it breaks: (`publisher.homepage`, `must start with https://`).
pub type Refusal = (String, String);

fn refuse(field: &str, rule: impl Into<String>) -> Refusal {
    (field.to_string(), rule.into())
}

/// Checks the optional `publisher` and `changelog` of a manifest.
pub fn check(publisher: Option<&Publisher>, changelog: Option<&str>) -> Result<(), Refusal> {
    if let Some(p) = publisher {
        check_publisher(p)?;
    }
    if let Some(text) = changelog {
        check_changelog(text)?;
    }
    Ok(())
}

/// `publisher.name`: 1-100 characters, not blank, no control or bidirectional-override
/// characters (U+0000 included); `publisher.homepage` and `publisher.support`: see
/// [`check_link`].
pub fn check_publisher(p: &Publisher) -> Result<(), Refusal> {
    let field = "publisher.name";
    if p.name.trim().is_empty() {
        return Err(refuse(field, "must not be empty"));
    }
    let chars = p.name.chars().count();
    if chars > MAX_PUBLISHER_NAME_CHARS {
        return Err(refuse(field, format!("is {chars} characters; at most {MAX_PUBLISHER_NAME_CHARS} are accepted")));
    }
    if let Some(c) = p.name.chars().find(|c| hidden(*c)) {
        return Err(refuse(
            field,
            format!("holds the control character U+{:04X}; a name is one line of visible text", u32::from(c)),
        ));
    }
    for (field, link) in [("publisher.homepage", &p.homepage), ("publisher.support", &p.support)] {
        if let Some(link) = link {
            check_link(link).map_err(|rule| refuse(field, rule))?;
        }
    }
    Ok(())
}

/// `changelog`: plain text (shown as text, never as HTML), at most 16 KiB, not blank, no
/// control characters but line feed and tab, no bidirectional overrides.
pub fn check_changelog(text: &str) -> Result<(), Refusal> {
    let field = "changelog";
    if text.trim().is_empty() {
        return Err(refuse(field, "must not be empty (leave the field out instead)"));
    }
    if text.len() > MAX_CHANGELOG_BYTES {
        return Err(refuse(field, format!("is {} bytes; at most {MAX_CHANGELOG_BYTES} are accepted", text.len())));
    }
    if let Some(c) = text.chars().find(|c| !matches!(c, '\n' | '\t') && hidden(*c)) {
        return Err(refuse(
            field,
            format!(
                "holds the control character U+{:04X}; plain text takes line feeds (\\n) and tabs only",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A link a catalog may show: `https://`, a lowercase DNS host name (no user
/// information, no address literal), an optional port, then a path, query or fragment of
/// URL characters only (RFC 3986: no spaces, quotes, angle brackets or backslashes;
/// `%` only as an escape), at most 2048 bytes. Returns the rule it breaks.
pub fn check_link(link: &str) -> Result<(), String> {
    if link.len() > MAX_LINK_BYTES {
        return Err(format!("is {} bytes; at most {MAX_LINK_BYTES} are accepted", link.len()));
    }
    let Some(rest) = link.strip_prefix("https://") else {
        return Err("must be an absolute https:// URL (no other scheme is shown)".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("must not carry user information (`user@`)".into());
    }
    let (host, _port) = crate::net::split_port(authority).map_err(|e| format!("has a bad host: {e}"))?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if crate::net::ip_literal(host).is_some() || host.starts_with('[') {
        return Err("must name its host by a DNS name, not an address".into());
    }
    if !crate::net::is_dns_name(host) || !host.contains('.') {
        return Err("must name a host: lowercase letters, digits and '-' in dot-separated labels (at least two)".into());
    }
    let bytes = tail.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/?#[]".contains(&b)
            || (b == b'%' && bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
        if !ok {
            return Err(format!(
                "holds {:?}, which a URL carries only percent-encoded",
                char::from(b).escape_default().to_string()
            ));
        }
    }
    Ok(())
}

/// Control characters (U+0000 included) and the bidirectional controls
/// (`text::sanitize` removes the same).
fn hidden(c: char) -> bool {
    crate::text::sanitize(c.encode_utf8(&mut [0; 4])).is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn publisher(name: &str, homepage: Option<&str>) -> Publisher {
        Publisher { name: name.into(), homepage: homepage.map(Into::into), support: None }
    }

    #[test]
    fn links_are_https_with_a_host_and_url_characters_only() {
        for good in [
            "https://acme.example",
            "https://acme.example/",
            "https://www.acme.example:8443/apps/budget-pacing?ref=kiosk#top",
            "https://acme.example/a%20b/(x)",
        ] {
            assert_eq!(check_link(good), Ok(()), "{good}");
        }
        for (bad, rule) in [
            ("http://acme.example", "https://"),
            ("javascript:alert(1)", "https://"),
            ("HTTPS://acme.example", "https://"),
            ("//acme.example", "https://"),
            ("https://user:pw@acme.example/", "user information"),
            ("https://127.0.0.1/", "not an address"),
            ("https://[::1]/", "not an address"),
            ("https://localhost/", "at least two"),
            ("https://Acme.example/", "lowercase"),
            ("https://acme.example/a b", "percent-encoded"),
            ("https://acme.example/\"onmouseover=x", "percent-encoded"),
            ("https://acme.example/<script>", "percent-encoded"),
            ("https://acme.example/%zz", "percent-encoded"),
            ("https://acme.example:0/", "bad host"),
        ] {
            let err = check_link(bad).unwrap_err();
            assert!(err.contains(rule), "{bad}: {err}");
        }
        let long = format!("https://acme.example/{}", "a".repeat(MAX_LINK_BYTES));
        assert!(check_link(&long).unwrap_err().contains("at most 2048"));
    }

    #[test]
    fn publisher_names_are_one_line_of_bounded_text() {
        assert_eq!(check_publisher(&publisher("<img src=x onerror=alert(1)>", None)), Ok(()));
        let (field, rule) = check_publisher(&publisher("Acme\u{0}", None)).unwrap_err();
        assert_eq!(field, "publisher.name");
        assert!(rule.contains("U+0000"), "{rule}");
        assert!(check_publisher(&publisher("Acme\nInc", None)).unwrap_err().1.contains("U+000A"));
        assert!(check_publisher(&publisher("Acme\u{202E}cni", None)).unwrap_err().1.contains("U+202E"));
        assert!(check_publisher(&publisher("  ", None)).unwrap_err().1.contains("empty"));
        assert!(check_publisher(&publisher(&"é".repeat(101), None)).unwrap_err().1.contains("101 characters"));
        let (field, _) = check_publisher(&publisher("Acme", Some("http://acme.example"))).unwrap_err();
        assert_eq!(field, "publisher.homepage");
        let p = Publisher { name: "Acme".into(), homepage: None, support: Some("javascript:x".into()) };
        assert_eq!(check_publisher(&p).unwrap_err().0, "publisher.support");
    }

    #[test]
    fn changelogs_are_plain_text_with_line_feeds_and_tabs() {
        assert_eq!(check_changelog("1.5.0\n\t- <script>x</script> shown as text"), Ok(()));
        assert!(check_changelog("a\r\nb").unwrap_err().1.contains("U+000D"));
        assert!(check_changelog("a\u{0}b").unwrap_err().1.contains("U+0000"));
        assert!(check_changelog("\u{1b}[31m").unwrap_err().1.contains("U+001B"));
        assert!(check_changelog("").unwrap_err().1.contains("empty"));
        let big = "x".repeat(MAX_CHANGELOG_BYTES + 1);
        assert_eq!(check_changelog(&big).unwrap_err().0, "changelog");
    }
}
