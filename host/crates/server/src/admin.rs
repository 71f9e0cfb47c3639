//! Operator administration of trust and tokens (SPEC §2 step 6, §8): partner
//! certificates (add with ownership and revocations, list with their state, remove),
//! the quarantine of every version a revoked or removed certificate signed, the
//! operator's yank and quarantine of any version, and tokens (list, revoke).

use kiosk_domain::ids::AppId;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Caller, Json, Page, Path, Problem, Query, Shared};
use kiosk_core::lifecycle::{find_for, revoked_reason};
use kiosk_distribution::trust::{self, CertState, TrustStore, Upload};
use kiosk_store::{BootstrapToken, CertUpdate, TokenRevocation, VersionRow};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(add_certificate))
        .routes(routes!(list_certificates))
        .routes(routes!(remove_certificate))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(quarantined_versions))
        .routes(routes!(operator_yank))
        .routes(routes!(operator_unyank))
        .routes(routes!(operator_quarantine))
        .routes(routes!(operator_release))
}

// --- pages ---------------------------------------------------------------------------

/// `?limit=&after=`: at most `limit` items (1-1000, default 100) after the cursor
/// `after` (the `next` of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    pub(super) after: Option<String>,
}

impl PageQuery {
    pub(super) fn limit(&self) -> ApiResult<i64> {
        page_limit(self.limit)
    }
}

/// `limit`: 1-1000, default 100; out of range is a 400 `invalid-query`.
/// Longest cursor, digits (cursors are non-negative and below 10^18).
pub(super) const MAX_CURSOR_DIGITS: usize = 18;

/// A cursor query parameter: 1-18 ASCII digits; anything else is a 400 naming `field`
/// and saying which cursor it must be (`what`).
pub(super) fn cursor(field: &'static str, value: &str, what: &str) -> ApiResult<i64> {
    let valid = !value.is_empty() && value.len() <= MAX_CURSOR_DIGITS && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<i64>() {
        Ok(cursor) if valid => Ok(cursor),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("{field} must be {what} (1-{MAX_CURSOR_DIGITS} digits)"),
        )
        .field(field)),
    }
}

pub(super) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("limit {other} is out of range: use 1-1000"),
        )
        .field("limit")),
    }
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
        states.push(CertificateState { fingerprint: fpr.clone(), state: state.name().to_string() });
    }
    let quarantined = match s.store.put_certificates(partner, &updates, actor).await? {
        Ok(quarantined) => quarantined,
        Err(fpr) => return Err(owned(&fpr)),
    };
    if !quarantined.is_empty() {
        tracing::warn!(partner, versions = ?quarantined, "certificate revoked: versions quarantined");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let body =
        CertificatesAdded { partner: partner.to_string(), fingerprints: order, certificates: states, quarantined };
    Ok((status, axum::Json(body)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCertificate {
    /// ASCII-armoured OpenPGP public certificate.
    certificate: String,
}

/// Certificates (new ones, or new copies of registered ones: merged), or a revocation
/// certificate of a registered one. A fingerprint registered for another partner is a
/// 409 and nothing is written; a revoked certificate quarantines what it signed.
#[utoipa::path(post, path = "/v1/partners/{partner}/certificates", tag = "operator", request_body = NewCertificate,
    responses((status = 201, description = "registered (at least one certificate is new)", body = CertificatesAdded),
              (status = 200, description = "registered copies updated (e.g. revoked)", body = CertificatesAdded),
              (status = 409, description = "`certificate-owned`: a fingerprint is registered for another partner; nothing is written", body = Problem),
              (status = 422, description = "`invalid-certificate`: not an OpenPGP certificate or revocation of a registered one", body = Problem)))]
async fn add_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(body): Json<NewCertificate>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    add_certificates(&s, &caller.0.actor(), &partner, &body.certificate).await
}

/// A certificate's fingerprint and state after an upload.
#[derive(Serialize, utoipa::ToSchema)]
struct CertificateState {
    fingerprint: String,
    /// `valid`, `expired`, `revoked` or `invalid`.
    state: String,
}

/// What an upload registered; `quarantined` lists the versions (`app@version`) a revoked
/// certificate signed, quarantined in the same transaction.
#[derive(Serialize, utoipa::ToSchema)]
struct CertificatesAdded {
    partner: String,
    fingerprints: Vec<String>,
    certificates: Vec<CertificateState>,
    quarantined: Vec<String>,
}

/// Why a certificate's versions were quarantined: `revoked`, `removed` by the operator,
/// or `missing` (gone from the config file).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Distrust {
    state: String,
    reason: String,
    at_ms: i64,
}

/// A partner's certificate: where it is registered (`api`, `config`, or `none` once
/// removed), its state (`valid`, `expired`, `revoked`, `invalid`, `removed`) and the
/// versions it signed.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CertificateView {
    fingerprint: String,
    source: String,
    state: String,
    revoked_at_ms: Option<i64>,
    revocation_reason: Option<String>,
    user_ids: Vec<String>,
    created_ms: Option<i64>,
    signed_versions: u64,
    quarantined_versions: u64,
    distrusted: Option<Distrust>,
}

/// A partner's certificates (registered over the API or in the config file, and those
/// removed whose versions were quarantined) with their state, by fingerprint.
async fn certificate_views(s: &AppState, partner: &str) -> ApiResult<Vec<CertificateView>> {
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
    let mut views: BTreeMap<String, CertificateView> = BTreeMap::new();
    let mut view = |fpr: &str, source: &str, cert: Option<&sequoia_openpgp::Cert>, created_ms: Option<i64>| {
        let state = cert.map(|c| trust::cert_state(c, now));
        let (revoked_at, revocation_reason) = match &state {
            Some(CertState::Revoked { at_ms, reason }) => (*at_ms, reason.clone()),
            _ => (None, None),
        };
        let (n, q) = signed.get(fpr).copied().unwrap_or_default();
        let distrust =
            distrusted.get(fpr).map(|d| Distrust { state: d.state.clone(), reason: d.reason.clone(), at_ms: d.at_ms });
        views.insert(
            fpr.to_string(),
            CertificateView {
                fingerprint: fpr.to_string(),
                source: source.to_string(),
                state: state.as_ref().map_or("removed", CertState::name).to_string(),
                revoked_at_ms: revoked_at,
                revocation_reason,
                user_ids: cert.map(trust::user_ids).unwrap_or_default(),
                created_ms,
                signed_versions: n,
                quarantined_versions: q,
                distrusted: distrust,
            },
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

#[utoipa::path(get, path = "/v1/partners/{partner}/certificates", tag = "operator", params(PageQuery),
    responses((status = 200, description = "the partner's certificates by fingerprint, with source and state", body = Page<CertificateView>),
              (status = 404, description = "`not-found`: no such partner", body = Problem)))]
async fn list_certificates(
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
    let items: Vec<CertificateView> = certificate_views(&s, &partner)
        .await?
        .into_iter()
        .filter(|v| v.fingerprint.as_str() > after.as_str())
        .take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1))
        .collect();
    Ok(axum::Json(Page::of(items, limit, |v| v.fingerprint.clone())))
}

/// A removed certificate and the versions (`app@version`) it signed, now quarantined.
#[derive(Serialize, utoipa::ToSchema)]
struct CertificateRemoved {
    partner: String,
    fingerprint: String,
    removed: bool,
    quarantined: Vec<String>,
}

#[utoipa::path(delete, path = "/v1/partners/{partner}/certificates/{fingerprint}", tag = "operator",
    responses((status = 200, description = "removed; every version it signed is quarantined (listed)", body = CertificateRemoved),
              (status = 404, description = "`not-found`: no such partner or certificate", body = Problem),
              (status = 409, description = "`certificate-in-config`: registered in the operator config file", body = Problem)))]
async fn remove_certificate(
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
    Ok(axum::Json(CertificateRemoved { partner, fingerprint: fpr, removed: true, quarantined }))
}

// --- versions (operator) -----------------------------------------------------------------

/// A version's state as the operator sets it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct VersionState {
    app: String,
    version: String,
    yanked: bool,
    quarantined: bool,
    quarantine_reason: Option<String>,
    /// Fingerprint of the certificate that signed it.
    signer: String,
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
) -> ApiResult<axum::Json<VersionState>> {
    caller.operator()?;
    let app = AppId::new(&partner, &name).map_err(|e| ApiError::not_found(e.to_string()))?.to_string();
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

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/yank", tag = "operator",
    responses((status = 200, body = VersionState, description = "yanked: no new installs or upgrades"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_yank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Yank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/unyank", tag = "operator",
    responses((status = 200, body = VersionState, description = "installable again unless quarantined"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_unyank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Unyank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/quarantine", tag = "operator",
    responses((status = 200, body = VersionState, description = "quarantined: no new installs or upgrades; running installations go on"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_quarantine(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Quarantine).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/release", tag = "operator",
    responses((status = 200, body = VersionState, description = "released from quarantine (whatever quarantined it)"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_release(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Release).await
}

/// A quarantined version with its signer and the reason (`quarantinedMs`: when).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct QuarantinedVersion {
    app: String,
    version: String,
    signer: String,
    reason: String,
    quarantined_ms: Option<i64>,
}

/// `after` is `app@version`, from `next`.
#[utoipa::path(get, path = "/v1/versions/quarantined", tag = "operator", params(PageQuery),
    responses((status = 200, description = "quarantined versions with their signer and reason", body = Page<QuarantinedVersion>)))]
async fn quarantined_versions(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let after = q.after.as_deref().map(|a| a.rsplit_once('@').unwrap_or((a, "")));
    let rows = s.store.quarantined_versions(after, limit + 1).await?;
    let items = rows
        .into_iter()
        .map(|r| QuarantinedVersion {
            app: r.app,
            version: r.version,
            signer: r.signer,
            reason: r.reason,
            quarantined_ms: r.quarantined_ms,
        })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |v| format!("{}@{}", v.app, v.version))))
}

// --- tokens ------------------------------------------------------------------------------

/// A token as the operator sees it: never its secret or the secret's hash.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    id: String,
    role: String,
    scope: Option<String>,
    label: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked: bool,
    expired: bool,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "operator", params(PageQuery),
    responses((status = 200, description = "tokens by id; never a secret or its hash", body = Page<TokenView>)))]
async fn list_tokens(
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
        .map(|t| TokenView {
            expired: t.expires_ms.is_some_and(|e| e <= now),
            id: t.id,
            role: t.role,
            scope: t.scope,
            label: t.label,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            revoked: t.revoked,
        })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |v| v.id.clone())))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "operator",
    responses((status = 204, description = "revoked: the token fails from the next request on"),
              (status = 404, description = "`not-found`: no such token", body = Problem),
              (status = 409, description = "`last-operator-token`: the last operator token that works", body = Problem)))]
async fn revoke_token(State(s): State<Shared>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
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
