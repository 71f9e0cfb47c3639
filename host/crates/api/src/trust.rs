//! Trust as the operator administers it: partner certificates (added, listed, removed)
//! and the versions quarantined because of them.

use serde::{Deserialize, Serialize};

/// A certificate's fingerprint and state after an upload.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateState {
    pub fingerprint: String,
    /// `valid`, `expired`, `revoked` or `invalid`.
    pub state: String,
}

/// What an upload registered; `quarantined` lists the versions (`app@version`) a revoked
/// certificate signed, quarantined in the same transaction.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificatesAdded {
    pub partner: String,
    pub fingerprints: Vec<String>,
    pub certificates: Vec<CertificateState>,
    pub quarantined: Vec<String>,
    /// Whether at least one certificate is new (else registered copies were updated).
    #[serde(skip)]
    pub created: bool,
}

/// Why a certificate's versions were quarantined: `revoked`, `removed` by the operator,
/// or `missing` (gone from the config file).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Distrust {
    pub state: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A partner's certificate: where it is registered (`api`, `config`, or `none` once
/// removed), its state (`valid`, `expired`, `revoked`, `invalid`, `removed`) and the
/// versions it signed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    pub fingerprint: String,
    pub source: String,
    pub state: String,
    pub revoked_at_ms: Option<i64>,
    pub revocation_reason: Option<String>,
    pub user_ids: Vec<String>,
    pub created_ms: Option<i64>,
    pub signed_versions: u64,
    pub quarantined_versions: u64,
    pub distrusted: Option<Distrust>,
}

/// A removed certificate and the versions (`app@version`) it signed, now quarantined.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateRemoved {
    pub partner: String,
    pub fingerprint: String,
    pub removed: bool,
    pub quarantined: Vec<String>,
}

/// A version's state as the operator sets it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionState {
    pub app: String,
    pub version: String,
    pub yanked: bool,
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    /// Fingerprint of the certificate that signed it.
    pub signer: String,
}

/// A quarantined version with its signer and the reason (`quarantinedMs`: when).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedVersion {
    pub app: String,
    pub version: String,
    pub signer: String,
    pub reason: String,
    pub quarantined_ms: Option<i64>,
}
