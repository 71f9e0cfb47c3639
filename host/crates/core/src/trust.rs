//! Trust reconciliation: the trust store (the database's certificates and the operator
//! config's), and the quarantine of versions whose signer is revoked or no longer
//! registered (released again when the signer is trusted again).

use std::collections::HashMap;
use std::time::SystemTime;

use kiosk_distribution::trust::{self, CertState, TrustStore};

use crate::error::Failure;
use crate::kiosk::{Kiosk, SYSTEM};

type Result<T, E = Failure> = std::result::Result<T, E>;

impl Kiosk {
    /// The trust store: certificates in the database plus those of the operator config.
    /// Rebuilding it also quarantines what a signer found revoked or removed signed
    /// (`reconcile`).
    pub async fn trust(&self) -> Result<TrustStore> {
        let mut trust = self.config.trust_store().map_err(Failure::internal)?;
        self.add_stored_certificates(&mut trust).await?;
        self.reconcile(&trust).await?;
        Ok(trust)
    }

    /// Adds the certificates registered in the database (over the API or `kiosk pull
    /// --cert`) to `trust`.
    pub(crate) async fn add_stored_certificates(&self, trust: &mut TrustStore) -> Result<()> {
        for row in self.store.certificate_rows().await? {
            trust.add_fingerprint(&row.partner, &row.cert, &row.fingerprint).map_err(Failure::internal)?;
        }
        Ok(())
    }

    /// Quarantines the versions of every signer the trust store finds revoked or no
    /// longer registered, and releases those whose signer is trusted again.
    async fn reconcile(&self, trust: &TrustStore) -> Result<()> {
        let distrusted: HashMap<String, String> =
            self.store.distrusted_certs().await?.into_iter().map(|d| (d.fingerprint, d.state)).collect();
        let mut signers: Vec<(String, String)> =
            self.store.version_signers().await?.into_iter().map(|v| (v.partner, v.signer)).collect();
        signers.dedup();
        let now = SystemTime::now();
        for (partner, fpr) in signers {
            let finding = match find_for(trust, &partner, &fpr).map(|c| trust::cert_state(c, now)) {
                Some(state @ CertState::Revoked { .. }) => {
                    Some(("revoked", revoked_reason(&fpr, &state), "certificate.found-revoked"))
                }
                Some(_) => None,
                None => Some((
                    "missing",
                    format!("signing certificate {fpr} is no longer registered for partner {partner}"),
                    "certificate.found-missing",
                )),
            };
            match finding {
                Some((state, reason, action)) => {
                    if let Some(quarantined) =
                        self.store.distrust(&partner, &fpr, state, &reason, action, SYSTEM).await?
                    {
                        tracing::warn!(partner, fingerprint = fpr, state, versions = ?quarantined, "signer distrusted: versions quarantined");
                    }
                }
                None if distrusted.contains_key(&fpr) => self.store.trust_again(&partner, &fpr, SYSTEM).await?,
                None => {}
            }
        }
        Ok(())
    }
}

pub fn find_for<'a>(trust: &'a TrustStore, partner: &str, fingerprint: &str) -> Option<&'a sequoia_openpgp::Cert> {
    trust.certificates().find(|(p, c)| *p == partner && c.fingerprint().to_hex() == fingerprint).map(|(_, c)| c)
}

pub fn revoked_reason(fingerprint: &str, state: &CertState) -> String {
    match state {
        CertState::Revoked { reason: Some(reason), .. } => {
            format!("signing certificate {fingerprint} was revoked ({reason})")
        }
        _ => format!("signing certificate {fingerprint} was revoked"),
    }
}
