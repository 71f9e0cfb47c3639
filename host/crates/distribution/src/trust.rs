//! OpenPGP trust (SPEC §2, step 2): the operator registers certificates per partner;
//! the config blob and the wasm blob of an artifact must EACH carry at least one good
//! detached signature from a certificate registered for the partner that owns the app.
//! Every refusal names what failed: which key, which partner, which blob, and why.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use openpgp::cert::CertParser;
use openpgp::cert::amalgamation::ValidAmalgamation;
use openpgp::packet::{Packet, Signature};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::types::RevocationStatus;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

/// Certificates the operator registered, per partner.
#[derive(Debug, Default, Clone)]
pub struct TrustStore {
    partners: BTreeMap<String, Vec<Cert>>,
}

/// A certificate could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not an OpenPGP certificate: {0}")]
    Parse(String),
    #[error("the certificate file holds no certificate")]
    Empty,
    #[error("certificate {0} contains secret key material; register the public certificate only")]
    Secret(String),
}

/// Who signed a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub partner: String,
    /// Fingerprint of the certificate's primary key (uppercase hex).
    pub fingerprint: String,
}

/// Which part of the artifact a signature must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    Manifest,
    Component,
    /// The optional icon layer (catalog metadata), signed like the other two.
    Icon,
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blob::Manifest => "manifest (config blob)",
            Blob::Component => "component (wasm blob)",
            Blob::Icon => "icon (image layer)",
        })
    }
}

/// Why one signature did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Malformed(String),
    NoIssuer,
    Unregistered { key: String },
    OtherPartner { key: String, owner: String },
    Revoked { cert: String },
    Expired { cert: String },
    InvalidCert { cert: String, reason: String },
    NotSigningKey { cert: String, key: String, reason: String },
    WeakSignature { cert: String, reason: String },
    OtherBytes { cert: String },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Malformed(e) => {
                write!(f, "a signature layer is not an OpenPGP signature ({e})")
            }
            Rejection::NoIssuer => write!(f, "a signature names no issuer key"),
            Rejection::Unregistered { key } => {
                write!(f, "signed by key {key}, which is not registered for any partner")
            }
            Rejection::OtherPartner { key, owner } => {
                write!(f, "signed by key {key}, which is registered for partner {owner:?}, not for this app's partner")
            }
            Rejection::Revoked { cert } => {
                write!(f, "signed by certificate {cert}, which is revoked")
            }
            Rejection::Expired { cert } => {
                write!(f, "signed by certificate {cert}, which has expired")
            }
            Rejection::InvalidCert { cert, reason } => {
                write!(f, "certificate {cert} is not valid: {reason}")
            }
            Rejection::NotSigningKey { cert, key, reason } => {
                write!(f, "key {key} of certificate {cert} cannot sign: {reason}")
            }
            Rejection::WeakSignature { cert, reason } => {
                write!(f, "signature by certificate {cert} is refused by policy: {reason}")
            }
            Rejection::OtherBytes { cert } => {
                write!(f, "signature by certificate {cert} is over other bytes")
            }
        }
    }
}

/// The artifact's signatures do not prove who made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the artifact carries no signature layer (application/pgp-signature)")]
    Unsigned,
    #[error("no partner {partner:?} is registered, so no signature can be trusted for its app")]
    UnknownPartner { partner: String },
    #[error("the {blob} has no good signature from partner {partner:?}: {}", join(.rejections))]
    NotSigned { blob: Blob, partner: String, rejections: Vec<Rejection> },
}

fn join(rejections: &[Rejection]) -> String {
    if rejections.is_empty() {
        return "none of the signatures covers it".to_string();
    }
    rejections.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The artifact's signers, one per blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Signer,
    pub component: Signer,
}

fn fpr(h: &KeyHandle) -> String {
    h.to_hex()
}

impl TrustStore {
    /// Registers the certificates in `bytes` (ASCII-armoured or binary, one or more)
    /// for `partner`; returns their fingerprints.
    pub fn add(&mut self, partner: &str, bytes: &[u8]) -> Result<Vec<String>, CertError> {
        let mut added = Vec::new();
        for cert in CertParser::from_bytes(bytes).map_err(|e| CertError::Parse(e.to_string()))? {
            let cert = cert.map_err(|e| CertError::Parse(e.to_string()))?;
            if cert.is_tsk() {
                return Err(CertError::Secret(cert.fingerprint().to_hex()));
            }
            added.push(cert.fingerprint().to_hex());
            self.insert(partner, cert)?;
        }
        if added.is_empty() {
            return Err(CertError::Empty);
        }
        Ok(added)
    }

    /// Registers, of the certificates in `bytes`, only the one whose primary key has
    /// `fingerprint` (a stored row: older rows hold a whole upload); `false` if absent.
    pub fn add_fingerprint(&mut self, partner: &str, bytes: &[u8], fingerprint: &str) -> Result<bool, CertError> {
        for cert in CertParser::from_bytes(bytes).map_err(|e| CertError::Parse(e.to_string()))? {
            let cert = cert.map_err(|e| CertError::Parse(e.to_string()))?;
            if cert.fingerprint().to_hex() == fingerprint {
                if cert.is_tsk() {
                    return Err(CertError::Secret(fingerprint.to_string()));
                }
                self.insert(partner, cert)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn insert(&mut self, partner: &str, cert: Cert) -> Result<(), CertError> {
        let certs = self.partners.entry(partner.to_string()).or_default();
        match certs.iter().position(|c| c.fingerprint() == cert.fingerprint()) {
            // Merging keeps revocations and new expiry dates the operator re-imports.
            Some(i) => {
                let old = certs.remove(i);
                let merged = old.merge_public(cert).map_err(|e| CertError::Parse(e.to_string()))?;
                certs.push(merged);
            }
            None => certs.push(cert),
        }
        Ok(())
    }

    /// Verifies that `manifest` and `component` each carry a good signature, among
    /// `signature_layers`, from a certificate registered for `partner`.
    pub fn verify_artifact(
        &self,
        partner: &str,
        manifest: &[u8],
        component: &[u8],
        signature_layers: &[Vec<u8>],
    ) -> Result<Verified, SignatureError> {
        let signers =
            self.verify_blobs(partner, &[(Blob::Manifest, manifest), (Blob::Component, component)], signature_layers)?;
        let [manifest, component] = <[Signer; 2]>::try_from(signers).map_err(|_| SignatureError::Unsigned)?;
        Ok(Verified { manifest, component })
    }

    /// Verifies that each of `blobs` carries a good signature, among `signature_layers`,
    /// from a certificate registered for `partner`; their signers, in order. The first
    /// blob without one is the error, naming why each signature did not count for it.
    pub fn verify_blobs(
        &self,
        partner: &str,
        blobs: &[(Blob, &[u8])],
        signature_layers: &[Vec<u8>],
    ) -> Result<Vec<Signer>, SignatureError> {
        if signature_layers.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        if !self.partners.contains_key(partner) {
            return Err(SignatureError::UnknownPartner { partner: partner.to_string() });
        }
        let mut signatures = Vec::new();
        let mut malformed = Vec::new();
        for layer in signature_layers {
            match parse_signatures(layer) {
                Ok(sigs) if !sigs.is_empty() => signatures.extend(sigs),
                Ok(_) => malformed.push(Rejection::Malformed("no signature packet".into())),
                Err(e) => malformed.push(Rejection::Malformed(e)),
            }
        }
        let now = SystemTime::now();
        // checks[s][b]: signature s over blob b.
        let checks: Vec<Vec<Result<Signer, Rejection>>> = signatures
            .iter()
            .map(|sig| blobs.iter().map(|(_, data)| self.check(partner, sig, data, now)).collect())
            .collect();
        let mut signers = Vec::with_capacity(blobs.len());
        for (i, (blob, _)) in blobs.iter().enumerate() {
            if let Some(Ok(signer)) = checks.iter().map(|c| &c[i]).find(|r| r.is_ok()) {
                signers.push(signer.clone());
                continue;
            }
            // Signatures that are good for another blob are not failures for this one.
            let good_elsewhere =
                |c: &Vec<Result<Signer, Rejection>>| c.iter().enumerate().any(|(j, r)| j != i && r.is_ok());
            let mut rejections: Vec<Rejection> =
                checks.iter().filter(|c| !good_elsewhere(c)).filter_map(|c| c[i].clone().err()).collect();
            rejections.extend(malformed.iter().cloned());
            rejections.dedup();
            return Err(SignatureError::NotSigned { blob: *blob, partner: partner.to_string(), rejections });
        }
        Ok(signers)
    }

    fn owner_of(&self, issuers: &[KeyHandle]) -> Option<(&str, &Cert)> {
        self.partners.iter().find_map(|(partner, certs)| {
            certs
                .iter()
                .find(|c| c.keys().any(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle()))))
                .map(|c| (partner.as_str(), c))
        })
    }

    fn check(&self, partner: &str, sig: &Signature, data: &[u8], now: SystemTime) -> Result<Signer, Rejection> {
        let issuers = sig.get_issuers();
        let Some(first) = issuers.first() else {
            return Err(Rejection::NoIssuer);
        };
        let own = self.partners.get(partner).and_then(|certs| {
            certs.iter().find(|c| c.keys().any(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle()))))
        });
        let cert = match own {
            Some(cert) => cert,
            None => {
                return Err(match self.owner_of(&issuers) {
                    Some((owner, cert)) => {
                        Rejection::OtherPartner { key: cert.fingerprint().to_hex(), owner: owner.to_string() }
                    }
                    None => Rejection::Unregistered { key: fpr(first) },
                });
            }
        };
        let cert_fpr = cert.fingerprint().to_hex();
        let policy = StandardPolicy::new();
        if let RevocationStatus::Revoked(_) = cert.revocation_status(&policy, now) {
            return Err(Rejection::Revoked { cert: cert_fpr });
        }
        let valid = cert
            .with_policy(&policy, now)
            .map_err(|e| Rejection::InvalidCert { cert: cert_fpr.clone(), reason: e.to_string() })?;
        if valid.alive().is_err() {
            return Err(Rejection::Expired { cert: cert_fpr });
        }
        let key = valid.keys().find(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle()))).ok_or_else(|| {
            Rejection::NotSigningKey {
                cert: cert_fpr.clone(),
                key: fpr(first),
                reason: "no valid binding for this key".into(),
            }
        })?;
        let key_fpr = key.key().fingerprint().to_hex();
        if let RevocationStatus::Revoked(_) = key.revocation_status() {
            return Err(Rejection::NotSigningKey { cert: cert_fpr, key: key_fpr, reason: "the key is revoked".into() });
        }
        if key.alive().is_err() {
            return Err(Rejection::Expired { cert: cert_fpr });
        }
        if !key.for_signing() {
            return Err(Rejection::NotSigningKey {
                cert: cert_fpr,
                key: key_fpr,
                reason: "it is not a signing key".into(),
            });
        }
        if let Err(e) = policy.signature(sig, HashAlgoSecurity::CollisionResistance) {
            return Err(Rejection::WeakSignature { cert: cert_fpr, reason: e.to_string() });
        }
        if sig.signature_alive(now, std::time::Duration::from_secs(0)).is_err() {
            return Err(Rejection::WeakSignature {
                cert: cert_fpr,
                reason: "the signature has expired or is from the future".into(),
            });
        }
        sig.verify_message(key.key(), data).map_err(|_| Rejection::OtherBytes { cert: cert_fpr.clone() })?;
        Ok(Signer { partner: partner.to_string(), fingerprint: cert_fpr })
    }
}

/// Every signature packet in a detached signature (armoured or binary).
fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, String> {
    let mut out = Vec::new();
    let mut ppr = PacketParser::from_bytes(bytes).map_err(|e| e.to_string())?;
    while let PacketParserResult::Some(pp) = ppr {
        let (packet, next) = pp.next().map_err(|e| e.to_string())?;
        match packet {
            Packet::Signature(sig) => out.push(sig),
            other => return Err(format!("unexpected {} packet", other.tag())),
        }
        ppr = next;
    }
    Ok(out)
}

// --- revocation (SPEC §2 step 6) ----------------------------------------------------------

/// What a certificate is worth now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    Valid,
    Expired,
    /// Revoked (by any revocation: a signature's creation time is the signer's word,
    /// so a compromised key could backdate, and every revocation is taken as hard).
    Revoked {
        /// When the first revocation signature was made (ms since the epoch).
        at_ms: Option<i64>,
        /// The reason the revocation states, if any.
        reason: Option<String>,
    },
    /// Refused by policy (e.g. no valid self-signature).
    Invalid(String),
}

impl CertState {
    pub fn name(&self) -> &'static str {
        match self {
            CertState::Valid => "valid",
            CertState::Expired => "expired",
            CertState::Revoked { .. } => "revoked",
            CertState::Invalid(_) => "invalid",
        }
    }
}

/// The state of `cert` at `now`.
pub fn cert_state(cert: &Cert, now: SystemTime) -> CertState {
    let policy = StandardPolicy::new();
    if let RevocationStatus::Revoked(sigs) = cert.revocation_status(&policy, now) {
        let at_ms = sigs
            .iter()
            .filter_map(|s| s.signature_creation_time())
            .min()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok());
        let reason = sigs.iter().find_map(|s| s.reason_for_revocation()).map(|(code, message)| {
            let message = String::from_utf8_lossy(message);
            let message = kiosk_domain::text::sanitize_capped(message.trim(), 200);
            if message.is_empty() { code.to_string() } else { format!("{code}: {message}") }
        });
        return CertState::Revoked { at_ms, reason };
    }
    match cert.with_policy(&policy, now) {
        Err(e) => CertState::Invalid(e.to_string()),
        Ok(valid) if valid.alive().is_err() => CertState::Expired,
        Ok(_) => CertState::Valid,
    }
}

/// What an operator uploaded for a partner.
#[derive(Debug)]
pub enum Upload {
    /// Public certificates (possibly carrying revocations).
    Certs(Vec<Cert>),
    /// A revocation certificate: bare key revocation signatures, as
    /// `gpg --gen-revoke` and `openpgp-revocs.d/*.rev` hold them.
    Revocations(Vec<Signature>),
}

/// Parses an upload. The ':' gpg puts before the armour line of the revocation
/// certificates it makes at key generation (so they are not imported by accident) is
/// accepted.
pub fn parse_upload(bytes: &[u8]) -> Result<Upload, CertError> {
    let text = String::from_utf8_lossy(bytes);
    let cleaned;
    let bytes = if text.contains(":-----BEGIN PGP") {
        cleaned = text.replace(":-----BEGIN PGP", "-----BEGIN PGP");
        cleaned.as_bytes()
    } else {
        bytes
    };
    let first_is_signature = match PacketParser::from_bytes(bytes) {
        Ok(PacketParserResult::Some(pp)) => matches!(pp.packet, Packet::Signature(_)),
        Ok(PacketParserResult::EOF(_)) => return Err(CertError::Empty),
        Err(e) => return Err(CertError::Parse(e.to_string())),
    };
    if first_is_signature {
        let sigs = parse_signatures(bytes).map_err(CertError::Parse)?;
        if let Some(other) = sigs.iter().find(|s| s.typ() != openpgp::types::SignatureType::KeyRevocation) {
            return Err(CertError::Parse(format!(
                "a bare signature of type {} is not a revocation certificate (expected a key revocation)",
                other.typ()
            )));
        }
        return Ok(Upload::Revocations(sigs));
    }
    let mut certs = Vec::new();
    for cert in CertParser::from_bytes(bytes).map_err(|e| CertError::Parse(e.to_string()))? {
        let cert = cert.map_err(|e| CertError::Parse(e.to_string()))?;
        if cert.is_tsk() {
            return Err(CertError::Secret(cert.fingerprint().to_hex()));
        }
        // Kiosk stores a certificate armoured: one it cannot write out is refused here.
        armored(&cert)?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(Upload::Certs(certs))
}

/// `cert` with the revocation `sig` applied; refused if the result is not revoked (the
/// signature is not a valid revocation of this certificate).
pub fn apply_revocation(cert: Cert, sig: Signature) -> Result<Cert, CertError> {
    let fingerprint = cert.fingerprint().to_hex();
    let (revoked, _) = cert.insert_packets(Packet::from(sig)).map_err(|e| CertError::Parse(e.to_string()))?;
    match cert_state(&revoked, SystemTime::now()) {
        // Stored armoured, like any certificate.
        CertState::Revoked { .. } => armored(&revoked).map(|_| revoked),
        _ => Err(CertError::Parse(format!(
            "the revocation certificate does not validly revoke certificate {fingerprint} (not made by its primary key)"
        ))),
    }
}

/// `old` and `new` merged: revocations and new expiry dates are kept, whichever copy
/// carried them.
pub fn merge(old: Cert, new: Cert) -> Result<Cert, CertError> {
    old.merge_public(new).map_err(|e| CertError::Parse(e.to_string()))
}

/// The public certificate, ASCII-armoured.
pub fn armored(cert: &Cert) -> Result<Vec<u8>, CertError> {
    use openpgp::serialize::SerializeInto as _;
    cert.armored().to_vec().map_err(|e| CertError::Parse(e.to_string()))
}

/// The user ids of a certificate, as text (for listings).
pub fn user_ids(cert: &Cert) -> Vec<String> {
    cert.userids()
        .map(|u| kiosk_domain::text::sanitize_capped(&String::from_utf8_lossy(u.userid().value()), 200))
        .collect()
}

impl TrustStore {
    /// Every certificate with its partner.
    pub fn certificates(&self) -> impl Iterator<Item = (&str, &Cert)> {
        self.partners.iter().flat_map(|(p, certs)| certs.iter().map(move |c| (p.as_str(), c)))
    }

    /// The certificate with this primary fingerprint, and its partner.
    pub fn find(&self, fingerprint: &str) -> Option<(&str, &Cert)> {
        self.certificates().find(|(_, c)| c.fingerprint().to_hex() == fingerprint)
    }

    /// The certificate holding one of `issuers` (any of its keys), and its partner.
    pub fn find_issuer(&self, issuers: &[KeyHandle]) -> Option<(&str, &Cert)> {
        self.owner_of(issuers)
    }
}
