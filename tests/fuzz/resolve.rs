//! Version resolution (`kiosk_domain::resolve`): an install's exact version, range, track
//! or latest, and an upgrade's target, over registered versions some of which are yanked,
//! quarantined or prereleases. Each case is compared with a small reference
//! implementation written from the rules (below), and checked against the rules
//! directly: never a yanked or quarantined version; a prerelease only when asked for
//! (`includePrerelease`), named exactly, or named by the range for that release; always
//! the highest admitted version; an upgrade without a version only moves up, on its line
//! unless `allowMajor`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use kiosk_domain::resolve::{
    Candidate, Candidates, Line, ResolveError, UpgradeRequest, resolve_version_among, upgrade_target,
};

use crate::harness::fuzz;
use crate::json_input;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    version: String,
    #[serde(default)]
    yanked: bool,
    #[serde(default)]
    quarantined: bool,
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
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upgrade {
    from: String,
    #[serde(default)]
    allow_downgrade: bool,
    #[serde(default)]
    allow_major: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResolveCase {
    versions: Vec<Row>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    include_prerelease: bool,
    /// Install candidates above this version (as an upgrade's search uses them).
    #[serde(default)]
    above: Option<String>,
    /// Install candidates on the line of this version.
    #[serde(default)]
    line_of: Option<String>,
    /// Resolve an upgrade from this version instead of an install.
    #[serde(default)]
    upgrade: Option<Upgrade>,
}

json_input!(ResolveCase);

// --- the reference implementation ------------------------------------------------------------

/// The rules' line: the major version, and for 0.x the minor too.
fn line(v: &Version) -> (u64, Option<u64>) {
    (v.major, (v.major == 0).then_some(v.minor))
}

/// Whether `req` admits `v`: a release when it matches; a prerelease when it matches
/// (semver admits one only when the range names a prerelease of the same release), or
/// with `include` when its release matches.
fn admitted(req: &VersionReq, v: &Version, include: bool) -> bool {
    req.matches(v) || (include && !v.pre.is_empty() && req.matches(&Version::new(v.major, v.minor, v.patch)))
}

/// Whether `req` names a prerelease of `v`'s release (the one way a range admits one).
fn names_prerelease_of(req: &VersionReq, v: &Version) -> bool {
    req.comparators
        .iter()
        .any(|c| !c.pre.is_empty() && c.major == v.major && c.minor == Some(v.minor) && c.patch == Some(v.patch))
}

struct Scope<'a> {
    include: bool,
    above: Option<&'a Version>,
    line: Option<(u64, Option<u64>)>,
}

/// The picked row's index, or the refusal's slug.
fn reference(rows: &[Row], version: Option<&str>, track: Option<&str>, scope: &Scope) -> Result<usize, &'static str> {
    if let Some(exact) = version.filter(|v| Version::parse(v).is_ok()) {
        let i = rows.iter().position(|r| r.version == exact).ok_or("not-found")?;
        return match (rows[i].quarantined, rows[i].yanked) {
            (true, _) => Err("version-quarantined"),
            (_, true) => Err("version-yanked"),
            _ => Ok(i),
        };
    }
    let req = match (version, track) {
        (Some(range), None) => VersionReq::parse(range).map_err(|_| "invalid-range")?,
        (None, Some(track)) => VersionReq::parse(&format!("={track}")).map_err(|_| "invalid-track")?,
        (None, None) => VersionReq::STAR,
        (Some(_), Some(_)) => return Err("invalid-request"),
    };
    let admitted_rows: Vec<(usize, Version)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Version::parse(&r.version).ok().map(|v| (i, v)))
        .filter(|(_, v)| admitted(&req, v, scope.include))
        .filter(|(_, v)| scope.above.is_none_or(|a| v > a))
        .filter(|(_, v)| scope.line.is_none_or(|l| line(v) == l))
        .collect();
    let best = |keep: &dyn Fn(&Row) -> bool| {
        admitted_rows.iter().filter(|(i, _)| keep(&rows[*i])).max_by(|a, b| a.1.cmp(&b.1)).map(|(i, _)| *i)
    };
    if let Some(i) = best(&|r| !r.yanked && !r.quarantined) {
        return Ok(i);
    }
    if best(&|r| !r.yanked).is_some() {
        return Err("version-quarantined");
    }
    Err("no-matching-version")
}

fn reference_upgrade(rows: &[Row], from: &Version, case: &ResolveCase, up: &Upgrade) -> Result<usize, &'static str> {
    if case.version.is_none() && case.track.is_none() {
        let scope =
            Scope { include: case.include_prerelease, above: Some(from), line: (!up.allow_major).then(|| line(from)) };
        return match reference(rows, None, None, &scope) {
            Err("no-matching-version") => Err("no-newer-version"),
            other => other,
        };
    }
    let scope = Scope { include: case.include_prerelease, above: None, line: None };
    let i = reference(rows, case.version.as_deref(), case.track.as_deref(), &scope)?;
    let to = Version::parse(&rows[i].version).map_err(|_| "unparsable")?;
    if to == *from {
        return Err("same-version");
    }
    if to < *from && !up.allow_downgrade {
        return Err("downgrade-refused");
    }
    if line(&to) != line(from) && !up.allow_major {
        return Err("major-upgrade-refused");
    }
    Ok(i)
}

// --- the property -----------------------------------------------------------------------------

fn same(rows: &[Row], real: &Result<&Row, ResolveError>, expected: &Result<usize, &'static str>) -> TestCaseResult {
    match (real, expected) {
        (Ok(row), Ok(i)) => {
            prop_assert_eq!(
                Version::parse(&row.version).ok(),
                Version::parse(&rows[*i].version).ok(),
                "not the highest match"
            );
        }
        (Err(e), Err(kind)) => prop_assert_eq!(e.kind(), *kind, "{}", e),
        (real, expected) => {
            return Err(TestCaseError::fail(format!(
                "resolved {:?}, the reference {:?}",
                real.as_ref().map(|r| &r.version).map_err(|e| e.to_string()),
                expected.map(|i| &rows[i].version)
            )));
        }
    }
    Ok(())
}

fn rules(case: &ResolveCase, picked: &Row, exact: bool) -> TestCaseResult {
    prop_assert!(!picked.yanked && !picked.quarantined, "picked a yanked or quarantined version");
    let v = Version::parse(&picked.version).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if !v.pre.is_empty() && !exact && !case.include_prerelease {
        let req = match (&case.version, &case.track) {
            (Some(range), None) => VersionReq::parse(range).ok(),
            (None, Some(track)) => VersionReq::parse(&format!("={track}")).ok(),
            _ => None,
        };
        let named = req.is_some_and(|req| names_prerelease_of(&req, &v));
        prop_assert!(named, "picked the prerelease {} unasked", v);
    }
    Ok(())
}

fn check(case: ResolveCase) -> TestCaseResult {
    let rows = &case.versions;
    let exact = case.version.as_deref().is_some_and(|v| Version::parse(v).is_ok());
    let above = case.above.as_deref().and_then(|v| Version::parse(v).ok());
    let line_of = case.line_of.as_deref().and_then(|v| Version::parse(v).ok());
    let app = "acme/app";
    match &case.upgrade {
        None => {
            let candidates = Candidates {
                include_prerelease: case.include_prerelease,
                above: above.as_ref(),
                line: line_of.as_ref().map(Line::of),
            };
            let real = resolve_version_among(app, rows, case.version.as_deref(), case.track.as_deref(), candidates);
            let scope =
                Scope { include: case.include_prerelease, above: above.as_ref(), line: line_of.as_ref().map(line) };
            same(rows, &real, &reference(rows, case.version.as_deref(), case.track.as_deref(), &scope))?;
            if let Ok(row) = &real {
                rules(&case, row, exact)?;
                let v = Version::parse(&row.version).unwrap();
                prop_assert!(exact || above.as_ref().is_none_or(|a| v > *a));
                prop_assert!(line_of.as_ref().is_none_or(|l| exact || line(&v) == line(l)));
            }
            if let Err(e) = &real {
                prop_assert!(["version", "track"].contains(&e.field()));
            }
        }
        Some(up) => {
            let Ok(from) = Version::parse(&up.from) else { return Ok(()) };
            let request = UpgradeRequest {
                version: case.version.clone(),
                track: case.track.clone(),
                allow_downgrade: up.allow_downgrade,
                allow_major: up.allow_major,
                include_prerelease: case.include_prerelease,
            };
            let real = upgrade_target(app, rows, &from, &request);
            same(rows, &real, &reference_upgrade(rows, &from, &case, up))?;
            if let Ok(row) = &real {
                rules(&case, row, exact)?;
                let to = Version::parse(&row.version).unwrap();
                prop_assert!(to != from, "an upgrade to the same version");
                if case.version.is_none() && case.track.is_none() {
                    prop_assert!(to > from, "an upgrade without a version moved down");
                    prop_assert!(up.allow_major || line(&to) == line(&from), "left the line without allowMajor");
                }
                prop_assert!(to > from || up.allow_downgrade);
                prop_assert!(up.allow_major || line(&to) == line(&from));
            }
        }
    }
    Ok(())
}

// --- inputs -------------------------------------------------------------------------------

fn version_text() -> BoxedStrategy<String> {
    prop_oneof![
        12 => (0u64..4, 0u64..4, 0u64..3, prop::sample::select(vec!["", "", "", "", "-rc.1", "-rc.2", "-beta.1", "-alpha", "-0"]),
               prop::sample::select(vec!["", "", "", "", "", "", "+b1"]))
            .prop_map(|(a, b, c, pre, build)| format!("{a}.{b}.{c}{pre}{build}")),
        1 => prop::sample::select(vec!["x", "1.0", "", "01.0.0", "1.0.0-", "18446744073709551616.0.0"]).prop_map(str::to_string),
    ]
    .boxed()
}

fn range() -> BoxedStrategy<String> {
    let op = prop::sample::select(vec!["", "^", "~", "=", ">=", ">", "<", "<=", "=", "^"]);
    let partial = prop_oneof![
        (0u64..4).prop_map(|a| a.to_string()),
        (0u64..4, 0u64..4).prop_map(|(a, b)| format!("{a}.{b}")),
        version_text(),
        Just("*".to_string()),
        Just("1.x".to_string()),
    ];
    let comparator = (op, partial).prop_map(|(op, v)| format!("{op}{v}"));
    prop_oneof![
        4 => comparator.clone(),
        1 => (comparator.clone(), comparator).prop_map(|(a, b)| format!("{a}, {b}")),
        1 => Just("*".to_string()),
        1 => "[ -~]{0,8}",
    ]
    .boxed()
}

fn cases() -> BoxedStrategy<ResolveCase> {
    let row = (version_text(), prop::bool::weighted(0.15), prop::bool::weighted(0.15))
        .prop_map(|(version, yanked, quarantined)| Row { version, yanked, quarantined });
    let versions = proptest::collection::vec(row, 0..9);
    let request = prop_oneof![
        3 => Just((None, None)),
        3 => version_text().prop_map(|v| (Some(v), None)),
        3 => range().prop_map(|r| (Some(r), None)),
        2 => prop_oneof![(0u64..4).prop_map(|a| a.to_string()), (0u64..4, 0u64..4).prop_map(|(a, b)| format!("{a}.{b}")), range()]
            .prop_map(|t| (None, Some(t))),
        1 => (range(), range()).prop_map(|(v, t)| (Some(v), Some(t))),
    ];
    let upgrade = proptest::option::weighted(
        0.4,
        (version_text(), any::<bool>(), any::<bool>()).prop_map(|(from, allow_downgrade, allow_major)| Upgrade {
            from,
            allow_downgrade,
            allow_major,
        }),
    );
    (
        versions,
        request,
        prop::bool::weighted(0.3),
        proptest::option::weighted(0.2, version_text()),
        proptest::option::weighted(0.2, version_text()),
        upgrade,
    )
        .prop_map(|(mut versions, (version, track), include_prerelease, above, line_of, upgrade)| {
            // An exact request names a registered version more often than not.
            if let (Some(v), Some(first)) = (&version, versions.first_mut())
                && v.len() % 2 == 0
                && Version::parse(v).is_ok()
            {
                first.version = v.clone();
            }
            ResolveCase { versions, version, track, include_prerelease, above, line_of, upgrade }
        })
        .boxed()
}

#[test]
fn resolve() {
    fuzz("resolve", cases(), check);
}
