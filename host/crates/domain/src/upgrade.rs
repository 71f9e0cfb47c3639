//! Installation upgrade policies: which newer versions Kiosk moves an installation to
//! by itself.

use crate::resolve::{Candidates, Line};

/// How far Kiosk upgrades an installation by itself when a newer version is registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpgradePolicy {
    /// Never by itself (the default: an upgrade runs the app's hook and changes the code
    /// a tenant runs, so it is the tenant's choice unless they opt in).
    #[default]
    None,
    /// Releases of the same major.minor (`1.4.2` → `1.4.5`).
    Patch,
    /// Releases of the same major version (`1.4.2` → `1.7.0`); for 0.x the minor is
    /// the compatibility line (semver's caret rule), so it moves no further than patch.
    Minor,
}

/// Text that is not a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an upgrade policy: use none, patch or minor")]
pub struct UnknownPolicy(pub String);

impl UpgradePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Patch => "patch",
            Self::Minor => "minor",
        }
    }

    /// Whether the policy moves an installation on `from` to `to` by itself: a release
    /// (never a prerelease) above `from` on its compatibility line (what an upgrade
    /// without a version may pick: `resolve::Candidates`), inside the policy's range.
    /// Yanked and quarantined versions are the caller's to skip.
    pub fn admits(self, from: &semver::Version, to: &semver::Version) -> bool {
        let upgrade = Candidates { include_prerelease: false, above: Some(from), line: Some(Line::of(from)) };
        if !upgrade.admit(&semver::VersionReq::STAR, to) {
            return false;
        }
        match self {
            Self::None => false,
            Self::Patch => to.minor == from.minor,
            // The line: the major version, and for 0.x the minor too.
            Self::Minor => true,
        }
    }
}

impl std::str::FromStr for UpgradePolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "patch" => Ok(Self::Patch),
            "minor" => Ok(Self::Minor),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

impl std::fmt::Display for UpgradePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn admits(policy: UpgradePolicy, from: &str, to: &str) -> bool {
        policy.admits(&semver::Version::parse(from).unwrap(), &semver::Version::parse(to).unwrap())
    }

    #[test]
    fn policies_admit_releases_above_inside_their_range() {
        use UpgradePolicy::*;
        assert!(!admits(None, "1.0.0", "1.0.1"));
        assert!(admits(Patch, "1.0.0", "1.0.1"));
        assert!(!admits(Patch, "1.0.0", "1.1.0"));
        assert!(admits(Minor, "1.0.0", "1.1.0"));
        assert!(admits(Minor, "1.0.0", "1.0.1"));
        assert!(!admits(Minor, "1.9.0", "2.0.0"), "never another major version");
        assert!(!admits(Patch, "1.0.1", "1.0.0"), "never down");
        assert!(!admits(Minor, "1.0.1", "1.0.1"), "never the same");
        assert!(!admits(Patch, "1.0.0", "1.0.1-rc.1"), "never a prerelease");
        assert!(!admits(Minor, "1.0.0", "1.2.0-beta.1"));
        assert!(admits(Minor, "0.3.1", "0.3.4"));
        assert!(!admits(Minor, "0.3.1", "0.4.0"), "0.x: the minor is the compatibility line");
    }

    #[test]
    fn policies_round_trip_through_text() {
        for p in [UpgradePolicy::None, UpgradePolicy::Patch, UpgradePolicy::Minor] {
            assert_eq!(p.as_str().parse::<UpgradePolicy>().unwrap(), p);
        }
        assert!("major".parse::<UpgradePolicy>().is_err());
    }
}
