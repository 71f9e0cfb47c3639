//! What failed, as a closed set: every `Failure` carries a `Kind`, whose slug is the
//! problem type the API answers (`urn:kiosk:problem:{slug}`) and what `kiosk run` prints.
//! Code that branches on a failure matches a variant, never compares text.

macro_rules! kinds {
    ($($variant:ident = $slug:literal,)*) => {
        /// What failed (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($variant,)*
        }

        impl Kind {
            /// Every kind, for the contract's list of problem types.
            pub const ALL: &[Kind] = &[$(Kind::$variant,)*];

            /// The stable slug.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $slug,)*
                }
            }
        }
    };
}

kinds! {
    AppFailed = "app-failed",
    AppRefused = "app-refused",
    ArtifactRefused = "artifact-refused",
    CertificateInConfig = "certificate-in-config",
    CertificateOwned = "certificate-owned",
    ComponentNotRunnable = "component-not-runnable",
    ConfigInvalid = "config-invalid",
    ConfigValidationTimeout = "config-validation-timeout",
    DowngradeRefused = "downgrade-refused",
    EntitlementExpired = "entitlement-expired",
    EntitlementMissing = "entitlement-missing",
    EntitlementRevoked = "entitlement-revoked",
    Exists = "exists",
    HostApiMismatch = "host-api-mismatch",
    IconRefused = "icon-refused",
    IdempotencyKeyInvalid = "idempotency-key-invalid",
    IdempotencyKeyReused = "idempotency-key-reused",
    InputTooLarge = "input-too-large",
    InstallationChanged = "installation-changed",
    Internal = "internal",
    InvalidApp = "invalid-app",
    InvalidCertificate = "invalid-certificate",
    InvalidDestinations = "invalid-destinations",
    InvalidHost = "invalid-host",
    InvalidInterval = "invalid-interval",
    InvalidLimit = "invalid-limit",
    InvalidPrivateAppPolicy = "invalid-private-app-policy",
    InvalidQuery = "invalid-query",
    InvalidRange = "invalid-range",
    InvalidReference = "invalid-reference",
    InvalidRegistry = "invalid-registry",
    InvalidRequest = "invalid-request",
    InvalidSink = "invalid-sink",
    InvalidToken = "invalid-token",
    InvalidTrack = "invalid-track",
    LastOperatorToken = "last-operator-token",
    LayoutNotAllowed = "layout-not-allowed",
    LimitAboveCeiling = "limit-above-ceiling",
    MajorUpgradeRefused = "major-upgrade-refused",
    ManifestInvalid = "manifest-invalid",
    MovedTag = "moved-tag",
    NoMatchingVersion = "no-matching-version",
    NoNewerVersion = "no-newer-version",
    NoOutboundHttp = "no-outbound-http",
    NoSandboxSlot = "no-sandbox-slot",
    NotFound = "not-found",
    PartnerDisabled = "partner-disabled",
    PrivateAppQuota = "private-app-quota",
    PrivateAppsOff = "private-apps-off",
    RegistryNotAllowed = "registry-not-allowed",
    RegistryRefused = "registry-refused",
    RegistryUnavailable = "registry-unavailable",
    SameVersion = "same-version",
    ShuttingDown = "shutting-down",
    SignatureRefused = "signature-refused",
    SinkInConfig = "sink-in-config",
    StorageUnavailable = "storage-unavailable",
    TagListInvalid = "tag-list-invalid",
    TagListTooLarge = "tag-list-too-large",
    TagNotFound = "tag-not-found",
    TenantConcurrencyLimit = "tenant-concurrency-limit",
    TenantQuota = "tenant-quota",
    TenantRateLimit = "tenant-rate-limit",
    TenantSuspended = "tenant-suspended",
    TooManyRecords = "too-many-records",
    TooManyWatches = "too-many-watches",
    UsageNotRecorded = "usage-not-recorded",
    VersionExists = "version-exists",
    VersionQuarantined = "version-quarantined",
    VersionYanked = "version-yanked",
    WatchExists = "watch-exists",
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn slugs_are_distinct_lowercase_words() {
        let mut seen = std::collections::HashSet::new();
        for kind in Kind::ALL {
            let slug = kind.as_str();
            assert!(seen.insert(slug), "{slug} twice");
            assert!(slug.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())), "{slug}");
        }
    }
}
