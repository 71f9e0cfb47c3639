//! `kiosk serve`: configuration, bootstrap (operator token, secrets key), the demo
//! seed, and the listener with graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::{AppState, router};
use kiosk_core::config::OperatorConfig;

/// What `kiosk serve` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub config: Option<PathBuf>,
    /// `manifest.json=component.wasm` pairs to sign and register for a demo.
    pub demo_apps: Vec<String>,
    /// How the log is written (else `[server] log-format`, else text).
    pub log_format: Option<super::ops::LogFormat>,
}

/// A running server's address (for tests that start it in-process).
#[derive(Debug)]
pub struct Started {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

/// Prepares the state: database, migrations, secrets key, runtime, bootstrap.
pub async fn prepare(options: &ServeOptions) -> anyhow::Result<Arc<AppState>> {
    super::ops::recorder();
    let config = load_config(options)?;
    let data_dir = config.data_dir();
    let state = Arc::new(kiosk_core::host::open(config, options.database.clone(), None).await?);
    if let Some(secret) = state.bootstrap_operator().await? {
        println!("operator token (shown once, store it now): {secret}");
    }
    // Quarantine what a certificate revoked or removed since the last start signed.
    state.trust().await.map_err(|e| anyhow::anyhow!("trust store: {}", e.detail))?;
    if !options.demo_apps.is_empty() {
        seed_demo(&state, &options.demo_apps, &data_dir).await?;
    }
    let usage = &state.config().usage;
    kiosk_core::collector::spawn(
        state.clone(),
        std::time::Duration::from_secs(usage.window_seconds.max(1)),
        std::time::Duration::from_secs(usage.lease_seconds.max(1)),
    );
    // Registry watches and automatic upgrades, in every replica (leases decide who works).
    kiosk_core::watch::spawn(state.clone());
    kiosk_core::log_trim::spawn(state.clone());
    kiosk_core::export::spawn(state.clone()).await.context("usage sinks")?;
    kiosk_core::upgrades::spawn(
        state.clone(),
        std::time::Duration::from_secs(state.config().watch.upgrade_pass_seconds),
    );
    Ok(state)
}

fn load_config(options: &ServeOptions) -> anyhow::Result<OperatorConfig> {
    match &options.config {
        Some(path) => OperatorConfig::load(path),
        None => Ok(OperatorConfig::default()),
    }
}

/// Signs the demo apps with a demo partner key, writes them to a local OCI layout, and
/// registers them through the same verification path as the partner API; creates the
/// demo tenant and prints tokens and a curl session.
async fn seed_demo(state: &AppState, apps: &[String], data_dir: &Path) -> anyhow::Result<()> {
    let mut builds = Vec::new();
    for pair in apps {
        let (manifest_path, wasm_path) =
            pair.split_once('=').with_context(|| format!("--demo-app {pair:?}: expected manifest.json=app.wasm"))?;
        let manifest_bytes = std::fs::read(manifest_path).with_context(|| format!("cannot read {manifest_path}"))?;
        let wasm =
            std::fs::read(wasm_path).with_context(|| format!("cannot read {wasm_path} (build the examples first)"))?;
        builds.push((manifest_bytes, wasm));
    }
    let seed = state.seed_demo(&builds, data_dir).await.context("demo apps")?;
    println!(
        "demo: registered {} from a signed OCI layout at {}",
        seed.registered.join(", "),
        seed.layout_dir.display()
    );
    println!("demo: tenant `demo`; tokens (shown once):");
    println!("  export OPERATOR_TOKEN={}", seed.operator_token);
    println!("  export PARTNER_TOKEN={}", seed.partner_token);
    println!("  export TENANT_TOKEN={}", seed.tenant_token);
    Ok(())
}

/// Binds and serves until SIGINT/SIGTERM, then finishes in-flight requests.
pub async fn run(options: ServeOptions, filter: tracing_subscriber::EnvFilter) -> anyhow::Result<()> {
    let format = options.log_format.or(load_config(&options)?.server.log_format).unwrap_or_default();
    super::ops::init_logging(format, filter);
    let state = prepare(&options).await?;
    let listen = options
        .listen
        .or_else(|| std::env::var("KIOSK_LISTEN").ok().and_then(|l| l.parse().ok()))
        .or(state.config().server.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("kiosk listening on http://{addr}");
    println!("console: http://{addr}/console/ (sign in with a token)");
    let kiosk = state.clone();
    let mut signals = StopSignals::new();
    let stopping = async move {
        signals.next().await;
        tracing::info!("shutting down: /readyz is 503, new calls are refused, calls in flight finish");
        // `/readyz` answers 503 and new calls are refused (503, `Retry-After`) from now;
        // calls in flight run on to their end or deadline, within `[server]
        // drain-seconds`, or until a second signal. Then any still running stop (503), the
        // listener closes once their responses are out, and the ledger's last commits end
        // before `close`.
        kiosk.drain();
        let grace = kiosk.config().server.drain();
        tokio::select! {
            () = kiosk.calls_finished() => tracing::info!("calls in flight finished"),
            () = tokio::time::sleep(grace) => {
                tracing::warn!(drain_seconds = grace.as_secs(), "calls still running after the drain: stopping them");
            }
            () = signals.next() => tracing::warn!("a second signal: stopping the calls in flight now"),
        }
        kiosk.shut_down();
    };
    axum::serve(listener, router(state.clone())).with_graceful_shutdown(stopping).await?;
    state.close().await;
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

/// SIGTERM and SIGINT, listened to from the start so that a second one is told apart
/// from the first (a listener made after a signal may see that signal again).
struct StopSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
            if let Err(e) = &streams {
                tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT: stop the server with SIGKILL");
            }
            Self { streams: streams.ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
