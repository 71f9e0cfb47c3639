//! Trust revocation and token management (SPEC §2 step 6, §8): certificates bound to
//! one partner, distrusted certificates and the quarantine of the versions they signed,
//! the operator's yank and quarantine, installs and upgrades that re-check their
//! version inside their own transaction, and tokens that can be listed, revoked,
//! expire, and whose bootstrap secret can be rotated. Every change writes its audit
//! rows in its own transaction.

use sqlx::{Any, Row, Transaction};

use super::{
    Changed, InstallationRow, Principal, Store, StoreError, VERSION_SELECT, VersionRow, audit, ctx, token_hash,
    version_row,
};
use kiosk_domain::metering::now_ms;

/// The id of the operator token configured in the config file or the environment.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap-operator";

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

/// A quarantined version, for the operator.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedVersion {
    pub app: String,
    pub version: String,
    pub signer: String,
    pub reason: String,
    pub quarantined_ms: Option<i64>,
}

/// A token as the operator sees it: never its secret or the secret's hash.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRow {
    pub id: String,
    pub role: String,
    pub scope: Option<String>,
    pub label: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// What revoking a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRevocation {
    Revoked,
    AlreadyRevoked,
    NotFound,
    /// Refused: it is the last operator token that still works.
    LastOperator,
}

/// What installing the configured operator token did at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapToken {
    Created,
    Unchanged,
    /// It replaced the previous bootstrap secret, which no longer authenticates.
    Rotated,
    /// The configured secret is the bootstrap token the operator revoked: it stays
    /// revoked (configure a new one).
    Revoked,
    /// The configured secret is already another token's (its id).
    InUse(String),
}

/// An install or upgrade whose version became unavailable (yanked or quarantined)
/// while its hooks ran: the version as it is now.
#[derive(Debug, Clone)]
pub struct NotInstallable(pub VersionRow);

/// Why an upgrade wrote nothing.
#[derive(Debug, Clone)]
pub enum UpgradeRefused {
    /// The target version became unavailable (yanked or quarantined) while the hooks ran.
    NotInstallable(Box<NotInstallable>),
    /// The installation changed (or went) since it was read.
    Changed(Changed),
}

/// Takes the partner's row lock for the rest of the transaction: registrations and
/// revocations of one partner are serialised (on SQLite every writer already is).
pub(super) async fn lock_partner(tx: &mut Transaction<'_, Any>, partner: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE partners SET display = display WHERE name = $1")
        .bind(partner)
        .execute(&mut **tx)
        .await
        .map_err(ctx("lock partner"))?;
    Ok(())
}

/// Quarantines a just-registered version if its signer is distrusted (its certificate
/// was revoked or removed after the artifact was verified).
pub(super) async fn quarantine_if_distrusted(
    tx: &mut Transaction<'_, Any>,
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
    tx: &mut Transaction<'_, Any>,
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
    tx: &mut Transaction<'_, Any>,
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
    tx: &mut Transaction<'_, Any>,
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

fn token_row(r: &sqlx::any::AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        role: r.try_get("role")?,
        scope: r.try_get("scope")?,
        label: r.try_get("label")?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
    })
}

fn new_secret() -> String {
    format!("kiosk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Store {
    // --- certificates -------------------------------------------------------------

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

    /// (partner, signer fingerprint, quarantined) of every registered version.
    pub async fn version_signers(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.partner AS partner, v.signer AS signer, v.quarantined AS quarantined
             FROM versions v JOIN apps a ON a.id = v.app ORDER BY a.partner, v.signer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list signers"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("partner")?, r.try_get("signer")?, r.try_get::<i64, _>("quarantined")? != 0)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read signers"))
    }

    // --- versions -------------------------------------------------------------------

    /// Quarantines (`reason` given) or releases (`None`) a version; `false` if there is
    /// no such version. Quarantining a quarantined version keeps its first reason.
    pub async fn set_quarantined(
        &self,
        app: &str,
        version: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let flag = i64::from(reason.is_some());
        let done = sqlx::query(
            "UPDATE versions SET quarantined = $1, quarantine_reason = $2, quarantined_ms = $3
             WHERE app = $4 AND version = $5 AND quarantined <> $1",
        )
        .bind(flag)
        .bind(reason)
        .bind(reason.map(|_| now_ms() as i64))
        .bind(app)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("quarantine version"))?;
        if done.rows_affected() == 1 {
            let action = if reason.is_some() { "version.quarantine" } else { "version.release" };
            audit(&mut tx, actor, action, &format!("{app}@{version}"), reason.unwrap_or("")).await?;
            tx.commit().await.map_err(ctx("commit"))?;
            return Ok(true);
        }
        tx.rollback().await.map_err(ctx("rollback"))?;
        Ok(self.version(app, version).await?.is_some())
    }

    /// Quarantined versions after the cursor (`app`, `version`), at most `limit`.
    pub async fn quarantined_versions(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<QuarantinedVersion>, StoreError> {
        let (app, version) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT app, version, signer, quarantine_reason, quarantined_ms FROM versions
             WHERE quarantined = 1 AND (app > $1 OR (app = $1 AND version > $2)) ORDER BY app, version LIMIT $3",
        )
        .bind(app)
        .bind(version)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list quarantined versions"))?;
        rows.iter()
            .map(|r| {
                Ok(QuarantinedVersion {
                    app: r.try_get("app")?,
                    version: r.try_get("version")?,
                    signer: r.try_get("signer")?,
                    reason: r.try_get::<Option<String>, _>("quarantine_reason")?.unwrap_or_default(),
                    quarantined_ms: r.try_get("quarantined_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read quarantined versions"))
    }

    // --- installations ------------------------------------------------------------------

    /// Records a new installation if its version is still installable (neither yanked
    /// nor quarantined), in one statement: a quarantine that commits first wins, one
    /// that commits later finds an existing installation.
    pub async fn install_if_installable(
        &self,
        i: &InstallationRow,
        actor: &str,
    ) -> Result<Result<(), NotInstallable>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO installations (id, tenant, app, version, config, secrets, created_ms, updated_ms,
             upgrade_policy) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS
             (SELECT 1 FROM versions WHERE app = $3 AND version = $4 AND yanked = 0 AND quarantined = 0)",
        )
        .bind(&i.id)
        .bind(&i.tenant)
        .bind(&i.app)
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(i.created_ms)
        .bind(i.updated_ms)
        .bind(i.upgrade_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(ctx("record installation"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return match self.not_installable(&i.app, &i.version).await? {
                Err(blocked) => Ok(Err(blocked)),
                Ok(()) => Err(StoreError {
                    action: format!("record installation: no version {}@{}", i.app, i.version),
                    source: sqlx::Error::RowNotFound,
                }),
            };
        }
        let (target, detail) = (format!("{}/{}", i.tenant, i.id), format!("{}@{}", i.app, i.version));
        audit(&mut tx, actor, "installation.install", &target, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Moves an installation to `i.version` (with its new configuration) if that version
    /// is still installable, like `install_if_installable`, and the row is still at
    /// `i.row_version` (bumping it), with its audit row in one transaction.
    pub async fn upgrade_installation(
        &self,
        i: &InstallationRow,
        actor: &str,
    ) -> Result<Result<(), UpgradeRefused>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE installations SET version = $1, config = $2, secrets = $3, updated_ms = $4,
             row_version = row_version + 1
             WHERE tenant = $5 AND id = $6 AND row_version = $8 AND EXISTS
             (SELECT 1 FROM versions WHERE app = $7 AND version = $1 AND yanked = 0 AND quarantined = 0)",
        )
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(now_ms() as i64)
        .bind(&i.tenant)
        .bind(&i.id)
        .bind(&i.app)
        .bind(i.row_version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("upgrade installation"))?;
        if done.rows_affected() != 1 {
            // The version became unavailable, or the installation changed or went.
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(match self.not_installable(&i.app, &i.version).await? {
                Err(blocked) => UpgradeRefused::NotInstallable(Box::new(blocked)),
                Ok(()) => UpgradeRefused::Changed(Changed),
            }));
        }
        let (target, detail) = (format!("{}/{}", i.tenant, i.id), format!("{}@{}", i.app, i.version));
        audit(&mut tx, actor, "installation.upgrade", &target, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    async fn not_installable(&self, app: &str, version: &str) -> Result<Result<(), NotInstallable>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VERSION_SELECT} FROM versions WHERE app = $1 AND version = $2"))
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find version"))?;
        match row.as_ref().map(version_row).transpose().map_err(ctx("read version"))? {
            Some(v) if v.yanked || v.quarantined => Ok(Err(NotInstallable(v))),
            _ => Ok(Ok(())),
        }
    }

    // --- tokens -----------------------------------------------------------------------

    /// Creates a token (optionally expiring) and its audit row in one transaction;
    /// returns (id, secret). Only the secret's hash is stored.
    pub async fn create_token_by(
        &self,
        principal: &Principal,
        label: &str,
        expires_ms: Option<i64>,
        actor: &str,
    ) -> Result<(String, String), StoreError> {
        let (id, secret) = (uuid::Uuid::new_v4().to_string(), new_secret());
        let (role, scope) = principal.parts();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO tokens (id, hash, role, scope, label, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(token_hash(&secret))
        .bind(role)
        .bind(scope)
        .bind(label)
        .bind(now_ms() as i64)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create token"))?;
        audit(&mut tx, actor, "token.create", &principal.actor(), &id).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok((id, secret))
    }

    /// Tokens after the cursor (an id), at most `limit`, by id.
    pub async fn tokens(&self, after: Option<&str>, limit: i64) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, scope, label, created_ms, expires_ms, revoked FROM tokens WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list tokens"))?;
        rows.iter().map(token_row).collect::<Result<_, _>>().map_err(ctx("read tokens"))
    }

    /// Revokes a token: it authenticates nobody from the next request on. The last
    /// operator token that still works is not revoked (the API would be locked).
    pub async fn revoke_token(&self, id: &str, actor: &str) -> Result<TokenRevocation, StoreError> {
        let mut tx = self.begin_write().await?;
        // Lock the operator tokens first, so two revocations cannot each leave the
        // other as the last one.
        sqlx::query("UPDATE tokens SET revoked = revoked WHERE role = 'operator'")
            .execute(&mut *tx)
            .await
            .map_err(ctx("lock operator tokens"))?;
        let row =
            sqlx::query("SELECT id, role, scope, label, created_ms, expires_ms, revoked FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ctx("find token"))?;
        let Some(token) = row.as_ref().map(token_row).transpose().map_err(ctx("read token"))? else {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(TokenRevocation::NotFound);
        };
        if token.revoked {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(TokenRevocation::AlreadyRevoked);
        }
        if token.role == "operator" {
            let others = sqlx::query(
                "SELECT COUNT(*) AS n FROM tokens WHERE role = 'operator' AND revoked = 0
                 AND (expires_ms IS NULL OR expires_ms > $1) AND id <> $2",
            )
            .bind(now_ms() as i64)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(ctx("count operator tokens"))?;
            if others.try_get::<i64, _>("n").map_err(ctx("count operator tokens"))? == 0 {
                tx.rollback().await.map_err(ctx("rollback"))?;
                return Ok(TokenRevocation::LastOperator);
            }
        }
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("revoke token"))?;
        let target = match &token.scope {
            Some(scope) => format!("{}:{scope}", token.role),
            None => token.role.clone(),
        };
        audit(&mut tx, actor, "token.revoke", &target, id).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(TokenRevocation::Revoked)
    }

    /// Installs the operator token of the config file or environment: on first start it
    /// is created; when it differs from the stored bootstrap token it replaces it (the
    /// previous secret stops working), in one transaction with its audit row.
    pub async fn set_bootstrap_token(&self, secret: &str) -> Result<BootstrapToken, StoreError> {
        let hash = token_hash(secret);
        let mut tx = self.begin_write().await?;
        let holder = sqlx::query("SELECT id FROM tokens WHERE hash = $1")
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ctx("find token"))?
            .map(|r| r.try_get::<String, _>("id"))
            .transpose()
            .map_err(ctx("read token"))?;
        let current = sqlx::query("SELECT hash, revoked FROM tokens WHERE id = $1")
            .bind(BOOTSTRAP_TOKEN_ID)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ctx("find bootstrap token"))?;
        let outcome = match (current, holder) {
            (_, Some(other)) if other != BOOTSTRAP_TOKEN_ID => BootstrapToken::InUse(other),
            (Some(row), Some(_)) => {
                if row.try_get::<i64, _>("revoked").map_err(ctx("read bootstrap token"))? != 0 {
                    BootstrapToken::Revoked
                } else {
                    BootstrapToken::Unchanged
                }
            }
            (Some(_), None) => {
                sqlx::query(
                    "UPDATE tokens SET hash = $1, created_ms = $2, revoked = 0, expires_ms = NULL, label = $3 WHERE id = $4",
                )
                .bind(&hash)
                .bind(now_ms() as i64)
                .bind("bootstrap (config)")
                .bind(BOOTSTRAP_TOKEN_ID)
                .execute(&mut *tx)
                .await
                .map_err(ctx("rotate bootstrap token"))?;
                audit(&mut tx, "kiosk", "token.rotate", "operator", BOOTSTRAP_TOKEN_ID).await?;
                BootstrapToken::Rotated
            }
            (None, _) => {
                // Replicas starting together on one database: the first one creates it.
                let done = sqlx::query(
                    "INSERT INTO tokens (id, hash, role, scope, label, created_ms) VALUES ($1, $2, 'operator', NULL, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(BOOTSTRAP_TOKEN_ID)
                .bind(&hash)
                .bind("bootstrap (config)")
                .bind(now_ms() as i64)
                .execute(&mut *tx)
                .await
                .map_err(ctx("create bootstrap token"))?;
                if done.rows_affected() == 1 {
                    audit(&mut tx, "kiosk", "token.create", "operator", BOOTSTRAP_TOKEN_ID).await?;
                }
                BootstrapToken::Created
            }
        };
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(outcome)
    }
}
