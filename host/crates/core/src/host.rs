//! Assembling a `Kiosk`: data directory, database (migrations applied), secrets key,
//! ledger, runtime. `kiosk serve` and `kiosk run` open the same way; only the front end
//! and the store's location differ.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use kiosk_runtime::logs::LogStore;
use kiosk_runtime::runtime::{Runtime, RuntimeSettings, Services};
use kiosk_store::ledger::{Ledger, LedgerSink};
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
    let sealer = Sealer::from_hex(&secrets_key(&config, &data_dir)?).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::start(store.clone());
    let services = Services {
        kv: Arc::new(DbKv { store: store.clone() }),
        logs: Arc::new(LogStore::new(config.sandbox.log_buffer_bytes)),
        // Calls' usage is committed to the ledger before their answer is sent.
        metering: Arc::new(LedgerSink { ledger: ledger.clone() }),
    };
    let cache_dir = cache_dir.unwrap_or_else(|| data_dir.join("components"));
    let settings = RuntimeSettings {
        limits: config.sandbox.clone(),
        admission: config.admission.clone(),
        cache_dir: Some(cache_dir),
    };
    let runtime = Arc::new(Runtime::new(settings, services)?);
    Ok(Kiosk::new(store, runtime, Arc::new(config), sealer, ledger))
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
