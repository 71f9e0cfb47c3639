//! Version resolution: which registered version an install or an upgrade names (an exact
//! version, a semver range, a track or the latest) on semver's compatibility lines
//! (`Line`), skipping yanked and quarantined versions. The versions are the caller's rows
//! (`Candidate`); a refusal is a `ResolveError` carrying Kiosk's slug and the field at fault.

use semver::{Version, VersionReq};

/// A registered version, as resolution reads it.
pub trait Candidate {
    /// Its semver text (`1.4.2`, `2.0.0-rc.1`).
    fn version(&self) -> &str;
    /// Yanked: no new installs.
    fn yanked(&self) -> bool;
    /// Quarantined (e.g. its signer was revoked): no new installs or upgrades.
    fn quarantined(&self) -> bool;
    /// Why it is quarantined, when that was recorded.
    fn quarantine_reason(&self) -> Option<&str>;
}

/// What an upgrade asks for. Without `version` or `track`: the highest installable
/// version above the current one on its compatibility line (`Line`), or
/// above it anywhere with `allow_major`.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRequest {
    pub version: Option<String>,
    pub track: Option<String>,
    /// Allow moving to a lower version.
    pub allow_downgrade: bool,
    /// Allow moving to another compatibility line (another major version; for 0.x,
    /// another minor).
    pub allow_major: bool,
    /// Let a range, a track or no version at all pick a prerelease (`2.0.0-rc.1`); an
    /// exact prerelease version needs no flag.
    pub include_prerelease: bool,
}

/// Why no version was picked. The text names the bad input; `kind` is Kiosk's slug for
/// it and `field` the input at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An exact version that is not registered.
    #[error("{app} has no version {version}")]
    NoSuchVersion { app: String, version: String },
    #[error("{app}@{version} is quarantined ({reason}): no new installs or upgrades")]
    Quarantined { app: String, version: String, reason: String },
    #[error("{app}@{version} is yanked: no new installs")]
    Yanked { app: String, version: String },
    #[error("version {range:?}: {reason}")]
    InvalidRange { range: String, reason: String },
    #[error("track {track:?}: {reason}")]
    InvalidTrack { track: String, reason: String },
    #[error("give either version or track, not both")]
    VersionAndTrack,
    /// A range, a track or no version at all matched nothing installable.
    #[error("{detail}")]
    NoMatchingVersion { detail: String, field: &'static str },
    /// An upgrade without a version found nothing above the installed one.
    #[error("{detail}")]
    NoNewerVersion { detail: String },
    #[error("installation is already on {version}")]
    SameVersion { version: Version, field: &'static str },
    #[error("{to} is lower than {from}; set allowDowngrade to downgrade")]
    DowngradeRefused { from: Version, to: Version, field: &'static str },
    #[error(
        "{to} is in {to_line}, the installation's {from} in {from_line}: another major version may break its \
         configuration and data; set allowMajor to move across",
        to_line = Line::of(.to),
        from_line = Line::of(.from)
    )]
    MajorUpgradeRefused { from: Version, to: Version, field: &'static str },
}

impl ResolveError {
    /// Kiosk's stable slug for the refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSuchVersion { .. } => "not-found",
            Self::Quarantined { .. } => "version-quarantined",
            Self::Yanked { .. } => "version-yanked",
            Self::InvalidRange { .. } => "invalid-range",
            Self::InvalidTrack { .. } => "invalid-track",
            Self::VersionAndTrack => "invalid-request",
            Self::NoMatchingVersion { .. } => "no-matching-version",
            Self::NoNewerVersion { .. } => "no-newer-version",
            Self::SameVersion { .. } => "same-version",
            Self::DowngradeRefused { .. } => "downgrade-refused",
            Self::MajorUpgradeRefused { .. } => "major-upgrade-refused",
        }
    }

    /// The request's input at fault: `version` or `track`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NoSuchVersion { .. }
            | Self::Quarantined { .. }
            | Self::Yanked { .. }
            | Self::InvalidRange { .. }
            | Self::NoNewerVersion { .. } => "version",
            Self::InvalidTrack { .. } | Self::VersionAndTrack => "track",
            Self::NoMatchingVersion { field, .. }
            | Self::SameVersion { field, .. }
            | Self::DowngradeRefused { field, .. }
            | Self::MajorUpgradeRefused { field, .. } => field,
        }
    }
}

/// A compatibility line, after semver's caret rule: one major version (`2.x`), or for
/// 0.x one minor version (`0.3.x`; 0.0.x is one line too, `0.0.x`). Versions on a line
/// are meant to be compatible; moving to another line is a major upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    major: u64,
    minor: Option<u64>,
}

impl Line {
    pub fn of(v: &Version) -> Self {
        Self { major: v.major, minor: (v.major == 0).then_some(v.minor) }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "{}.{minor}.x", self.major),
            None => write!(f, "{}.x", self.major),
        }
    }
}

/// What a range, a track or an absent version may land on, besides what it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidates<'a> {
    /// Admit prereleases, each judged as the release it precedes (`2.0.0-rc.1` as `2.0.0`).
    pub include_prerelease: bool,
    /// Only versions above this one.
    pub above: Option<&'a Version>,
    /// Only versions on this line.
    pub line: Option<Line>,
}

impl Candidates<'_> {
    /// Whether `v` is among these candidates and `req` admits it (`admits`).
    pub fn admit(&self, req: &VersionReq, v: &Version) -> bool {
        admits(req, v, self.include_prerelease)
            && self.above.is_none_or(|above| v > above)
            && self.line.is_none_or(|line| Line::of(v) == line)
    }
}

/// Whether `req` admits `v`. A release: when it matches. A prerelease: when the range
/// itself names a prerelease of the same major.minor.patch (semver's own rule:
/// `>=2.0.0-rc.1` admits `2.0.0-rc.2`, never `2.1.0-rc.1`; `*`, `^1`, `=1.4` admit no
/// prerelease), or, with `include_prerelease`, when the release it precedes matches (so
/// `^1` never admits `2.0.0-rc.1`, and `2` or `*` do).
fn admits(req: &VersionReq, v: &Version, include_prerelease: bool) -> bool {
    req.matches(v) || include_prerelease && !v.pre.is_empty() && req.matches(&Version::new(v.major, v.minor, v.patch))
}

/// Refuses a version that takes no new installs or upgrades: yanked, or quarantined
/// (the refusal names why, e.g. the revoked certificate that signed it).
pub fn installable<C: Candidate + ?Sized>(app: &str, v: &C) -> Result<(), ResolveError> {
    if v.quarantined() {
        let reason = v.quarantine_reason().unwrap_or("quarantined").to_string();
        return Err(ResolveError::Quarantined { app: app.to_string(), version: v.version().to_string(), reason });
    }
    if v.yanked() {
        return Err(ResolveError::Yanked { app: app.to_string(), version: v.version().to_string() });
    }
    Ok(())
}

/// Picks the version an install asks for, and what the catalog calls `latest` (no
/// version, no track), with the default candidates (no prereleases):
/// `resolve_version_among`.
pub fn resolve_version<'v, C: Candidate>(
    app: &str,
    versions: &'v [C],
    version: Option<&str>,
    track: Option<&str>,
) -> Result<&'v C, ResolveError> {
    resolve_version_among(app, versions, version, track, Candidates::default())
}

/// Picks a version:
/// - an exact version (`1.4.34`, `2.0.0-rc.1`) is that version, a prerelease too; refused
///   if yanked or quarantined (`candidates` does not apply);
/// - a range (`^1.4`), a track (`1.4`, read as `=1.4`) or nothing (`*`) picks the highest
///   version among `candidates` that it admits (`admits`: prereleases only when the range
///   names one, or with `include_prerelease`) and that is neither yanked nor quarantined.
pub fn resolve_version_among<'v, C: Candidate>(
    app: &str,
    versions: &'v [C],
    version: Option<&str>,
    track: Option<&str>,
    candidates: Candidates<'_>,
) -> Result<&'v C, ResolveError> {
    pick(app, versions, version, track, candidates).map(|(_, v)| v)
}

/// `resolve_version_among`, with the picked version parsed.
fn pick<'v, 'a, C: Candidate>(
    app: &str,
    versions: &'v [C],
    version: Option<&str>,
    track: Option<&str>,
    candidates: Candidates<'a>,
) -> Result<(Version, &'v C), ResolveError> {
    if let Some((exact, parsed)) = version.and_then(|v| Version::parse(v).ok().map(|parsed| (v, parsed))) {
        let v = versions
            .iter()
            .find(|v| v.version() == exact)
            .ok_or_else(|| ResolveError::NoSuchVersion { app: app.to_string(), version: exact.to_string() })?;
        installable(app, v)?;
        return Ok((parsed, v));
    }
    let (req, field) = match (version, track) {
        (Some(range), None) => (
            VersionReq::parse(range)
                .map_err(|e| ResolveError::InvalidRange { range: range.to_string(), reason: e.to_string() })?,
            "version",
        ),
        (None, Some(track)) => (
            VersionReq::parse(&format!("={track}"))
                .map_err(|e| ResolveError::InvalidTrack { track: track.to_string(), reason: e.to_string() })?,
            "track",
        ),
        (None, None) => (VersionReq::STAR, "version"),
        (Some(_), Some(_)) => return Err(ResolveError::VersionAndTrack),
    };
    let matching = |candidates: Candidates<'a>| {
        let req = &req;
        versions.iter().filter_map(move |v| {
            Version::parse(v.version()).ok().filter(|sv| candidates.admit(req, sv)).map(|sv| (sv, v))
        })
    };
    if let Some(found) =
        matching(candidates).filter(|(_, v)| !v.yanked() && !v.quarantined()).max_by(|a, b| a.0.cmp(&b.0))
    {
        return Ok(found);
    }
    // Nothing installable: name the quarantine if that is what stands in the way.
    if let Some((_, v)) = matching(candidates).filter(|(_, v)| !v.yanked()).max_by(|a, b| a.0.cmp(&b.0)) {
        installable(app, v)?;
    }
    let mut scope = req.to_string();
    if let Some(above) = candidates.above {
        scope.push_str(&format!(" above {above}"));
    }
    if let Some(line) = candidates.line {
        scope.push_str(&format!(" in {line}"));
    }
    let mut detail = format!("no version of {app} that is neither yanked nor quarantined matches {scope}");
    let with_prereleases = Candidates { include_prerelease: true, ..candidates };
    if !candidates.include_prerelease && matching(with_prereleases).any(|(_, v)| !v.yanked() && !v.quarantined()) {
        detail.push_str(" (prereleases are skipped unless includePrerelease is set or the version is named exactly)");
    }
    Err(ResolveError::NoMatchingVersion { detail, field })
}

/// The version an upgrade from `from` moves to:
/// - without version or track: the highest installable version above `from` on its line
///   (above it anywhere with `allow_major`); none is `no-newer-version` (a conflict),
///   naming a newer version on another line if there is one. It never downgrades;
/// - with an exact version, a track or a range: what `resolve_version_among` picks. The
///   version the installation is on is `same-version` (a conflict); a lower one needs
///   `allow_downgrade` (else `downgrade-refused`), one on another line `allow_major`
///   (else `major-upgrade-refused`), whichever the direction.
pub fn upgrade_target<'v, C: Candidate>(
    app: &str,
    versions: &'v [C],
    from: &Version,
    request: &UpgradeRequest,
) -> Result<&'v C, ResolveError> {
    let line = Line::of(from);
    let include_prerelease = request.include_prerelease;
    if request.version.is_none() && request.track.is_none() {
        let candidates =
            Candidates { include_prerelease, above: Some(from), line: (!request.allow_major).then_some(line) };
        return match resolve_version_among(app, versions, None, None, candidates) {
            Err(ResolveError::NoMatchingVersion { .. }) => {
                let scope = if request.allow_major { String::new() } else { format!(" in {line}") };
                let mut detail = format!("no installable version of {app} is newer than {from}{scope}");
                if !request.allow_major {
                    let anywhere = Candidates { line: None, ..candidates };
                    if let Ok(v) = resolve_version_among(app, versions, None, None, anywhere) {
                        detail.push_str(&format!("; {} is a major upgrade: set allowMajor to move to it", v.version()));
                    }
                }
                Err(ResolveError::NoNewerVersion { detail })
            }
            other => other,
        };
    }
    let field = if request.track.is_some() { "track" } else { "version" };
    let (to, target) = pick(
        app,
        versions,
        request.version.as_deref(),
        request.track.as_deref(),
        Candidates { include_prerelease, ..Candidates::default() },
    )?;
    if to == *from {
        return Err(ResolveError::SameVersion { version: to, field });
    }
    if to < *from && !request.allow_downgrade {
        return Err(ResolveError::DowngradeRefused { from: from.clone(), to, field });
    }
    if Line::of(&to) != line && !request.allow_major {
        return Err(ResolveError::MajorUpgradeRefused { from: from.clone(), to, field });
    }
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Row {
        version: String,
        yanked: bool,
        quarantined: bool,
        reason: Option<String>,
    }

    impl Candidate for Row {
        fn version(&self) -> &str {
            &self.version
        }
        fn yanked(&self) -> bool {
            self.yanked
        }
        fn quarantined(&self) -> bool {
            self.quarantined
        }
        fn quarantine_reason(&self) -> Option<&str> {
            self.reason.as_deref()
        }
    }

    fn rows(versions: &[&str]) -> Vec<Row> {
        versions.iter().map(|v| Row { version: v.to_string(), ..Row::default() }).collect()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn picked(r: Result<&Row, ResolveError>) -> String {
        match r {
            Ok(row) => row.version.clone(),
            Err(e) => format!("{} {e}", e.kind()),
        }
    }

    /// What semver's `VersionReq` does with prereleases by itself, which `admits` builds on:
    /// a prerelease matches only a range naming a prerelease of the same major.minor.patch.
    #[test]
    fn semver_version_req_admits_prereleases_only_when_the_range_names_one_of_that_release() {
        let matches = |req: &str, version: &str| VersionReq::parse(req).unwrap().matches(&v(version));
        assert!(!VersionReq::STAR.matches(&v("2.0.0-rc.1")), "* (no version, `latest`) skips prereleases");
        assert!(!matches("*", "2.0.0-rc.1"));
        assert!(!matches(">=1.0.0", "2.0.0-rc.1"));
        assert!(!matches("^1", "1.5.0-beta.1"));
        assert!(!matches("=1.4", "1.4.1-beta.1"), "a track skips prereleases");
        assert!(!matches("^2.0.0-rc.1", "2.1.0-rc.1"), "another release's prerelease");
        assert!(matches("^2.0.0-rc.1", "2.0.0-rc.2"));
        assert!(matches(">=2.0.0-rc.1", "2.0.0-rc.2"));
        assert!(matches("^2.0.0-rc.1", "2.1.0"), "and releases as usual");
        assert!(matches("=2.0.0-rc.1", "2.0.0-rc.1"));
    }

    #[test]
    fn admits_judges_an_opted_in_prerelease_as_the_release_it_precedes() {
        let admits = |req: &str, version: &str, include| admits(&VersionReq::parse(req).unwrap(), &v(version), include);
        assert!(admits("*", "2.0.0-rc.1", true));
        assert!(admits("2", "2.0.0-rc.1", true));
        assert!(admits("=1.4", "1.4.1-beta.1", true));
        assert!(!admits("^1", "2.0.0-rc.1", true), "a prerelease of 2.0.0 is not in ^1");
        assert!(!admits("<2.0.0", "2.0.0-rc.1", true), "nor below 2.0.0");
        assert!(!admits("=1.4", "1.5.0-beta.1", true));
        assert!(admits(">=2.0.0-rc.1", "2.0.0-rc.2", false), "semver's own rule still holds");
    }

    #[test]
    fn latest_tracks_and_ranges_skip_prereleases_unless_asked_and_an_exact_one_is_always_allowed() {
        let versions = rows(&["1.4.0", "1.4.1-beta.1", "1.5.0", "2.0.0-rc.1"]);
        let resolve = |version, track, include_prerelease| {
            picked(resolve_version_among(
                "acme/app",
                &versions,
                version,
                track,
                Candidates { include_prerelease, ..Candidates::default() },
            ))
        };
        assert_eq!(picked(resolve_version("acme/app", &versions, None, None)), "1.5.0", "latest");
        assert_eq!(resolve(None, None, true), "2.0.0-rc.1");
        assert_eq!(resolve(None, Some("1.4"), false), "1.4.0");
        assert_eq!(resolve(None, Some("1.4"), true), "1.4.1-beta.1");
        assert_eq!(resolve(Some("^1"), None, true), "1.5.0");
        assert_eq!(resolve(Some(">=2.0.0-rc.1"), None, false), "2.0.0-rc.1", "a range naming it");
        assert_eq!(resolve(Some("2.0.0-rc.1"), None, false), "2.0.0-rc.1", "exact");
        let only = resolve(Some("2"), None, false);
        assert!(only.starts_with("no-matching-version ") && only.contains("includePrerelease"), "{only}");
        // A released version outranks its prereleases.
        let versions = rows(&["2.0.0-rc.1", "2.0.0"]);
        assert_eq!(
            picked(resolve_version_among(
                "acme/app",
                &versions,
                None,
                None,
                Candidates { include_prerelease: true, ..Candidates::default() }
            )),
            "2.0.0"
        );
    }

    #[test]
    fn yanked_and_quarantined_versions_are_skipped_and_an_exact_one_is_refused() {
        let mut versions = rows(&["1.0.0", "1.1.0", "1.2.0"]);
        versions[2].yanked = true;
        versions[1].quarantined = true;
        assert_eq!(picked(resolve_version("acme/app", &versions, None, None)), "1.0.0");
        assert!(picked(resolve_version("acme/app", &versions, Some("1.2.0"), None)).starts_with("version-yanked"));
        assert!(picked(resolve_version("acme/app", &versions, Some("1.1.0"), None)).starts_with("version-quarantined"));
        assert!(picked(resolve_version("acme/app", &versions, Some("^1.1"), None)).starts_with("version-quarantined"));
    }

    #[test]
    fn lines_follow_the_caret_rule() {
        let line = |s| Line::of(&v(s));
        assert_eq!(line("1.0.1"), line("1.9.0"));
        assert_ne!(line("1.9.0"), line("2.0.0"));
        assert_eq!(line("2.0.0-rc.1"), line("2.3.0"));
        assert_eq!(line("0.3.1"), line("0.3.9"));
        assert_ne!(line("0.3.9"), line("0.4.0"));
        assert_eq!(line("0.0.1"), line("0.0.2"));
        assert_eq!((line("1.2.3").to_string(), line("0.3.1").to_string()), ("1.x".into(), "0.3.x".into()));
    }

    #[test]
    fn an_upgrade_without_a_version_stays_on_its_major_version() {
        let versions = rows(&["1.0.1", "1.2.0", "1.3.0-beta.1", "2.0.0", "2.1.0-rc.1"]);
        let upgrade =
            |from: &str, request: UpgradeRequest| picked(upgrade_target("acme/app", &versions, &v(from), &request));
        assert_eq!(upgrade("1.0.1", UpgradeRequest::default()), "1.2.0");
        assert_eq!(upgrade("1.0.1", UpgradeRequest { include_prerelease: true, ..Default::default() }), "1.3.0-beta.1");
        assert_eq!(upgrade("1.0.1", UpgradeRequest { allow_major: true, ..Default::default() }), "2.0.0");
        assert_eq!(
            upgrade("1.0.1", UpgradeRequest { allow_major: true, include_prerelease: true, ..Default::default() }),
            "2.1.0-rc.1"
        );
        // Nothing newer on the line: 409, naming the major upgrade there is.
        let none = upgrade("1.2.0", UpgradeRequest::default());
        assert!(
            none.starts_with("no-newer-version ") && none.contains("2.0.0 is a major upgrade: set allowMajor"),
            "{none}"
        );
        let none = upgrade("2.0.0", UpgradeRequest { allow_major: true, ..Default::default() });
        assert!(none.starts_with("no-newer-version ") && !none.contains("allowMajor"), "{none}");
        // Never a downgrade, even with allowDowngrade.
        let none = upgrade("2.0.0", UpgradeRequest { allow_downgrade: true, ..Default::default() });
        assert!(none.starts_with("no-newer-version "), "{none}");
        // 0.x: the minor is the line.
        let versions = rows(&["0.3.1", "0.3.4", "0.4.0"]);
        let upgrade = |request: UpgradeRequest| picked(upgrade_target("acme/app", &versions, &v("0.3.1"), &request));
        assert_eq!(upgrade(UpgradeRequest::default()), "0.3.4");
        assert_eq!(upgrade(UpgradeRequest { allow_major: true, ..Default::default() }), "0.4.0");
    }

    #[test]
    fn an_upgrade_naming_another_major_version_needs_allow_major() {
        let versions = rows(&["1.0.1", "1.2.0", "2.0.0", "3.0.0-rc.1"]);
        let upgrade = |from: &str, version: Option<&str>, track: Option<&str>, flags: (bool, bool)| {
            let request = UpgradeRequest {
                version: version.map(Into::into),
                track: track.map(Into::into),
                allow_downgrade: flags.0,
                allow_major: flags.1,
                include_prerelease: false,
            };
            picked(upgrade_target("acme/app", &versions, &v(from), &request))
        };
        for (version, track) in [(Some("2.0.0"), None), (None, Some("2")), (Some(">=1.0.0"), None)] {
            let refused = upgrade("1.0.1", version, track, (false, false));
            assert!(refused.starts_with("major-upgrade-refused ") && refused.contains("allowMajor"), "{refused}");
            assert_eq!(upgrade("1.0.1", version, track, (false, true)), "2.0.0");
        }
        assert_eq!(upgrade("1.0.1", Some("^1"), None, (false, false)), "1.2.0");
        assert_eq!(upgrade("1.0.1", Some("3.0.0-rc.1"), None, (false, true)), "3.0.0-rc.1", "exact prerelease");
        // Down: allowDowngrade, and across a major version allowMajor too.
        assert!(upgrade("1.2.0", Some("1.0.1"), None, (false, false)).starts_with("downgrade-refused "));
        assert_eq!(upgrade("1.2.0", Some("1.0.1"), None, (true, false)), "1.0.1");
        assert!(upgrade("2.0.0", Some("1.2.0"), None, (false, true)).starts_with("downgrade-refused "));
        assert!(upgrade("2.0.0", Some("1.2.0"), None, (true, false)).starts_with("major-upgrade-refused "));
        assert_eq!(upgrade("2.0.0", Some("1.2.0"), None, (true, true)), "1.2.0");
        assert!(upgrade("1.2.0", Some("1.2.0"), None, (true, true)).starts_with("same-version "));
        assert!(upgrade("1.2.0", None, Some("1"), (false, false)).starts_with("same-version "));
    }

    #[test]
    fn refusals_keep_their_words_slugs_and_fields() {
        let mut versions = rows(&["1.2.0", "2.0.0"]);
        let request = UpgradeRequest { version: Some("2.0.0".into()), ..Default::default() };
        let e = upgrade_target("acme/app", &versions, &v("1.2.0"), &request).unwrap_err();
        assert_eq!((e.kind(), e.field()), ("major-upgrade-refused", "version"));
        assert_eq!(
            e.to_string(),
            "2.0.0 is in 2.x, the installation's 1.2.0 in 1.x: another major version may break its configuration \
             and data; set allowMajor to move across"
        );
        let e = resolve_version("acme/app", &versions, Some("3.0.0"), None).unwrap_err();
        assert_eq!(
            (e.kind(), e.field(), e.to_string()),
            ("not-found", "version", "acme/app has no version 3.0.0".into())
        );
        let e = resolve_version("acme/app", &versions, Some("^1"), Some("1")).unwrap_err();
        assert_eq!((e.kind(), e.field()), ("invalid-request", "track"));
        let e = resolve_version("acme/app", &versions, None, Some("x")).unwrap_err();
        assert_eq!((e.kind(), e.field()), ("invalid-track", "track"));
        assert!(e.to_string().starts_with("track \"x\": "), "{e}");
        versions[1].quarantined = true;
        versions[1].reason = Some("signer revoked".into());
        let e = resolve_version("acme/app", &versions, Some("2.0.0"), None).unwrap_err();
        assert_eq!(e.to_string(), "acme/app@2.0.0 is quarantined (signer revoked): no new installs or upgrades");
        versions[1].reason = None;
        let e = resolve_version("acme/app", &versions, Some("2"), None).unwrap_err();
        assert_eq!(e.to_string(), "acme/app@2.0.0 is quarantined (quarantined): no new installs or upgrades");
    }
}
