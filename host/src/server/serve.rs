//! `kiosk serve`: configuration, bootstrap (operator token, secrets key), the demo
//! seed, and the listener with graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::seal::Sealer;
use super::{AppState, router};
use crate::artifact::{LayoutSource, fetch_verified};
use crate::config::OperatorConfig;
use crate::logs::LogStore;
use crate::runtime::{Runtime, RuntimeSettings, Services};
use crate::store::{DbKv, Principal, Store, redact};
use crate::world::HOST_API_VERSION;

/// What `kiosk serve` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub config: Option<PathBuf>,
    /// `manifest.json=component.wasm` pairs to sign and register for a demo.
    pub demo_apps: Vec<String>,
}

/// A running server's address (for tests that start it in-process).
#[derive(Debug)]
pub struct Started {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

/// Prepares the state: database, migrations, secrets key, runtime, bootstrap.
pub async fn prepare(options: &ServeOptions) -> anyhow::Result<Arc<AppState>> {
    let config = match &options.config {
        Some(path) => OperatorConfig::load(path)?,
        None => OperatorConfig::default(),
    };
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let database = options
        .database
        .clone()
        .or_else(|| std::env::var("KIOSK_DATABASE_URL").ok())
        .or_else(|| config.server.database.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("kiosk.db").display()));
    let store = Store::connect(&database).await.with_context(|| format!("database {}", redact(&database)))?;
    tracing::info!(database = %redact(&database), "database ready, migrations applied");
    let sealer = Sealer::from_hex(&secrets_key(&config, &data_dir)?).map_err(anyhow::Error::msg)?;
    let ledger = crate::ledger::Ledger::start(store.clone());
    let services = Services {
        kv: Arc::new(DbKv { store: store.clone() }),
        logs: Arc::new(LogStore::new(config.sandbox.log_buffer_bytes)),
        // Calls' usage is committed to the ledger before their answer is sent.
        metering: Arc::new(crate::ledger::LedgerSink { ledger: ledger.clone() }),
    };
    let settings = RuntimeSettings {
        limits: config.sandbox.clone(),
        admission: config.admission.clone(),
        cache_dir: Some(data_dir.join("components")),
    };
    let runtime = Arc::new(Runtime::new(settings, services)?);
    bootstrap_operator(&store, &config).await?;
    let state = Arc::new(AppState::new(store, runtime, Arc::new(config), sealer, ledger));
    // Quarantine what a certificate revoked or removed since the last start signed.
    state.trust().await.map_err(|e| anyhow::anyhow!("trust store: {}", e.detail))?;
    if !options.demo_apps.is_empty() {
        seed_demo(&state, &options.demo_apps, &data_dir).await?;
    }
    let usage = &state.config.usage;
    crate::collector::spawn(
        state.clone(),
        std::time::Duration::from_secs(usage.window_seconds.max(1)),
        std::time::Duration::from_secs(usage.lease_seconds.max(1)),
    );
    Ok(state)
}

fn secrets_key(config: &OperatorConfig, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(key) = config.server.secrets_key.clone().or_else(|| std::env::var("KIOSK_SECRETS_KEY").ok()) {
        return Ok(key);
    }
    let path = data_dir.join("secrets.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(key.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Sealer::generate_hex();
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            std::io::Write::write_all(&mut file.open(&path)?, key.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::warn!(path = %path.display(), "generated a new secrets key; back it up: sealed config values need it");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The configured operator token (config file, else `KIOSK_OPERATOR_TOKEN`) replaces
/// the previous bootstrap token, so rotating it is editing the setting and restarting;
/// without one, a token is generated and printed once when no operator token works.
async fn bootstrap_operator(store: &Store, config: &OperatorConfig) -> anyhow::Result<()> {
    if let Some(token) = config.server.operator_token.clone().or_else(|| std::env::var("KIOSK_OPERATOR_TOKEN").ok()) {
        return super::admin::bootstrap(store, token.trim()).await;
    }
    if store.count_operator_tokens().await? == 0 {
        let (_, secret) = store.create_token(&Principal::Operator, "bootstrap (generated)").await?;
        println!("operator token (shown once, store it now): {secret}");
    }
    Ok(())
}

/// Signs the demo apps with a demo partner key, writes them to a local OCI layout, and
/// registers them through the same verification path as the partner API; creates the
/// demo tenant and prints tokens and a curl session.
async fn seed_demo(state: &AppState, apps: &[String], data_dir: &Path) -> anyhow::Result<()> {
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::parse::Parse as _;
    use sequoia_openpgp::serialize::SerializeInto as _;
    let layout_dir = data_dir.join("demo-layout");
    let mut printed = Vec::new();
    for pair in apps {
        let (manifest_path, wasm_path) =
            pair.split_once('=').with_context(|| format!("--demo-app {pair:?}: expected manifest.json=app.wasm"))?;
        let manifest_bytes = std::fs::read(manifest_path).with_context(|| format!("cannot read {manifest_path}"))?;
        let wasm =
            std::fs::read(wasm_path).with_context(|| format!("cannot read {wasm_path} (build the examples first)"))?;
        let manifest = crate::manifest::Manifest::parse(&manifest_bytes, &HOST_API_VERSION)?;
        let partner = manifest.app.split_once('/').map_or("demo", |(p, _)| p).to_string();
        let key_path = data_dir.join(format!("demo-{partner}.key"));
        let tsk = match std::fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(_) => {
                let (cert, _) = CertBuilder::general_purpose(Some(format!("{partner} demo <demo@{partner}.example>")))
                    .generate()?;
                let bytes = cert.as_tsk().armored().to_vec()?;
                std::fs::write(&key_path, &bytes)?;
                bytes
            }
        };
        let cert = sequoia_openpgp::Cert::from_bytes(&tsk)?;
        let public = cert.armored().to_vec()?;
        state.store.create_partner(&partner, &partner).await?;
        if !state.store.add_certificate(&partner, &cert.fingerprint().to_hex(), &public).await? {
            anyhow::bail!("demo: the demo key of {partner} is registered for another partner");
        }
        let version = manifest.version.to_string();
        if state.store.version(&manifest.app, &version).await?.is_none() {
            let (m_sig, _) = crate::publish::sign_detached(&tsk, &manifest_bytes)?;
            let (w_sig, _) = crate::publish::sign_detached(&tsk, &wasm)?;
            LayoutSource::new(&layout_dir).write(&version, &manifest_bytes, &wasm, &[m_sig, w_sig])?;
            let trust = state.trust().await.map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            let artifact = fetch_verified(
                &LayoutSource::new(&layout_dir),
                &manifest.app,
                &version,
                &trust,
                &state.config.artifacts,
                &HOST_API_VERSION,
                None,
            )
            .await?;
            let reference = format!("oci-layout:{}:{version}", layout_dir.display());
            state
                .store
                .register_version(
                    &artifact.manifest,
                    &String::from_utf8_lossy(&artifact.manifest_bytes),
                    artifact.digest.as_str(),
                    artifact.component_digest.as_str(),
                    &artifact.component,
                    &artifact.signers.manifest.fingerprint,
                    &reference,
                    "demo",
                )
                .await?;
        }
        printed.push(format!("{}@{version}", manifest.app));
    }
    state.store.create_tenant("demo", "Demo tenant").await?;
    let (_, operator) = state.store.create_token(&Principal::Operator, "demo operator").await?;
    let (_, tenant) = state.store.create_token(&Principal::Tenant("demo".into()), "demo tenant").await?;
    let (_, partner) = state.store.create_token(&Principal::Partner("acme".into()), "demo partner").await?;
    println!("demo: registered {} from a signed OCI layout at {}", printed.join(", "), layout_dir.display());
    println!("demo: tenant `demo`; tokens (shown once):");
    println!("  export OPERATOR_TOKEN={operator}");
    println!("  export PARTNER_TOKEN={partner}");
    println!("  export TENANT_TOKEN={tenant}");
    Ok(())
}

/// Binds and serves until SIGINT/SIGTERM, then finishes in-flight requests.
pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let state = prepare(&options).await?;
    let listen = options
        .listen
        .or_else(|| std::env::var("KIOSK_LISTEN").ok().and_then(|l| l.parse().ok()))
        .or(state.config.server.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("kiosk listening on http://{addr}");
    let store = state.store.clone();
    let runtime = state.runtime.clone();
    let stopping = async move {
        shutdown_signal().await;
        // Calls in flight stop now (a sleeping guest would otherwise hold the shutdown
        // until its deadline); their requests answer 503 and the server drains.
        runtime.shut_down();
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(stopping).await?;
    store.close().await;
    println!("kiosk stopped");
    Ok(())
}

/// Starts the server on `listen` in the background (tests).
pub async fn spawn(options: ServeOptions, listen: SocketAddr) -> anyhow::Result<Started> {
    let state = prepare(&options).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Started { addr, state })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
