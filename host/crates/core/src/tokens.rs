//! Tokens (SPEC §8): authentication of a request's bearer secret, tokens created,
//! listed and revoked by the operator, and the configured bootstrap operator token.
//! The secret is shown once, at creation; the store keeps only its hash.

use kiosk_store::{BootstrapToken, Principal, TokenRevocation, TokenRow};

use crate::error::{Class, Failure, Kind, Result};
use crate::lifecycle::{Kiosk, SYSTEM};

/// Who a new token is for, as the operator asks: a role and, for a partner or tenant,
/// the scope.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `operator`, `partner` or `tenant`.
    pub role: String,
    pub scope: Option<String>,
    pub label: Option<String>,
    /// When the token stops working (ms since the Unix epoch); never when absent.
    pub expires_ms: Option<i64>,
}

/// A token created: `secret` is shown this once.
#[derive(Debug, Clone)]
pub struct TokenCreated {
    pub id: String,
    pub secret: String,
}

fn invalid(detail: impl Into<String>, field: &str) -> Failure {
    Failure::unprocessable(Kind::InvalidToken, detail).field(field)
}

impl Kiosk {
    /// The principal a bearer secret stands for; `None` when it is unknown, revoked or
    /// expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        Ok(self.store.authenticate(secret).await?)
    }

    /// A new token; the scope must name an existing partner or tenant, and an expiry must
    /// be in the future.
    pub async fn create_token(&self, request: &TokenRequest, actor: &str) -> Result<TokenCreated> {
        let principal = match (request.role.as_str(), request.scope.clone()) {
            ("operator", None) => Principal::Operator,
            ("partner", Some(p)) if self.store.partner_exists(&p).await? => Principal::Partner(p),
            ("tenant", Some(t)) if self.store.tenant_exists(&t).await? => Principal::Tenant(t),
            ("partner" | "tenant", Some(scope)) => {
                return Err(Failure::not_found(format!("no {} {scope:?}", request.role)).field("scope"));
            }
            ("operator", Some(_)) => return Err(invalid("operator tokens have no scope", "scope")),
            ("partner" | "tenant", None) => return Err(invalid("scope is required", "scope")),
            (other, _) => return Err(invalid(format!("unknown role {other:?}"), "role")),
        };
        if let Some(at) = request.expires_ms.filter(|at| *at <= kiosk_domain::metering::now_ms() as i64) {
            return Err(invalid(format!("expiresMs {at} is not in the future"), "expiresMs"));
        }
        let label = request.label.clone().unwrap_or_else(|| principal.actor());
        let (id, secret) = self.store.create_token_by(&principal, &label, request.expires_ms, actor).await?;
        Ok(TokenCreated { id, secret })
    }

    /// A token for `principal` created by Kiosk itself (the demo seed, `kiosk run`).
    pub async fn issue_token(&self, principal: &Principal, label: &str, actor: &str) -> Result<TokenCreated> {
        let (id, secret) = self.store.create_token(principal, label, actor).await?;
        Ok(TokenCreated { id, secret })
    }

    /// Tokens by id after `after`, at most `limit`; never a secret or its hash.
    pub async fn tokens(&self, after: Option<&str>, limit: i64) -> Result<Vec<TokenRow>> {
        Ok(self.store.tokens(after, limit).await?)
    }

    /// Revokes token `id` (revoking a revoked one is no error); the last operator token
    /// that works is kept.
    pub async fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        match self.store.revoke_token(id, actor).await? {
            TokenRevocation::Revoked | TokenRevocation::AlreadyRevoked => Ok(()),
            TokenRevocation::NotFound => Err(Failure::not_found(format!("no token {id:?}")).field("id")),
            TokenRevocation::LastOperator => Err(Failure::new(
                Class::Conflict,
                Kind::LastOperatorToken,
                format!("token {id} is the last operator token that works; create another one first"),
            )
            .field("id")),
        }
    }

    /// The operator token at start-up: a configured one (config file, else
    /// `KIOSK_OPERATOR_TOKEN`) replaces the previous bootstrap token, so rotating it is
    /// editing the setting and restarting; without one, a token is generated when no
    /// operator token works and its secret returned, to be shown once.
    pub async fn bootstrap_operator(&self) -> anyhow::Result<Option<String>> {
        let configured =
            self.config.server.operator_token.clone().or_else(|| std::env::var("KIOSK_OPERATOR_TOKEN").ok());
        if let Some(token) = configured {
            self.bootstrap_operator_token(token.trim()).await?;
            return Ok(None);
        }
        if self.store.count_operator_tokens().await? == 0 {
            let (_, secret) = self.store.create_token(&Principal::Operator, "bootstrap (generated)", SYSTEM).await?;
            return Ok(Some(secret));
        }
        Ok(None)
    }

    /// Installs the configured operator token (see `Store::set_bootstrap_token`).
    async fn bootstrap_operator_token(&self, secret: &str) -> anyhow::Result<()> {
        match self.store.set_bootstrap_token(secret).await? {
            BootstrapToken::Created => tracing::info!("operator bootstrap token installed"),
            BootstrapToken::Unchanged => {}
            BootstrapToken::Rotated => {
                tracing::warn!("operator bootstrap token rotated: the previous one no longer authenticates")
            }
            BootstrapToken::Revoked => tracing::warn!(
                "the configured operator token was revoked over the API and stays revoked: configure a new one"
            ),
            BootstrapToken::InUse(id) => anyhow::bail!(
                "the configured operator token is already the secret of token {id}: configure a fresh secret"
            ),
        }
        Ok(())
    }
}
