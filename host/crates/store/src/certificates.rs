//! Partners' signing certificates (`partner_certs`) and trust revocation (SPEC §2 step
//! 6, §8): certificates bound to one partner, distrusted certificates
//! (`distrusted_certs`) and the quarantine of the versions they signed. Every change
//! writes its audit rows in its own transaction.

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::partners::lock_partner;
use crate::{Store, StoreError, ctx};

/// A stored certificate.
#[derive(Debug, Clone)]
pub struct CertificateRow {
    pub fingerprint: String,
    pub partner: String,
    pub cert: Vec<u8>,
    pub created_ms: i64,
}

/// A certificate to store for a partner: its (merged) bytes and, when it is revoked,
/// the reason the versions it signed are quarantined.
#[derive(Debug, Clone)]
pub struct CertUpdate {
    pub fingerprint: String,
    pub cert: Vec<u8>,
    pub revoked: Option<String>,
}

/// A certificate whose versions were quarantined because it was revoked or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistrustedCert {
    pub fingerprint: String,
    pub partner: String,
    /// `revoked`, `removed` (by the operator, over the API) or `missing` (found no longer
    /// registered when the trust store was rebuilt: gone from the config file).
    pub state: String,
    pub reason: String,
    pub at_ms: i64,
}

/// Quarantines a just-registered version if its signer is distrusted (its certificate
/// was revoked or removed after the artifact was verified).
pub(crate) async fn quarantine_if_distrusted(
    tx: &mut crate::WriteTransaction,
    app: &str,
    version: &str,
    signer: &str,
    actor: &str,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT reason FROM distrusted_certs WHERE fingerprint = $1 AND partner = (SELECT partner FROM apps WHERE id = $2)",
    )
    .bind(signer)
    .bind(app)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("find distrusted certificate"))?;
    let Some(row) = row else { return Ok(()) };
    let reason: String = row.try_get("reason").map_err(ctx("read distrusted certificate"))?;
    sqlx::query(
        "UPDATE versions SET quarantined = 1, quarantine_reason = $1, quarantined_ms = $2 WHERE app = $3 AND version = $4",
    )
    .bind(&reason)
    .bind(now_ms() as i64)
    .bind(app)
    .bind(version)
    .execute(&mut **tx)
    .await
    .map_err(ctx("quarantine version"))?;
    audit(tx, actor, "version.quarantine", &format!("{app}@{version}"), &reason).await
}

/// Quarantines every not yet quarantined version of `partner`'s apps that `fingerprint`
/// signed; returns them as `app@version`.
async fn quarantine_signed(
    tx: &mut crate::WriteTransaction,
    partner: &str,
    fingerprint: &str,
    reason: &str,
    actor: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT app, version FROM versions WHERE signer = $1 AND quarantined = 0
         AND app IN (SELECT id FROM apps WHERE partner = $2) ORDER BY app, major, minor, patch, version",
    )
    .bind(fingerprint)
    .bind(partner)
    .fetch_all(&mut **tx)
    .await
    .map_err(ctx("find signed versions"))?;
    let mut quarantined = Vec::new();
    for r in &rows {
        let app: String = r.try_get("app").map_err(ctx("read version"))?;
        let version: String = r.try_get("version").map_err(ctx("read version"))?;
        quarantined.push(format!("{app}@{version}"));
    }
    sqlx::query(
        "UPDATE versions SET quarantined = 1, quarantine_reason = $1, quarantined_ms = $2
         WHERE signer = $3 AND quarantined = 0 AND app IN (SELECT id FROM apps WHERE partner = $4)",
    )
    .bind(reason)
    .bind(now_ms() as i64)
    .bind(fingerprint)
    .bind(partner)
    .execute(&mut **tx)
    .await
    .map_err(ctx("quarantine signed versions"))?;
    for target in &quarantined {
        audit(tx, actor, "version.quarantine", target, reason).await?;
    }
    Ok(quarantined)
}

fn state_rank(state: &str) -> u8 {
    match state {
        "revoked" => 3,
        "removed" => 2,
        "missing" => 1,
        _ => 0,
    }
}

/// Forgets that `fingerprint` was distrusted: it is registered and valid again. The
/// versions it signed stay quarantined until the operator releases them — except when
/// it was only `missing` (e.g. a config file without it, by mistake): then the versions
/// still quarantined for that reason alone are released with it.
async fn trust_again_tx(
    tx: &mut crate::WriteTransaction,
    partner: &str,
    fingerprint: &str,
    actor: &str,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT state, reason FROM distrusted_certs WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(&mut **tx)
        .await
        .map_err(ctx("find distrusted certificate"))?;
    let Some(row) = row else { return Ok(()) };
    let state: String = row.try_get("state").map_err(ctx("read distrusted certificate"))?;
    let reason: String = row.try_get("reason").map_err(ctx("read distrusted certificate"))?;
    sqlx::query("DELETE FROM distrusted_certs WHERE fingerprint = $1")
        .bind(fingerprint)
        .execute(&mut **tx)
        .await
        .map_err(ctx("trust certificate again"))?;
    let mut released = Vec::new();
    if state == "missing" {
        let rows = sqlx::query(
            "SELECT app, version FROM versions WHERE signer = $1 AND quarantined = 1 AND quarantine_reason = $2
             AND app IN (SELECT id FROM apps WHERE partner = $3) ORDER BY app, major, minor, patch, version",
        )
        .bind(fingerprint)
        .bind(&reason)
        .bind(partner)
        .fetch_all(&mut **tx)
        .await
        .map_err(ctx("find quarantined versions"))?;
        for r in &rows {
            let app: String = r.try_get("app").map_err(ctx("read version"))?;
            let version: String = r.try_get("version").map_err(ctx("read version"))?;
            released.push(format!("{app}@{version}"));
        }
        sqlx::query(
            "UPDATE versions SET quarantined = 0, quarantine_reason = NULL, quarantined_ms = NULL
             WHERE signer = $1 AND quarantined = 1 AND quarantine_reason = $2 AND app IN (SELECT id FROM apps WHERE partner = $3)",
        )
        .bind(fingerprint)
        .bind(&reason)
        .bind(partner)
        .execute(&mut **tx)
        .await
        .map_err(ctx("release versions"))?;
        for target in &released {
            audit(
                tx,
                actor,
                "version.release",
                target,
                &format!("signing certificate {fingerprint} is registered again"),
            )
            .await?;
        }
    }
    let detail = if state == "missing" {
        format!("{fingerprint}: registered again; {} version(s) it signed released", released.len())
    } else {
        format!("{fingerprint}: trusted again; the versions it signed stay quarantined until released")
    };
    audit(tx, actor, "certificate.trust", partner, &detail).await
}

/// Records `fingerprint` as distrusted (`revoked`, `removed`, `missing`) and quarantines what it
/// signed (`Some`), unless it already is at least as distrusted (`None`): an operator's
/// release of a version is not undone by the same news told again (a revoked
/// certificate uploaded twice), only by worse news (a removed certificate found revoked).
async fn distrust_tx(
    tx: &mut crate::WriteTransaction,
    partner: &str,
    fingerprint: &str,
    state: &str,
    reason: &str,
    actor: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let known = sqlx::query("SELECT state FROM distrusted_certs WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(&mut **tx)
        .await
        .map_err(ctx("find distrusted certificate"))?;
    if let Some(row) = known {
        let old: String = row.try_get("state").map_err(ctx("read distrusted certificate"))?;
        if state_rank(&old) >= state_rank(state) {
            return Ok(None);
        }
    }
    sqlx::query(
        "INSERT INTO distrusted_certs (fingerprint, partner, state, reason, at_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (fingerprint) DO UPDATE SET partner = excluded.partner, state = excluded.state,
         reason = excluded.reason, at_ms = excluded.at_ms",
    )
    .bind(fingerprint)
    .bind(partner)
    .bind(state)
    .bind(reason)
    .bind(now_ms() as i64)
    .execute(&mut **tx)
    .await
    .map_err(ctx("record distrusted certificate"))?;
    quarantine_signed(tx, partner, fingerprint, reason, actor).await.map(Some)
}

impl Store {
    /// Registers a certificate for `partner` (or replaces its bytes) with its audit row
    /// (`certificate.add` or `certificate.update`) in one transaction; `false` when the
    /// fingerprint belongs to another partner (nothing is written). The operator API
    /// uses `put_certificates`, which also merges and quarantines.
    pub async fn add_certificate(
        &self,
        partner: &str,
        fingerprint: &str,
        cert: &[u8],
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The write comes first: it takes the lock (SQLite's writer lock, PostgreSQL's
        // row lock) before anything is read.
        lock_partner(&mut tx, partner).await?;
        let known: Option<Vec<u8>> =
            sqlx::query("SELECT cert FROM partner_certs WHERE fingerprint = $1 AND partner = $2")
                .bind(fingerprint)
                .bind(partner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ctx("find certificate"))?
                .map(|r| r.try_get("cert"))
                .transpose()
                .map_err(ctx("read certificate"))?;
        if known.as_deref() == Some(cert) {
            // Already registered as it is (`kiosk run` on every start): nothing to write.
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(true);
        }
        let done = sqlx::query(
            "INSERT INTO partner_certs (fingerprint, partner, cert, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (fingerprint) DO UPDATE SET cert = excluded.cert WHERE partner_certs.partner = excluded.partner",
        )
        .bind(fingerprint)
        .bind(partner)
        .bind(cert)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("add certificate"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        let action = if known.is_some() { "certificate.update" } else { "certificate.add" };
        audit(&mut tx, actor, action, partner, fingerprint).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// Every registered certificate: (partner, certificate bytes).
    pub async fn certificates(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT partner, cert FROM partner_certs ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list certificates"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("partner")?, r.try_get("cert")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read certificates"))
    }

    /// Every certificate registered over the API.
    pub async fn certificate_rows(&self) -> Result<Vec<CertificateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, partner, cert, created_ms FROM partner_certs ORDER BY created_ms, fingerprint",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list certificates"))?;
        rows.iter()
            .map(|r| {
                Ok(CertificateRow {
                    fingerprint: r.try_get("fingerprint")?,
                    partner: r.try_get("partner")?,
                    cert: r.try_get("cert")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read certificates"))
    }

    /// Stores certificates for `partner` in one transaction: each new one is added,
    /// each known one replaced by its merged bytes; a revoked one quarantines what it
    /// signed; a valid one is trusted again. `Ok(Err(fingerprint))` when a fingerprint
    /// belongs to another partner: nothing is written. Returns the versions quarantined.
    pub async fn put_certificates(
        &self,
        partner: &str,
        updates: &[CertUpdate],
        actor: &str,
    ) -> Result<Result<Vec<String>, String>, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_partner(&mut tx, partner).await?;
        let mut quarantined = Vec::new();
        for u in updates {
            let known = sqlx::query("SELECT partner FROM partner_certs WHERE fingerprint = $1")
                .bind(&u.fingerprint)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ctx("find certificate"))?
                .is_some();
            let done = sqlx::query(
                "INSERT INTO partner_certs (fingerprint, partner, cert, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (fingerprint) DO UPDATE SET cert = excluded.cert WHERE partner_certs.partner = excluded.partner",
            )
            .bind(&u.fingerprint)
            .bind(partner)
            .bind(&u.cert)
            .bind(now_ms() as i64)
            .execute(&mut *tx)
            .await
            .map_err(ctx("store certificate"))?;
            if done.rows_affected() != 1 {
                tx.rollback().await.map_err(ctx("rollback"))?;
                return Ok(Err(u.fingerprint.clone()));
            }
            let action = if known { "certificate.update" } else { "certificate.add" };
            audit(&mut tx, actor, action, partner, &u.fingerprint).await?;
            match &u.revoked {
                Some(reason) => {
                    if let Some(newly) = distrust_tx(&mut tx, partner, &u.fingerprint, "revoked", reason, actor).await?
                    {
                        let detail = format!("{}: {reason}", u.fingerprint);
                        audit(&mut tx, actor, "certificate.revoke", partner, &detail).await?;
                        quarantined.extend(newly);
                    }
                }
                None => trust_again_tx(&mut tx, partner, &u.fingerprint, actor).await?,
            }
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(quarantined))
    }

    /// Removes `partner`'s certificate and quarantines what it signed, in one
    /// transaction; `None` if the partner has no such certificate.
    pub async fn remove_certificate(
        &self,
        partner: &str,
        fingerprint: &str,
        reason: &str,
        actor: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_partner(&mut tx, partner).await?;
        let done = sqlx::query("DELETE FROM partner_certs WHERE fingerprint = $1 AND partner = $2")
            .bind(fingerprint)
            .bind(partner)
            .execute(&mut *tx)
            .await
            .map_err(ctx("remove certificate"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(None);
        }
        audit(&mut tx, actor, "certificate.remove", partner, fingerprint).await?;
        let quarantined = distrust_tx(&mut tx, partner, fingerprint, "removed", reason, actor).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Some(quarantined.unwrap_or_default()))
    }

    /// Records a certificate found revoked or gone when the trust store was rebuilt,
    /// and quarantines what it signed (`action` names the finding in the audit log);
    /// `None` if it was already known (nothing is written).
    pub async fn distrust(
        &self,
        partner: &str,
        fingerprint: &str,
        state: &str,
        reason: &str,
        action: &str,
        actor: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.begin_write().await?;
        lock_partner(&mut tx, partner).await?;
        let quarantined = distrust_tx(&mut tx, partner, fingerprint, state, reason, actor).await?;
        if quarantined.is_some() {
            audit(&mut tx, actor, action, partner, &format!("{fingerprint}: {reason}")).await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(quarantined)
    }

    /// Forgets that a certificate was distrusted: it is registered and valid again
    /// (see `trust_again_tx`).
    pub async fn trust_again(&self, partner: &str, fingerprint: &str, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        lock_partner(&mut tx, partner).await?;
        trust_again_tx(&mut tx, partner, fingerprint, actor).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn distrusted_certs(&self) -> Result<Vec<DistrustedCert>, StoreError> {
        let rows =
            sqlx::query("SELECT fingerprint, partner, state, reason, at_ms FROM distrusted_certs ORDER BY fingerprint")
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("list distrusted certificates"))?;
        rows.iter()
            .map(|r| {
                Ok(DistrustedCert {
                    fingerprint: r.try_get("fingerprint")?,
                    partner: r.try_get("partner")?,
                    state: r.try_get("state")?,
                    reason: r.try_get("reason")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read distrusted certificates"))
    }
}
