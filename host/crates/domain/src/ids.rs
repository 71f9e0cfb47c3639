//! Typed identifiers. An app is `owner/name`: the owner is a partner (a slug) or, for a
//! tenant's private app, `~` and the tenant's id (`~shop/inventory`); the name is a slug.
//! Partner names are slugs, so no partner can ever own an app in a tenant's namespace.
//! An app id is built and taken apart here only, never with `format!` and `split_once`
//! at the call sites.

use std::fmt;

use crate::manifest::is_slug;

/// The prefix of a tenant's private namespace (`~shop`): a character no slug holds.
pub const PRIVATE_PREFIX: char = '~';

/// Whether `owner` may own apps: a partner's slug, or `~` and a tenant's slug.
pub fn is_owner(owner: &str) -> bool {
    is_slug(owner.strip_prefix(PRIVATE_PREFIX).unwrap_or(owner))
}

/// The namespace of tenant `tenant`'s private apps (`~shop`).
pub fn private_namespace(tenant: &str) -> String {
    format!("{PRIVATE_PREFIX}{tenant}")
}

/// The tenant whose private namespace `owner` is (`~shop` → `shop`), if it is one.
pub fn private_owner(owner: &str) -> Option<&str> {
    owner.strip_prefix(PRIVATE_PREFIX).filter(|t| is_slug(t))
}

/// An app: its owner (a partner, or a tenant's private namespace) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId {
    partner: String,
    name: String,
}

/// Text that is not `partner/name` (or `~tenant/name`) in slugs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an app: expected `partner/name` (or `~tenant/name` for a tenant's private app), each 1-64 of \
     a-z, 0-9 and '-', not starting with '-'"
)]
pub struct NotAnAppId(pub String);

impl AppId {
    /// The app `partner/name` (or `~tenant/name`), if both parts are well formed.
    pub fn new(partner: &str, name: &str) -> Result<Self, NotAnAppId> {
        if is_owner(partner) && is_slug(name) {
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

    /// The tenant whose private app this is; `None` for a partner's app.
    pub fn private_owner(&self) -> Option<&str> {
        private_owner(&self.partner)
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
        assert_eq!(id.private_owner(), None);
    }

    #[test]
    fn private_apps_live_in_a_namespace_no_partner_can_hold() {
        let id = AppId::parse("~shop/inventory").unwrap();
        assert_eq!((id.partner(), id.private_owner()), ("~shop", Some("shop")));
        assert_eq!(private_namespace("shop"), "~shop");
        for bad in ["~/x", "~~shop/x", "~Shop/x", "shop~/x", "~-shop/x"] {
            assert!(AppId::parse(bad).is_err(), "{bad:?}");
        }
        // No partner name is an owner of the private form.
        assert!(!is_slug("~shop") && is_owner("~shop") && is_owner("acme"));
    }
}
