//! Assembling a `Kiosk`: data directory, database (migrations applied), secrets key,
//! ledger, runtime. `kiosk serve` and `kiosk run` open the same way; only the front end
//! and the store's location differ.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use kiosk_runtime::runtime::{Runtime, RuntimeSettings, Services};
use kiosk_store::ledger::{Ledger, LedgerCommitter};
use kiosk_store::logs::LogBounds;
use kiosk_store::{DbKv, Store, redact};

use crate::config::OperatorConfig;
use crate::lifecycle::Kiosk;
use crate::seal::Sealer;

/// Opens Kiosk on `database` (else `KIOSK_DATABASE_URL`, else the config's, else SQLite
/// in the data directory), compiling components into `cache_dir` (else the data
/// directory's `components`).
pub async fn open(
    config: OperatorConfig,
    database: Option<String>,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Kiosk> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let database = database
        .or_else(|| std::env::var("KIOSK_DATABASE_URL").ok())
        .or_else(|| config.server.database.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("kiosk.db").display()));
    let store = Store::connect(&database).await.with_context(|| format!("database {}", redact(&database)))?;
    tracing::info!(database = %redact(&database), "database ready, migrations applied");
    // The operator's tenant quotas, enforced by the store where the writes happen (the
    // collection share by every replica's collector, which reads it at each pass).
    let defaults = kiosk_store::TenantQuotaRow {
        installations: Some(config.sandbox.tenant_installations),
        kv_bytes: Some(config.sandbox.tenant_kv_bytes),
        collection_share: Some(config.sandbox.tenant_collection_share),
    };
    store.set_default_tenant_quotas(defaults).await.context("writing the default tenant quotas")?;
    let sealer = Sealer::from_hex(&secrets_key(&config, &data_dir)?).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::start(store.clone());
    let services = Services {
        kv: Arc::new(DbKv { store: store.clone() }),
        // A call's key-value changes, usage and lines go to the ledger's writer in one
        // group-committed transaction, durable before the call's answer is sent.
        commit: Arc::new(LedgerCommitter { ledger: ledger.clone(), logs: log_bounds(&config) }),
    };
    let cache_dir = cache_dir.unwrap_or_else(|| data_dir.join("components"));
    let settings = RuntimeSettings {
        limits: config.sandbox.clone(),
        admission: config.admission.clone(),
        cache_dir: Some(cache_dir),
        egress: config.egress.clone(),
        resolver: None,
    };
    let runtime = Arc::new(Runtime::new(settings, services)?);
    Ok(Kiosk::new(store, runtime, Arc::new(config), sealer, ledger))
}

/// How much of each installation's log is kept (operator settings).
pub fn log_bounds(config: &OperatorConfig) -> LogBounds {
    LogBounds { max_lines: config.logs.max_lines_per_installation, max_bytes: config.sandbox.log_buffer_bytes }
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
