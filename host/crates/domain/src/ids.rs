//! Typed identifiers. An app is `partner/name`, both slugs; it is built and taken apart
//! here only, never with `format!` and `split_once` at the call sites.

use std::fmt;

use crate::manifest::is_slug;

/// An app: the partner that publishes it and its name, both slugs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId {
    partner: String,
    name: String,
}

/// Text that is not `partner/name` in slugs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an app: expected `partner/name`, each 1-64 of a-z, 0-9 and '-', not starting with '-'")]
pub struct NotAnAppId(pub String);

impl AppId {
    /// The app `partner/name`, if both are slugs.
    pub fn new(partner: &str, name: &str) -> Result<Self, NotAnAppId> {
        if is_slug(partner) && is_slug(name) {
            Ok(Self { partner: partner.to_string(), name: name.to_string() })
        } else {
            Err(NotAnAppId(format!("{partner}/{name}")))
        }
    }

    /// Parses `partner/name`.
    pub fn parse(text: &str) -> Result<Self, NotAnAppId> {
        let (partner, name) = text.split_once('/').ok_or_else(|| NotAnAppId(text.to_string()))?;
        Self::new(partner, name).map_err(|_| NotAnAppId(text.to_string()))
    }

    pub fn partner(&self) -> &str {
        &self.partner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `app` (stored text) belongs to `partner`.
    pub fn is_of(app: &str, partner: &str) -> bool {
        Self::parse(app).is_ok_and(|id| id.partner == partner)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.partner, self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_partner_slash_name_in_slugs() {
        let id = AppId::parse("acme/budget-pacing").unwrap();
        assert_eq!((id.partner(), id.name()), ("acme", "budget-pacing"));
        assert_eq!(id.to_string(), "acme/budget-pacing");
        for bad in ["acme", "acme/", "/x", "Acme/x", "acme/x/y", "acme/-x", "a\u{0}/x"] {
            assert!(AppId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AppId::is_of("acme/x", "acme") && !AppId::is_of("acme-two/x", "acme"));
    }
}
