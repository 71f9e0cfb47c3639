//! The state of one call's Store and the host imports the guest sees. Nothing here does
//! I/O: key-value works on a preloaded snapshot, usage and logs are buffered, and the
//! runtime hands them on after the Store is gone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::egress::CallEgress;
use crate::kv_session::KvSession;
use crate::logs::{self, Level, LogLine};
use crate::world::v1::kiosk::app::types;
use crate::world::{key_value, log, metering};
use kiosk_domain::limits::CallLimits;
use kiosk_domain::metering::{MAX_QUANTITY, UsageEvent, UsageSource, now_ms};

/// Which limit a guest ran into, noted by the host when it refused a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory,
    Table,
    Log,
}

/// Enforces per-call memory, table and instance limits.
#[derive(Debug)]
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    pub(crate) hit: Option<LimitHit>,
}

impl CallLimiter {
    pub(crate) fn new(limits: &CallLimits) -> Self {
        Self {
            memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: usize::try_from(limits.table_elements).unwrap_or(usize::MAX),
            instances: limits.instances as usize,
            tables: limits.tables as usize,
            memories: limits.memories as usize,
            hit: None,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(LimitHit::Memory);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(LimitHit::Table);
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// Who the call is for; also the metering attribution.
#[derive(Debug, Clone)]
pub(crate) struct Attribution {
    pub(crate) tenant: String,
    pub(crate) installation: String,
    pub(crate) app: String,
    pub(crate) version: String,
    pub(crate) call_id: String,
}

/// The host side of one call's Store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    http: WasiHttpCtx,
    /// The gate of a 0.2.0 app's outbound requests (`None`: 0.1.0, never linked).
    pub(crate) egress: Option<CallEgress>,
    no_egress: NoEgress,
    pub(crate) limiter: CallLimiter,
    pub(crate) who: Arc<Attribution>,
    skus: Arc<HashSet<String>>,
    max_usage_events: usize,
    pub(crate) usage: Vec<UsageEvent>,
    /// `None` when the manifest did not ask for key-value storage.
    pub(crate) kv: Option<KvSession>,
    max_log_bytes: u64,
    log_bytes: u64,
    pub(crate) logs: Vec<LogLine>,
    /// The guest's stderr (e.g. a Rust panic message), turned into log lines afterwards.
    pub(crate) stderr: CappedStderr,
}

/// The guest's stderr: kept in memory up to a cap; writing past the cap stops the call
/// with a named limit (rather than wasmtime's anonymous pipe error).
#[derive(Debug, Clone)]
pub(crate) struct CappedStderr {
    buffer: Arc<Mutex<Vec<u8>>>,
    capacity: usize,
    overflowed: Arc<AtomicBool>,
}

/// The guest wrote more to stderr than one call may.
#[derive(Debug, thiserror::Error)]
#[error("stderr limit of {0} bytes per call exceeded")]
pub(crate) struct StderrLimitExceeded(pub(crate) usize);

impl CappedStderr {
    fn new(capacity: usize) -> Self {
        Self { buffer: Arc::default(), capacity, overflowed: Arc::default() }
    }

    pub(crate) fn contents(&self) -> Vec<u8> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the guest tried to write past the cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn over(&self) -> StreamError {
        self.overflowed.store(true, Ordering::Relaxed);
        StreamError::Trap(wasmtime::Error::new(StderrLimitExceeded(self.capacity)))
    }
}

impl IsTerminal for CappedStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CappedStderr {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if bytes.len() > self.capacity.saturating_sub(buf.len()) {
            drop(buf);
            return Err(self.over());
        }
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        let used = self.buffer.lock().unwrap_or_else(|p| p.into_inner()).len();
        match self.capacity.saturating_sub(used) {
            0 => Err(self.over()),
            room => Ok(room),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for CappedStderr {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedStderr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if data.len() > self.capacity.saturating_sub(buf.len()) {
            self.overflowed.store(true, Ordering::Relaxed);
            return std::task::Poll::Ready(Err(std::io::Error::other(StderrLimitExceeded(self.capacity))));
        }
        buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl HostState {
    pub(crate) fn new(
        limits: &CallLimits,
        who: Arc<Attribution>,
        skus: Arc<HashSet<String>>,
        kv: Option<KvSession>,
        egress: Option<CallEgress>,
    ) -> Self {
        let stderr = CappedStderr::new(usize::try_from(limits.max_log_bytes_per_call).unwrap_or(usize::MAX));
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_handles as usize);
        Self {
            // No preopens, no environment, no arguments, no sockets, stdout discarded,
            // stderr captured and capped; clocks and (capped) randomness are allowed.
            wasi: WasiCtx::builder().stderr(stderr.clone()).max_random_size(limits.max_random_bytes).build(),
            stderr,
            table,
            http: WasiHttpCtx::new(),
            egress,
            no_egress: NoEgress,
            limiter: CallLimiter::new(limits),
            who,
            skus,
            max_usage_events: limits.max_usage_events_per_call as usize,
            usage: Vec::new(),
            kv,
            max_log_bytes: limits.max_log_bytes_per_call,
            log_bytes: 0,
            logs: Vec::new(),
        }
    }

    /// Moves what the guest wrote to stderr into its log lines.
    pub(crate) fn collect_stderr(&mut self) {
        let raw = self.stderr.contents();
        if raw.is_empty() {
            return;
        }
        for line in String::from_utf8_lossy(&raw).lines().filter(|l| !l.trim().is_empty()) {
            self.logs.push(LogLine {
                at_ms: now_ms(),
                level: Level::Error,
                message: format!("stderr: {}", logs::sanitize(line)),
            });
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let hooks: &mut dyn WasiHttpHooks = match &mut self.egress {
            Some(gate) => gate,
            None => &mut self.no_egress,
        };
        WasiHttpCtxView { hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

/// The hooks of a Store whose app has no outbound HTTP (0.1.0 apps are never linked to
/// `wasi:http`; this refuses anyway).
struct NoEgress;

impl WasiHttpHooks for NoEgress {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl types::Host for HostState {}

impl metering::Host for HostState {
    fn record_usage(&mut self, sku: String, quantity: u64) -> wasmtime::Result<Result<(), metering::MeteringError>> {
        if !self.skus.contains(&sku) {
            return Ok(Err(metering::MeteringError::UndeclaredSku(sku)));
        }
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Ok(Err(metering::MeteringError::InvalidQuantity));
        }
        if self.usage.len() >= self.max_usage_events {
            return Ok(Err(metering::MeteringError::TooManyEvents));
        }
        let seq = self.usage.len();
        self.usage.push(UsageEvent {
            tenant: self.who.tenant.clone(),
            installation: self.who.installation.clone(),
            app: self.who.app.clone(),
            version: self.who.version.clone(),
            sku,
            quantity,
            at_ms: now_ms(),
            source: UsageSource::Guest,
            idempotency_key: format!("{}/guest/{seq}", self.who.call_id),
        });
        Ok(Ok(()))
    }
}

impl HostState {
    fn kv_session(&mut self) -> Result<&mut KvSession, key_value::KvError> {
        self.kv.as_mut().ok_or(key_value::KvError::NotEnabled)
    }

    fn checked_key<'a>(&mut self, key: &'a str) -> Result<(&mut KvSession, &'a str), key_value::KvError> {
        let session = self.kv_session()?;
        // NUL cannot be stored by every backend (PostgreSQL TEXT), so it is refused on all.
        if key.is_empty() || key.len() > session.max_key as usize || key.contains('\0') {
            return Err(key_value::KvError::InvalidKey(session.max_key));
        }
        Ok((session, key))
    }
}

impl key_value::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::KvError>> {
        Ok(self.checked_key(&key).map(|(s, k)| s.get(k).map(<[u8]>::to_vec)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), key_value::KvError>> {
        Ok(self.checked_key(&key).and_then(|(s, k)| s.set(k, value).map_err(key_value::KvError::QuotaExceeded)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, key_value::KvError>> {
        Ok(self.checked_key(&key).map(|(s, k)| s.delete(k)))
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, key_value::KvError>> {
        Ok(self.kv_session().map(|s| s.keys(&prefix)))
    }
}

/// The guest wrote more log text than one call may.
#[derive(Debug, thiserror::Error)]
#[error("log limit of {0} bytes per call exceeded")]
pub(crate) struct LogLimitExceeded(pub(crate) u64);

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        // A line costs its bytes plus one (its line break, as in a file), so even empty
        // lines cannot pile up without bound.
        self.log_bytes = self.log_bytes.saturating_add(message.len() as u64 + 1);
        if self.log_bytes > self.max_log_bytes {
            self.limiter.hit = Some(LimitHit::Log);
            return Err(wasmtime::Error::new(LogLimitExceeded(self.max_log_bytes)));
        }
        let level = match level {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        self.logs.push(LogLine { at_ms: now_ms(), level, message: logs::sanitize(&message) });
        Ok(())
    }
}
