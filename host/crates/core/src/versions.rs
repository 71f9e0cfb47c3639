//! Which stored version a request names: the domain's resolution
//! (`kiosk_domain::resolve`) over the store's `VersionRow`s, its refusals as `Failure`s,
//! and whether a version takes new installs (`installable`).

use kiosk_domain::resolve::{self, Candidate, Candidates, ResolveError, UpgradeRequest};
use kiosk_store::VersionRow;

use crate::error::{Class, Failure, Kind};

type Result<T, E = Failure> = std::result::Result<T, E>;

/// A stored version, as resolution reads it (a local wrapper: neither the trait nor the
/// row is this crate's).
#[derive(Debug, Clone, Copy)]
struct Stored<'a>(&'a VersionRow);

impl Candidate for Stored<'_> {
    fn version(&self) -> &str {
        &self.0.version
    }

    fn yanked(&self) -> bool {
        self.0.yanked
    }

    fn quarantined(&self) -> bool {
        self.0.quarantined
    }

    fn quarantine_reason(&self) -> Option<&str> {
        self.0.quarantine_reason.as_deref()
    }
}

fn stored(versions: &[VersionRow]) -> Vec<Stored<'_>> {
    versions.iter().map(Stored).collect()
}

/// A refused resolution: an exact version that is not registered is not found; nothing
/// newer, or the version already installed, is a conflict; the rest is unprocessable.
/// The slug, the detail and the field are the refusal's.
pub(crate) fn resolve_failure(e: ResolveError) -> Failure {
    use ResolveError as E;
    let class = match &e {
        E::NoSuchVersion { .. } => Class::NotFound,
        E::NoNewerVersion { .. } | E::SameVersion { .. } => Class::Conflict,
        E::Quarantined { .. }
        | E::Yanked { .. }
        | E::InvalidRange { .. }
        | E::InvalidTrack { .. }
        | E::VersionAndTrack
        | E::NoMatchingVersion { .. }
        | E::DowngradeRefused { .. }
        | E::MajorUpgradeRefused { .. } => Class::Unprocessable,
    };
    let kind = match &e {
        E::NoSuchVersion { .. } => Kind::NotFound,
        E::Quarantined { .. } => Kind::VersionQuarantined,
        E::Yanked { .. } => Kind::VersionYanked,
        E::InvalidRange { .. } => Kind::InvalidRange,
        E::InvalidTrack { .. } => Kind::InvalidTrack,
        E::VersionAndTrack => Kind::InvalidRequest,
        E::NoMatchingVersion { .. } => Kind::NoMatchingVersion,
        E::NoNewerVersion { .. } => Kind::NoNewerVersion,
        E::SameVersion { .. } => Kind::SameVersion,
        E::DowngradeRefused { .. } => Kind::DowngradeRefused,
        E::MajorUpgradeRefused { .. } => Kind::MajorUpgradeRefused,
    };
    Failure::new(class, kind, e.to_string()).field(e.field())
}

/// Refuses a version that takes no new installs or upgrades: yanked, or quarantined
/// (the failure names why, e.g. the revoked certificate that signed it).
pub fn installable(app: &str, v: &VersionRow) -> Result<()> {
    resolve::installable(app, &Stored(v)).map_err(resolve_failure)
}

/// The version an install asks for, and what the catalog calls `latest`:
/// `kiosk_domain::resolve::resolve_version`.
pub fn resolve_version(
    app: &str,
    versions: &[VersionRow],
    version: Option<&str>,
    track: Option<&str>,
) -> Result<VersionRow> {
    resolve_version_among(app, versions, version, track, Candidates::default())
}

/// `kiosk_domain::resolve::resolve_version_among` over stored versions.
pub fn resolve_version_among(
    app: &str,
    versions: &[VersionRow],
    version: Option<&str>,
    track: Option<&str>,
    candidates: Candidates<'_>,
) -> Result<VersionRow> {
    let stored = stored(versions);
    match resolve::resolve_version_among(app, &stored, version, track, candidates) {
        Ok(v) => Ok(v.0.clone()),
        Err(e) => Err(resolve_failure(e)),
    }
}

/// The version an upgrade from `from` moves to: `kiosk_domain::resolve::upgrade_target`.
pub fn upgrade_target(
    app: &str,
    versions: &[VersionRow],
    from: &semver::Version,
    request: &UpgradeRequest,
) -> Result<VersionRow> {
    let stored = stored(versions);
    match resolve::upgrade_target(app, &stored, from, request) {
        Ok(v) => Ok(v.0.clone()),
        Err(e) => Err(resolve_failure(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rows(versions: &[&str]) -> Vec<VersionRow> {
        versions
            .iter()
            .map(|v| VersionRow {
                app: "acme/app".into(),
                version: (*v).into(),
                manifest: String::new(),
                manifest_digest: String::new(),
                component_digest: String::new(),
                signer: String::new(),
                reference: String::new(),
                yanked: false,
                created_ms: 0,
                quarantined: false,
                quarantine_reason: None,
                icon_digest: None,
            })
            .collect()
    }

    fn refusal(r: Result<VersionRow>) -> (Class, &'static str, Option<String>, String) {
        let e = r.unwrap_err();
        (e.class, e.kind.as_str(), e.field, e.detail)
    }

    #[test]
    fn refusals_become_failures_with_their_class_slug_and_field() {
        let mut versions = rows(&["1.0.0", "1.1.0", "2.0.0"]);
        versions[1].quarantined = true;
        versions[1].quarantine_reason = Some("signing certificate ab was revoked".into());
        let version = Some("version".to_string());
        assert_eq!(
            refusal(resolve_version("acme/app", &versions, Some("3.0.0"), None)),
            (Class::NotFound, "not-found", version.clone(), "acme/app has no version 3.0.0".into())
        );
        assert_eq!(
            refusal(resolve_version("acme/app", &versions, Some("1.1.0"), None)),
            (
                Class::Unprocessable,
                "version-quarantined",
                version.clone(),
                "acme/app@1.1.0 is quarantined (signing certificate ab was revoked): no new installs or upgrades"
                    .into()
            )
        );
        let (class, kind, field, _) = refusal(resolve_version("acme/app", &versions, None, Some("3")));
        assert_eq!((class, kind, field.as_deref()), (Class::Unprocessable, "no-matching-version", Some("track")));
        let from = semver::Version::parse("1.0.0").unwrap();
        let same = UpgradeRequest { version: Some("1.0.0".into()), ..UpgradeRequest::default() };
        let (class, kind, ..) = refusal(upgrade_target("acme/app", &versions, &from, &same));
        assert_eq!((class, kind), (Class::Conflict, "same-version"));
        let latest = semver::Version::parse("2.0.0").unwrap();
        let (class, kind, ..) = refusal(upgrade_target("acme/app", &versions, &latest, &UpgradeRequest::default()));
        assert_eq!((class, kind), (Class::Conflict, "no-newer-version"));
        assert_eq!(installable("acme/app", &versions[0]).ok(), Some(()));
        assert_eq!(resolve_version("acme/app", &versions, None, None).unwrap().version, "2.0.0");
    }
}
