//! Network vocabulary shared by every outbound connection Kiosk makes (registries, apps'
//! outbound HTTP): which addresses are not public, every literal form a host name can
//! take for an address, and the destinations an app may declare. Pure: no lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public (`None`: public): `loopback`, `unspecified`,
/// `link-local` (which holds the cloud metadata address 169.254.169.254), `private`
/// (RFC 1918, CGNAT 100.64/10, IPv6 ULA), `multicast` or `reserved` (documentation,
/// benchmarking, 240/4, broadcast). IPv4-mapped, IPv4-compatible and NAT64 IPv6
/// addresses are judged by the IPv4 address they carry.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v6_class(v6: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let s = v6.segments();
    if v6.is_loopback() {
        Some("loopback")
    } else if v6.is_unspecified() {
        Some("unspecified")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        Some("private")
    } else if s[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) || s[..6] == [0; 6] {
        // NAT64 and IPv4-compatible addresses carry an IPv4 address.
        let o = v6.octets();
        v4_class(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("reserved")
    } else {
        None
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if o[0] == 0 {
        Some("unspecified")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() || (o[0] == 100 && o[1] & 0xc0 == 64) {
        Some("private")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && o[1] & 0xfe == 18)
        || ip.is_documentation()
    {
        Some("reserved")
    } else {
        None
    }
}

/// The address a host name denotes literally, in any form a resolver or URL parser
/// might accept: dotted IPv4 with one to four parts, each decimal, octal (`0177`) or
/// hexadecimal (`0x7f`) — `127.1`, `2130706433`, `0x7f.1`, `017700000001` — and IPv6,
/// bracketed or not (`[::1]`, `::ffff:127.0.0.1`). `None`: not an address literal.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let host = host.trim_end_matches('.');
    let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(v6) = unbracketed.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    // An IPv6 literal with a zone (`fe80::1%eth0`) is still an address.
    if let Some((addr, _zone)) = unbracketed.split_once('%')
        && let Ok(v6) = addr.parse::<Ipv6Addr>()
    {
        return Some(IpAddr::V6(v6));
    }
    inet_aton(host).map(IpAddr::V4)
}

/// `inet_aton(3)`: `a`, `a.b`, `a.b.c`, `a.b.c.d`, each part decimal, octal or hex.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for part in &parts {
        values.push(aton_part(part)?);
    }
    let (last, init) = values.split_last()?;
    if init.iter().any(|v| *v > 255) {
        return None;
    }
    let room = 32 - 8 * init.len() as u32;
    if room < 32 && *last >= (1u64 << room) {
        return None;
    }
    if room == 32 && *last > u64::from(u32::MAX) {
        return None;
    }
    let mut n: u64 = 0;
    for v in init {
        n = (n << 8) | v;
    }
    n = (n << room) | last;
    Some(Ipv4Addr::from(u32::try_from(n).ok()?))
}

fn aton_part(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 34 {
        return None;
    }
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 for inet_aton.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix).ok().filter(|v| *v <= u64::from(u32::MAX))
}

/// A host a rule names: an exact DNS name, or `*.` and a name (any name below it, not
/// the name itself). Lowercase; never an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    wildcard: bool,
    /// The name (after `*.` for a wildcard), lowercase, no trailing dot.
    name: String,
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.com`. Refuses address literals in every
    /// form, names that are not DNS names, and wildcards anywhere but the first label.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(ip) = ip_literal(name) {
            return Err(format!(
                "{text:?} is an address ({ip}); destinations are DNS names (the operator opens addresses by name)"
            ));
        }
        if !is_dns_name(name) {
            return Err(format!(
                "{text:?} is not a host name: lowercase letters, digits and '-' in dot-separated labels of 1-63, at \
                 most 253 in all, with `*.` only as the first label"
            ));
        }
        if wildcard && !name.contains('.') {
            return Err(format!("{text:?}: a wildcard needs at least two labels after `*.`"));
        }
        Ok(Self { wildcard, name: name.to_string() })
    }

    /// Whether `host` (lowercase, as a request names it) is one this pattern names.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard { write!(f, "*.{}", self.name) } else { f.write_str(&self.name) }
    }
}

impl<'de> serde::Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `name` is a lowercase DNS name (letters, digits, '-'; labels of 1-63, not
/// starting or ending with '-'; at most 253 bytes).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The scheme of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// `scheme://host[:port]`: where an app may send requests. No user info, no path
/// (beyond `/`), no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: HostPattern,
    pub port: u16,
}

impl Destination {
    /// Parses a declared destination, naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(format!("{text:?} must start with https:// (or http://, which the operator must allow)"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!("{text:?} has a path, query or fragment; a destination is scheme://host[:port]"));
        }
        if authority.contains('@') {
            return Err(format!("{text:?} carries user information, which is refused"));
        }
        let (host, port) = split_port(authority).map_err(|e| format!("{text:?}: {e}"))?;
        let host = HostPattern::parse(host).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Self { scheme, host, port: port.unwrap_or(scheme.default_port()) })
    }

    /// Whether a request to `scheme://host:port` goes to this destination.
    pub fn admits(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.scheme == scheme && self.port == port && self.host.matches(host)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Splits `host[:port]` (an IPv6 literal must be bracketed); the port is 1-65535.
pub fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or("an unclosed '[' in the host")?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Ok((host, None)),
            None => Err("text after the bracketed host".into()),
            Some(port) => Ok((host, Some(parse_port(port)?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((authority, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) && text.len() <= 5 => Ok(port),
        _ => Err(format!("port {text:?} is not a number in 1-65535")),
    }
}

/// The narrowest an opened range may be as wide: an IPv4 /8 or an IPv6 /16. Wider
/// ranges (`0.0.0.0/0`) would open the metadata address and every private network at once.
const WIDEST_OPEN_PREFIX: (u8, u8) = (8, 16);

/// A non-public address range the operator opens (CIDR: `10.20.0.0/16`, `127.0.0.1/32`,
/// `fd00:1::/48`); the address is truncated to the prefix.
pub fn parse_open_range(text: &str) -> Result<ipnet::IpNet, String> {
    let net: ipnet::IpNet =
        text.parse().map_err(|_| format!("{text:?} is not a CIDR range (e.g. 10.20.0.0/16 or fd00:1::/48)"))?;
    let widest = match net {
        ipnet::IpNet::V4(_) => WIDEST_OPEN_PREFIX.0,
        ipnet::IpNet::V6(_) => WIDEST_OPEN_PREFIX.1,
    };
    if net.prefix_len() < widest {
        return Err(format!("{text:?} is wider than /{widest}: open the ranges the registry is on, not everything"));
    }
    Ok(net.trunc())
}

/// Whether `ip` may be contacted under `open` ranges: a public address, or one inside
/// an opened range (an IPv4-mapped IPv6 address is judged as its IPv4 address).
pub fn reachable(ip: IpAddr, open: &[ipnet::IpNet]) -> Result<(), &'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match non_public(ip) {
        None => Ok(()),
        Some(_) if open.iter().any(|n| n.contains(&ip)) => Ok(()),
        Some(what) => Err(what),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_literal_form_of_loopback_is_an_address() {
        for text in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "017700000001",
            "0177.0.0.1",
            "127.0.1",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "::127.0.0.1",
            "127.0.0.1.",
        ] {
            let ip = ip_literal(text).unwrap_or_else(|| panic!("{text} is an address"));
            assert_eq!(non_public(ip), Some("loopback"), "{text} → {ip}");
        }
        assert_eq!(ip_literal("169.254.169.254").and_then(non_public), Some("link-local"));
        assert_eq!(ip_literal("0xa9fea9fe").and_then(non_public), Some("link-local"));
        assert_eq!(ip_literal("10.1").and_then(non_public), Some("private"));
        assert_eq!(ip_literal("100.64.0.1").and_then(non_public), Some("private"));
        assert_eq!(ip_literal("[fd00::1]").and_then(non_public), Some("private"));
        assert_eq!(ip_literal("[fe80::1%25eth0]").and_then(non_public), Some("link-local"));
        assert_eq!(ip_literal("0").and_then(non_public), Some("unspecified"));
        assert_eq!(ip_literal("[ff02::1]").and_then(non_public), Some("multicast"));
        for name in ["api.example.com", "1.2.3.4.5", "256.1.1.1", "0x1g", "example", "08.1.1.1", "4294967296"] {
            assert_eq!(ip_literal(name), None, "{name} is not an address");
        }
    }

    #[test]
    fn destinations_are_names_with_a_scheme_and_port() {
        let d = Destination::parse("https://api.acme.example").unwrap();
        assert!(d.admits(Scheme::Https, "api.acme.example", 443));
        assert!(!d.admits(Scheme::Https, "api.acme.example", 8443));
        assert!(!d.admits(Scheme::Http, "api.acme.example", 443));
        assert!(!d.admits(Scheme::Https, "evil-api.acme.example", 443));
        let w = Destination::parse("https://*.acme.example:8443/").unwrap();
        assert!(w.admits(Scheme::Https, "eu.acme.example", 8443));
        assert!(!w.admits(Scheme::Https, "acme.example", 8443));
        assert!(!w.admits(Scheme::Https, "evilacme.example", 8443));
        assert_eq!(w.to_string(), "https://*.acme.example:8443");
        for bad in [
            "ftp://x.example",
            "https://127.0.0.1",
            "https://2130706433",
            "https://0x7f.1",
            "https://[::1]",
            "https://api.acme.example/v1",
            "https://user@api.acme.example",
            "https://*.example",
            "https://a.*.example",
            "https://API.acme.example",
            "https://api.acme.example:0",
            "https://api.acme.example:99999",
            "https://api.acme.example?x",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn opened_ranges_admit_only_what_they_contain() {
        let open = vec![parse_open_range("127.0.0.0/8").unwrap(), parse_open_range("10.20.1.9/16").unwrap()];
        assert_eq!(open[1].to_string(), "10.20.0.0/16");
        for ok in ["127.0.0.1", "10.20.3.4", "::ffff:127.0.0.1", "93.184.216.34"] {
            assert!(reachable(ok.parse().unwrap(), &open).is_ok(), "{ok}");
        }
        for bad in ["10.21.0.1", "192.168.1.1", "169.254.169.254", "::1", "fd00::1"] {
            assert!(reachable(bad.parse().unwrap(), &open).is_err(), "{bad}");
        }
        for bad in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "fd00::/8", "10.0.0.0", "x/8"] {
            assert!(parse_open_range(bad).is_err(), "{bad}");
        }
    }
}
