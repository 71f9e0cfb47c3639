//! The `kiosk:app@0.2.0` imports of a call's Store: the same host functions as 0.1.0's
//! (`sandbox`), reached through 0.2.0's interface types. Only the error variants and the
//! log level are separate types per world version; the behaviour is 0.1.0's, so a
//! 0.2.0 app meters, stores and logs exactly as a 0.1.0 app does.

use crate::sandbox::HostState;
use crate::world::v2::kiosk::app::{key_value as kv2, log as log2, metering as m2};
use crate::world::{key_value as kv1, log as log1, metering as m1};

fn kv_error(e: kv1::KvError) -> kv2::KvError {
    match e {
        kv1::KvError::NotEnabled => kv2::KvError::NotEnabled,
        kv1::KvError::QuotaExceeded(quota) => kv2::KvError::QuotaExceeded(quota),
        kv1::KvError::InvalidKey(max) => kv2::KvError::InvalidKey(max),
    }
}

impl m2::Host for HostState {
    fn record_usage(&mut self, sku: String, quantity: u64) -> wasmtime::Result<Result<(), m2::MeteringError>> {
        Ok(m1::Host::record_usage(self, sku, quantity)?.map_err(|e| match e {
            m1::MeteringError::UndeclaredSku(sku) => m2::MeteringError::UndeclaredSku(sku),
            m1::MeteringError::InvalidQuantity => m2::MeteringError::InvalidQuantity,
            m1::MeteringError::TooManyEvents => m2::MeteringError::TooManyEvents,
        }))
    }
}

impl kv2::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::KvError>> {
        Ok(kv1::Host::get(self, key)?.map_err(kv_error))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), kv2::KvError>> {
        Ok(kv1::Host::set(self, key, value)?.map_err(kv_error))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, kv2::KvError>> {
        Ok(kv1::Host::delete(self, key)?.map_err(kv_error))
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, kv2::KvError>> {
        Ok(kv1::Host::list_keys(self, prefix)?.map_err(kv_error))
    }
}

impl log2::Host for HostState {
    fn log(&mut self, level: log2::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log2::Level::Trace => log1::Level::Trace,
            log2::Level::Debug => log1::Level::Debug,
            log2::Level::Info => log1::Level::Info,
            log2::Level::Warn => log1::Level::Warn,
            log2::Level::Error => log1::Level::Error,
        };
        log1::Host::log(self, level, message)
    }
}
