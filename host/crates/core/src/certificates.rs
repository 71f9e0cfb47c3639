//! Partner certificates as the operator manages them, for every front end (the API's
//! `POST /v1/partners/{p}/certificates` and `kiosk pull --cert` alike): certificates
//! added (merged with registered copies, one partner per fingerprint), revocation
//! certificates applied, certificates listed with their state and removed; a certificate
//! that is (now) revoked or removed quarantines every version it signed, in the same
//! transaction. Also the operator's yank and quarantine of any version.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use kiosk_api::trust::{
    CertificateRemoved, CertificateState, CertificateView, CertificatesAdded, Distrust, QuarantinedVersion,
    VersionState,
};
use kiosk_distribution::trust::{self, CertState, TrustStore, Upload};
use kiosk_store::{CertUpdate, VersionRow};
use sequoia_openpgp::Cert;

use crate::error::{Failure, Kind, Result};
use crate::estate::app_id;
use crate::lifecycle::{Kiosk, find_for, revoked_reason};

fn owned(fingerprint: &str) -> Failure {
    Failure::conflict(
        Kind::CertificateOwned,
        format!(
            "certificate {fingerprint} is registered for another partner; a certificate signs for one partner only"
        ),
    )
    .field("certificate")
}

fn invalid_certificate(detail: impl Into<String>) -> Failure {
    Failure::unprocessable(Kind::InvalidCertificate, detail).field("certificate")
}

/// A fingerprint as written in a URL or by hand: hex, any case, spaces allowed.
pub fn normalize_fingerprint(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase()
}

/// What the operator does to a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// No new installs or upgrades.
    Yank,
    /// Installable again unless quarantined.
    Unyank,
    /// No new installs or upgrades; running installations go on.
    Quarantine,
    /// Out of quarantine, whatever put it there.
    Release,
}

fn version_state(v: &VersionRow) -> VersionState {
    VersionState {
        app: v.app.clone(),
        version: v.version.clone(),
        yanked: v.yanked,
        quarantined: v.quarantined,
        quarantine_reason: v.quarantine_reason.clone(),
        signer: v.signer.clone(),
    }
}

impl Kiosk {
    /// The certificates registered over the API, as a trust store.
    async fn stored_trust(&self) -> Result<TrustStore> {
        let mut trust = TrustStore::default();
        self.add_stored_certificates(&mut trust).await?;
        Ok(trust)
    }

    /// Certificates (new, or new copies of registered ones, merged) or revocation
    /// certificates of registered ones, from armoured or binary OpenPGP `bytes`. A
    /// fingerprint registered for another partner (here or in the config file) is
    /// `certificate-owned` and nothing is written; a certificate that is (now) revoked
    /// quarantines every version it signed, in the same transaction.
    pub async fn add_certificates(&self, partner: &str, bytes: &[u8], actor: &str) -> Result<CertificatesAdded> {
        self.require_partner(partner).await?;
        let upload = trust::parse_upload(bytes).map_err(|e| invalid_certificate(e.to_string()))?;
        let config = self.config.trust_store().map_err(Failure::internal)?;
        let stored = self.stored_trust().await?;
        let owner = |fpr: &str| stored.find(fpr).or_else(|| config.find(fpr)).map(|(p, _)| p.to_string());
        // fingerprint -> the copy to store, in upload order.
        let mut order: Vec<String> = Vec::new();
        let mut certs: HashMap<String, Cert> = HashMap::new();
        let mut created = false;
        let mut keep = |fpr: String, cert: Cert| -> Result<()> {
            let cert = match certs.remove(&fpr) {
                Some(earlier) => trust::merge(earlier, cert).map_err(|e| invalid_certificate(e.to_string()))?,
                None => {
                    order.push(fpr.clone());
                    cert
                }
            };
            certs.insert(fpr, cert);
            Ok(())
        };
        match upload {
            Upload::Certs(list) => {
                for cert in list {
                    let fpr = cert.fingerprint().to_hex();
                    if owner(&fpr).is_some_and(|o| o != partner) {
                        return Err(owned(&fpr));
                    }
                    let cert = match find_for(&stored, partner, &fpr) {
                        Some(old) => trust::merge(old.clone(), cert).map_err(|e| invalid_certificate(e.to_string()))?,
                        None => {
                            created = true;
                            cert
                        }
                    };
                    keep(fpr, cert)?;
                }
            }
            Upload::Revocations(sigs) => {
                for sig in sigs {
                    let issuers = sig.get_issuers();
                    let found = stored.find_issuer(&issuers).or_else(|| config.find_issuer(&issuers));
                    let Some((holder, cert)) = found else {
                        let key = issuers.first().map(|k| k.to_hex()).unwrap_or_default();
                        return Err(invalid_certificate(format!(
                            "the revocation certificate is for key {key}, which is not registered for partner {partner}"
                        )));
                    };
                    let fpr = cert.fingerprint().to_hex();
                    if holder != partner {
                        return Err(owned(&fpr));
                    }
                    if find_for(&stored, partner, &fpr).is_none() {
                        created = true;
                    }
                    let revoked =
                        trust::apply_revocation(cert.clone(), sig).map_err(|e| invalid_certificate(e.to_string()))?;
                    keep(fpr, revoked)?;
                }
            }
        }
        let now = SystemTime::now();
        let mut updates = Vec::new();
        let mut states = Vec::new();
        for fpr in &order {
            let cert = &certs[fpr];
            // What the trust store will see: this copy merged with the config file's.
            let effective = match find_for(&config, partner, fpr) {
                Some(from_config) => trust::merge(cert.clone(), from_config.clone()).map_err(Failure::internal)?,
                None => cert.clone(),
            };
            let state = trust::cert_state(&effective, now);
            let revoked = matches!(state, CertState::Revoked { .. }).then(|| revoked_reason(fpr, &state));
            updates.push(CertUpdate {
                fingerprint: fpr.clone(),
                cert: trust::armored(cert).map_err(Failure::internal)?,
                revoked,
            });
            states.push(CertificateState { fingerprint: fpr.clone(), state: state.name().to_string() });
        }
        let quarantined = match self.store.put_certificates(partner, &updates, actor).await? {
            Ok(quarantined) => quarantined,
            Err(fpr) => return Err(owned(&fpr)),
        };
        if !quarantined.is_empty() {
            tracing::warn!(partner, versions = ?quarantined, "certificate revoked: versions quarantined");
        }
        Ok(CertificatesAdded {
            partner: partner.to_string(),
            fingerprints: order,
            certificates: states,
            quarantined,
            created,
        })
    }

    /// A partner's certificates (registered over the API or in the config file, and
    /// those removed whose versions were quarantined) with their state, by fingerprint.
    pub async fn certificates(&self, partner: &str) -> Result<Vec<CertificateView>> {
        self.require_partner(partner).await?;
        let config = self.config.trust_store().map_err(Failure::internal)?;
        let rows: Vec<_> = self.store.certificate_rows().await?.into_iter().filter(|r| r.partner == partner).collect();
        let distrusted: HashMap<String, _> = self
            .store
            .distrusted_certs()
            .await?
            .into_iter()
            .filter(|d| d.partner == partner)
            .map(|d| (d.fingerprint.clone(), d))
            .collect();
        let mut signed: HashMap<String, (u64, u64)> = HashMap::new();
        for v in self.store.version_signers().await? {
            if v.partner == partner {
                let entry = signed.entry(v.signer).or_default();
                entry.0 += 1;
                entry.1 += u64::from(v.quarantined);
            }
        }
        let now = SystemTime::now();
        let mut views: BTreeMap<String, CertificateView> = BTreeMap::new();
        let mut view = |fpr: &str, source: &str, cert: Option<&Cert>, created_ms: Option<i64>| {
            let state = cert.map(|c| trust::cert_state(c, now));
            let (revoked_at_ms, revocation_reason) = match &state {
                Some(CertState::Revoked { at_ms, reason }) => (*at_ms, reason.clone()),
                _ => (None, None),
            };
            let (n, q) = signed.get(fpr).copied().unwrap_or_default();
            let distrusted = distrusted.get(fpr).map(|d| Distrust {
                state: d.state.clone(),
                reason: d.reason.clone(),
                at_ms: d.at_ms,
            });
            views.insert(
                fpr.to_string(),
                CertificateView {
                    fingerprint: fpr.to_string(),
                    source: source.to_string(),
                    state: state.as_ref().map_or("removed", CertState::name).to_string(),
                    revoked_at_ms,
                    revocation_reason,
                    user_ids: cert.map(trust::user_ids).unwrap_or_default(),
                    created_ms,
                    signed_versions: n,
                    quarantined_versions: q,
                    distrusted,
                },
            );
        };
        for row in &rows {
            let mut one = TrustStore::default();
            one.add_fingerprint(partner, &row.cert, &row.fingerprint).map_err(Failure::internal)?;
            let cert = find_for(&one, partner, &row.fingerprint).cloned();
            let cert = match (cert, find_for(&config, partner, &row.fingerprint)) {
                (Some(c), Some(from_config)) => Some(trust::merge(c, from_config.clone()).map_err(Failure::internal)?),
                (c, _) => c,
            };
            view(&row.fingerprint, "api", cert.as_ref(), Some(row.created_ms));
        }
        for (p, cert) in config.certificates() {
            let fpr = cert.fingerprint().to_hex();
            if p == partner && !rows.iter().any(|r| r.fingerprint == fpr) {
                view(&fpr, "config", Some(cert), None);
            }
        }
        for fpr in distrusted.keys() {
            let present = rows.iter().any(|r| &r.fingerprint == fpr) || find_for(&config, partner, fpr).is_some();
            if !present {
                view(fpr, "none", None, None);
            }
        }
        Ok(views.into_values().collect())
    }

    /// Removes a certificate registered over the API; every version it signed is
    /// quarantined. One in the config file is `certificate-in-config`.
    pub async fn remove_certificate(
        &self,
        partner: &str,
        fingerprint: &str,
        actor: &str,
    ) -> Result<CertificateRemoved> {
        let fpr = normalize_fingerprint(fingerprint);
        self.require_partner(partner).await?;
        let config = self.config.trust_store().map_err(Failure::internal)?;
        if find_for(&config, partner, &fpr).is_some() {
            return Err(Failure::conflict(
                Kind::CertificateInConfig,
                format!(
                    "certificate {fpr} is registered in the operator config file for partner {partner}: remove it there and restart"
                ),
            )
            .field("fingerprint"));
        }
        let reason = format!("signing certificate {fpr} was removed by the operator");
        let Some(quarantined) = self.store.remove_certificate(partner, &fpr, &reason, actor).await? else {
            return Err(
                Failure::not_found(format!("partner {partner:?} has no certificate {fpr}")).field("fingerprint")
            );
        };
        if !quarantined.is_empty() {
            tracing::warn!(partner, fingerprint = fpr, versions = ?quarantined, "certificate removed: versions quarantined");
        }
        Ok(CertificateRemoved { partner: partner.to_string(), fingerprint: fpr, removed: true, quarantined })
    }

    /// The operator's (or, for `Yank`, the partner's) action on version `version` of
    /// `partner/name`.
    pub async fn version_action(
        &self,
        (partner, name, version): (&str, &str, &str),
        action: VersionAction,
        actor: &str,
    ) -> Result<VersionState> {
        let app = app_id(partner, name)?;
        let found = match action {
            VersionAction::Yank => self.store.set_yanked(&app, version, true, actor).await?,
            VersionAction::Unyank => self.store.set_yanked(&app, version, false, actor).await?,
            VersionAction::Quarantine => {
                self.store.set_quarantined(&app, version, Some("quarantined by the operator"), actor).await?
            }
            VersionAction::Release => self.store.set_quarantined(&app, version, None, actor).await?,
        };
        let row = match found {
            true => self.store.version(&app, version).await?,
            false => None,
        };
        let row = row.ok_or_else(|| Failure::not_found(format!("no version {app}@{version}")).field("version"))?;
        Ok(version_state(&row))
    }

    /// Quarantined versions after `after` (`app`, `version`), at most `limit`.
    pub async fn quarantined_versions(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<QuarantinedVersion>> {
        let rows = self.store.quarantined_versions(after, limit).await?;
        Ok(rows
            .into_iter()
            .map(|r| QuarantinedVersion {
                app: r.app,
                version: r.version,
                signer: r.signer,
                reason: r.reason,
                quarantined_ms: r.quarantined_ms,
            })
            .collect())
    }
}
