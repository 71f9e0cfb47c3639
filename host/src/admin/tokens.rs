//! `kiosk admin tokens`: API tokens (list, never the secret; create; revoke).

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::api::{Request, Shape};

#[derive(Debug, Subcommand)]
pub(super) enum TokensCmd {
    List,
    /// Creates a token and prints its secret once.
    Create {
        /// operator, partner or tenant.
        #[arg(long)]
        role: String,
        /// The partner or tenant the token is for.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        label: Option<String>,
        /// When it stops working, ms since the Unix epoch.
        #[arg(long)]
        expires_ms: Option<i64>,
    },
    Revoke {
        id: String,
    },
}

const TOKEN_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("ROLE", "role"), ("SCOPE", "scope"), ("LABEL", "label"), ("EXPIRES", "expiresMs")];

impl TokensCmd {
    pub(super) fn request(self) -> Request {
        match self {
            TokensCmd::List => Request::get(&["v1", "tokens"], Shape::List(TOKEN_COLUMNS)),
            TokensCmd::Create { role, scope, label, expires_ms } => Request::post(
                &["v1", "tokens"],
                Some(json!({"role": role, "scope": scope, "label": label, "expiresMs": expires_ms})),
            ),
            TokensCmd::Revoke { id } => {
                Request::new(Method::DELETE, &["v1", "tokens", &id], None, Shape::Done(format!("revoked token {id}")))
            }
        }
    }
}
