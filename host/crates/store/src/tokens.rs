//! Tokens (`tokens`) and the principals they stand for: creation (only the secret's
//! hash is stored), authentication on every request, listing, revocation (never of the
//! last operator token that works), and the bootstrap operator token of the config file.

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::call_cache::CachedToken;
use crate::{Store, StoreError, ctx};

/// The id of the operator token configured in the config file or the environment.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap-operator";

/// A role a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Partner(String),
    Tenant(String),
}

impl Principal {
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Principal::Operator => ("operator", None),
            Principal::Partner(p) => ("partner", Some(p)),
            Principal::Tenant(t) => ("tenant", Some(t)),
        }
    }

    /// Who, for the audit log.
    pub fn actor(&self) -> String {
        match self.parts() {
            (role, Some(scope)) => format!("{role}:{scope}"),
            (role, None) => role.to_string(),
        }
    }
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

/// The principal of a stored token's role and scope (`None` for a row no role reads).
fn principal_of(role: &str, scope: Option<String>) -> Option<Principal> {
    match (role, scope) {
        ("operator", _) => Some(Principal::Operator),
        ("partner", Some(p)) => Some(Principal::Partner(p)),
        ("tenant", Some(t)) => Some(Principal::Tenant(t)),
        _ => None,
    }
}

/// Hex SHA-256 of a token secret, as stored.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
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
    /// Creates a token that never expires, with its audit row (`token.create`) in one
    /// transaction; returns (id, secret). Only the secret's hash is stored.
    pub async fn create_token(
        &self,
        principal: &Principal,
        label: &str,
        actor: &str,
    ) -> Result<(String, String), StoreError> {
        self.create_token_by(principal, label, None, actor).await
    }

    /// The principal a token secret stands for, if it is known, not revoked and not
    /// expired. Asked on every request: a revocation made through this process holds from
    /// the next request, one made by another replica within `CALL_READS_FRESH`
    /// (`call_cache`).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        const SQL: &str = "SELECT role, scope, expires_ms FROM tokens WHERE hash = $1 AND revoked = 0 AND (expires_ms IS NULL OR expires_ms > $2)";
        let hash = token_hash(secret);
        let now = now_ms() as i64;
        let live = |token: CachedToken| token.expires_ms.is_none_or(|at| at > now).then_some(token.principal);
        if let Some(token) = self.cache.token(&hash) {
            return Ok(live(token));
        }
        let start = self.cache.start();
        let inline = self.read_inline("token", SQL, |statement| {
            let mut rows = statement.query(rusqlite::named_params! {"$1": hash, "$2": now})?;
            match rows.next()? {
                None => Ok(None),
                Some(row) => Ok(Some((
                    row.get::<_, String>("role")?,
                    row.get::<_, Option<String>>("scope")?,
                    row.get::<_, Option<i64>>("expires_ms")?,
                ))),
            }
        });
        let token = match inline {
            Some(token) => token,
            None => {
                let row = crate::read_once_more("authenticate", || {
                    sqlx::query(SQL).bind(hash.as_str()).bind(now).fetch_optional(&self.pool)
                })
                .await?;
                match row {
                    None => None,
                    Some(row) => Some((
                        row.try_get::<String, _>("role").map_err(ctx("read token"))?,
                        row.try_get::<Option<String>, _>("scope").map_err(ctx("read token"))?,
                        row.try_get::<Option<i64>, _>("expires_ms").map_err(ctx("read token"))?,
                    )),
                }
            }
        };
        let Some((role, scope, expires_ms)) = token else { return Ok(None) };
        let Some(principal) = principal_of(&role, scope) else { return Ok(None) };
        let token = CachedToken { principal, expires_ms };
        self.cache.keep_token(&hash, token.clone(), start);
        Ok(live(token))
    }

    pub async fn count_operator_tokens(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM tokens WHERE role = 'operator' AND revoked = 0
             AND (expires_ms IS NULL OR expires_ms > $1)",
        )
        .bind(now_ms() as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(ctx("count tokens"))?;
        row.try_get("n").map_err(ctx("count tokens"))
    }

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
