//! Operator administration of trust and tokens (SPEC §2 step 6, §8): partner
//! certificates (add with ownership and revocations, list with their state, remove),
//! the quarantine of every version a revoked or removed certificate signed, the
//! operator's yank and quarantine of any version, and tokens (list, revoke). Routes are
//! in `super::router`, documents in `super::ApiDoc`.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Caller, Shared};
use kiosk_core::lifecycle::{find_for, revoked_reason};
use kiosk_distribution::trust::{self, CertState, TrustStore, Upload};
use kiosk_store::{BootstrapToken, CertUpdate, TokenRevocation, VersionRow};

// --- pages ---------------------------------------------------------------------------

/// `?limit=&after=`: at most `limit` items (1-1000, default 100) after the cursor
/// `after` (the `next` of the previous page).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    limit: Option<i64>,
    after: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> ApiResult<i64> {
        match self.limit.unwrap_or(100) {
            n @ 1..=1000 => Ok(n),
            other => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                format!("limit {other} is out of range: use 1-1000"),
            )
            .field("limit")),
        }
    }
}

/// A page of `items` (already after the cursor, at most `limit` + 1 asked for) with
/// the cursor of the next page.
fn page(mut items: Vec<Value>, limit: i64, cursor: impl Fn(&Value) -> String) -> Value {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&cursor)
    } else {
        None
    };
    json!({"items": items, "next": next})
}

// --- certificates ----------------------------------------------------------------------

/// A fingerprint as written in a URL: hex, any case, spaces allowed.
fn normalize_fingerprint(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase()
}

fn owned(fingerprint: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "certificate-owned",
        format!(
            "certificate {fingerprint} is registered for another partner; a certificate signs for one partner only"
        ),
    )
    .field("certificate")
}

fn invalid_certificate(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-certificate", detail).field("certificate")
}

/// Why the versions a revoked certificate signed are quarantined.
/// The certificates registered over the API, as a trust store.
async fn stored_trust(s: &AppState) -> ApiResult<TrustStore> {
    let mut trust = TrustStore::default();
    for row in s.store.certificate_rows().await? {
        trust.add_fingerprint(&row.partner, &row.cert, &row.fingerprint).map_err(ApiError::internal)?;
    }
    Ok(trust)
}

/// `POST /v1/partners/{partner}/certificates`: certificates (new, or new copies of
/// registered ones, merged) or a revocation certificate for a registered one. A
/// fingerprint registered for another partner is a 409 and nothing is written; a
/// certificate that is (now) revoked quarantines every version it signed, in the same
/// transaction.
pub(super) async fn add_certificates(
    s: &AppState,
    actor: &str,
    partner: &str,
    text: &str,
) -> ApiResult<axum::response::Response> {
    if !s.store.partner_exists(partner).await? {
        return Err(ApiError::not_found(format!("no partner {partner:?}")));
    }
    let upload = trust::parse_upload(text.as_bytes()).map_err(|e| invalid_certificate(e.to_string()))?;
    let config = s.config.trust_store().map_err(ApiError::internal)?;
    let stored = stored_trust(s).await?;
    let owner = |fpr: &str| stored.find(fpr).or_else(|| config.find(fpr)).map(|(p, _)| p.to_string());
    // fingerprint -> the copy to store, in upload order.
    let mut order: Vec<String> = Vec::new();
    let mut certs: HashMap<String, sequoia_openpgp::Cert> = HashMap::new();
    let mut created = false;
    let mut keep = |fpr: String, cert: sequoia_openpgp::Cert| -> ApiResult<()> {
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
            Some(from_config) => trust::merge(cert.clone(), from_config.clone()).map_err(ApiError::internal)?,
            None => cert.clone(),
        };
        let state = trust::cert_state(&effective, now);
        let revoked = matches!(state, CertState::Revoked { .. }).then(|| revoked_reason(fpr, &state));
        updates.push(CertUpdate {
            fingerprint: fpr.clone(),
            cert: trust::armored(cert).map_err(ApiError::internal)?,
            revoked,
        });
        states.push(json!({"fingerprint": fpr, "state": state.name()}));
    }
    let quarantined = match s.store.put_certificates(partner, &updates, actor).await? {
        Ok(quarantined) => quarantined,
        Err(fpr) => return Err(owned(&fpr)),
    };
    if !quarantined.is_empty() {
        tracing::warn!(partner, versions = ?quarantined, "certificate revoked: versions quarantined");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let body = json!({"partner": partner, "fingerprints": order, "certificates": states, "quarantined": quarantined});
    Ok((status, axum::Json(body)).into_response())
}

/// A partner's certificates (registered over the API or in the config file, and those
/// removed whose versions were quarantined) with their state, by fingerprint.
async fn certificate_views(s: &AppState, partner: &str) -> ApiResult<Vec<Value>> {
    let config = s.config.trust_store().map_err(ApiError::internal)?;
    let rows: Vec<_> = s.store.certificate_rows().await?.into_iter().filter(|r| r.partner == partner).collect();
    let distrusted: HashMap<String, _> = s
        .store
        .distrusted_certs()
        .await?
        .into_iter()
        .filter(|d| d.partner == partner)
        .map(|d| (d.fingerprint.clone(), d))
        .collect();
    let mut signed: HashMap<String, (u64, u64)> = HashMap::new();
    for (p, fpr, quarantined) in s.store.version_signers().await? {
        if p == partner {
            let entry = signed.entry(fpr).or_default();
            entry.0 += 1;
            entry.1 += u64::from(quarantined);
        }
    }
    let now = SystemTime::now();
    let mut views: BTreeMap<String, Value> = BTreeMap::new();
    let mut view = |fpr: &str, source: &str, cert: Option<&sequoia_openpgp::Cert>, created_ms: Option<i64>| {
        let state = cert.map(|c| trust::cert_state(c, now));
        let (revoked_at, revocation_reason) = match &state {
            Some(CertState::Revoked { at_ms, reason }) => (*at_ms, reason.clone()),
            _ => (None, None),
        };
        let (n, q) = signed.get(fpr).copied().unwrap_or_default();
        let distrust = distrusted.get(fpr).map(|d| json!({"state": d.state, "reason": d.reason, "atMs": d.at_ms}));
        views.insert(
            fpr.to_string(),
            json!({
                "fingerprint": fpr, "source": source,
                "state": state.as_ref().map_or("removed", CertState::name),
                "revokedAtMs": revoked_at, "revocationReason": revocation_reason,
                "userIds": cert.map(trust::user_ids).unwrap_or_default(), "createdMs": created_ms,
                "signedVersions": n, "quarantinedVersions": q, "distrusted": distrust,
            }),
        );
    };
    for row in &rows {
        let mut one = TrustStore::default();
        one.add_fingerprint(partner, &row.cert, &row.fingerprint).map_err(ApiError::internal)?;
        let cert = find_for(&one, partner, &row.fingerprint).cloned();
        let cert = match (cert, find_for(&config, partner, &row.fingerprint)) {
            (Some(c), Some(from_config)) => Some(trust::merge(c, from_config.clone()).map_err(ApiError::internal)?),
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

#[utoipa::path(get, path = "/v1/partners/{partner}/certificates",
    params(("limit" = Option<i64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "the partner's certificates with fingerprint, source and state (valid, expired, revoked, invalid, removed)"), (status = 404, body = super::Problem)))]
pub(super) async fn list_certificates(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    if !s.store.partner_exists(&partner).await? {
        return Err(ApiError::not_found(format!("no partner {partner:?}")));
    }
    let after = q.after.as_deref().map(normalize_fingerprint).unwrap_or_default();
    let items: Vec<Value> = certificate_views(&s, &partner)
        .await?
        .into_iter()
        .filter(|v| v["fingerprint"].as_str().is_some_and(|f| f > after.as_str()))
        .take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1))
        .collect();
    Ok(axum::Json(page(items, limit, |v| v["fingerprint"].as_str().unwrap_or_default().to_string())))
}

#[utoipa::path(delete, path = "/v1/partners/{partner}/certificates/{fingerprint}",
    responses((status = 200, description = "removed; every version it signed is quarantined (listed)"), (status = 404, body = super::Problem), (status = 409, body = super::Problem)))]
pub(super) async fn remove_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, fingerprint)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let fpr = normalize_fingerprint(&fingerprint);
    let missing = || ApiError::not_found(format!("partner {partner:?} has no certificate {fpr}")).field("fingerprint");
    if !s.store.partner_exists(&partner).await? {
        return Err(ApiError::not_found(format!("no partner {partner:?}")));
    }
    let config = s.config.trust_store().map_err(ApiError::internal)?;
    if find_for(&config, &partner, &fpr).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "certificate-in-config",
            format!(
                "certificate {fpr} is registered in the operator config file for partner {partner}: remove it there and restart"
            ),
        )
        .field("fingerprint"));
    }
    let reason = format!("signing certificate {fpr} was removed by the operator");
    let quarantined =
        s.store.remove_certificate(&partner, &fpr, &reason, &caller.0.actor()).await?.ok_or_else(missing)?;
    if !quarantined.is_empty() {
        tracing::warn!(partner, fingerprint = fpr, versions = ?quarantined, "certificate removed: versions quarantined");
    }
    Ok(axum::Json(json!({"partner": partner, "fingerprint": fpr, "removed": true, "quarantined": quarantined})))
}

// --- versions (operator) -----------------------------------------------------------------

fn version_state(v: &VersionRow) -> Value {
    json!({"app": v.app, "version": v.version, "yanked": v.yanked, "quarantined": v.quarantined,
           "quarantineReason": v.quarantine_reason, "signer": v.signer})
}

#[derive(Clone, Copy)]
enum VersionAction {
    Yank,
    Unyank,
    Quarantine,
    Release,
}

async fn version_action(
    s: &AppState,
    caller: &Caller,
    (partner, name, version): (String, String, String),
    action: VersionAction,
) -> ApiResult<axum::Json<Value>> {
    caller.operator()?;
    let app = format!("{partner}/{name}");
    let actor = caller.0.actor();
    let found = match action {
        VersionAction::Yank => s.store.set_yanked(&app, &version, true, &actor).await?,
        VersionAction::Unyank => s.store.set_yanked(&app, &version, false, &actor).await?,
        VersionAction::Quarantine => {
            s.store.set_quarantined(&app, &version, Some("quarantined by the operator"), &actor).await?
        }
        VersionAction::Release => s.store.set_quarantined(&app, &version, None, &actor).await?,
    };
    let row = match found {
        true => s.store.version(&app, &version).await?,
        false => None,
    };
    let row = row.ok_or_else(|| ApiError::not_found(format!("no version {app}@{version}")).field("version"))?;
    Ok(axum::Json(version_state(&row)))
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/yank",
    responses((status = 200, description = "yanked: no new installs or upgrades"), (status = 404, body = super::Problem)))]
pub(super) async fn operator_yank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Yank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/unyank",
    responses((status = 200, description = "installable again unless quarantined"), (status = 404, body = super::Problem)))]
pub(super) async fn operator_unyank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Unyank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/quarantine",
    responses((status = 200, description = "quarantined: no new installs or upgrades; running installations go on"), (status = 404, body = super::Problem)))]
pub(super) async fn operator_quarantine(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Quarantine).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/release",
    responses((status = 200, description = "released from quarantine (whatever quarantined it)"), (status = 404, body = super::Problem)))]
pub(super) async fn operator_release(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Release).await
}

#[utoipa::path(get, path = "/v1/versions/quarantined",
    params(("limit" = Option<i64>, Query), ("after" = Option<String>, Query, description = "`app@version` from `next`")),
    responses((status = 200, description = "quarantined versions with their signer and reason")))]
pub(super) async fn quarantined_versions(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let after = q.after.as_deref().map(|a| a.rsplit_once('@').unwrap_or((a, "")));
    let rows = s.store.quarantined_versions(after, limit + 1).await?;
    let items = rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    Ok(axum::Json(page(items, limit, |v| {
        format!("{}@{}", v["app"].as_str().unwrap_or_default(), v["version"].as_str().unwrap_or_default())
    })))
}

// --- tokens ------------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/tokens",
    params(("limit" = Option<i64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "tokens: id, role, scope, label, created, expiry, revoked; never a secret or its hash")))]
pub(super) async fn list_tokens(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let now = kiosk_domain::metering::now_ms() as i64;
    let items = s
        .store
        .tokens(q.after.as_deref(), limit + 1)
        .await?
        .into_iter()
        .map(|t| {
            let mut v = serde_json::to_value(&t).unwrap_or_default();
            v["expired"] = json!(t.expires_ms.is_some_and(|e| e <= now));
            v
        })
        .collect();
    Ok(axum::Json(page(items, limit, |v| v["id"].as_str().unwrap_or_default().to_string())))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}",
    responses((status = 204, description = "revoked: the token fails from the next request on"), (status = 404, body = super::Problem), (status = 409, body = super::Problem)))]
pub(super) async fn revoke_token(
    State(s): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    match s.store.revoke_token(&id, &caller.0.actor()).await? {
        TokenRevocation::Revoked | TokenRevocation::AlreadyRevoked => Ok(StatusCode::NO_CONTENT),
        TokenRevocation::NotFound => Err(ApiError::not_found(format!("no token {id:?}")).field("id")),
        TokenRevocation::LastOperator => Err(ApiError::new(
            StatusCode::CONFLICT,
            "last-operator-token",
            format!("token {id} is the last operator token that works; create another one first"),
        )
        .field("id")),
    }
}

/// Installs the configured operator token at start-up (see `Store::set_bootstrap_token`).
pub(super) async fn bootstrap(store: &kiosk_store::Store, secret: &str) -> anyhow::Result<()> {
    match store.set_bootstrap_token(secret).await? {
        BootstrapToken::Created => tracing::info!("operator bootstrap token installed"),
        BootstrapToken::Unchanged => {}
        BootstrapToken::Rotated => {
            tracing::warn!("operator bootstrap token rotated: the previous one no longer authenticates")
        }
        BootstrapToken::Revoked => tracing::warn!(
            "the configured operator token was revoked over the API and stays revoked: configure a new one"
        ),
        BootstrapToken::InUse(id) => {
            anyhow::bail!("the configured operator token is already the secret of token {id}: configure a fresh secret")
        }
    }
    Ok(())
}
