//! Bodies of outbound requests and their responses, bounded: a request body stops at
//! its byte cap; a response body stops at its byte cap, when no byte came for the
//! guest's between-bytes timeout, and at the call's deadline. When a response ends —
//! read to the end, cut, or dropped by the guest — `Finish` writes its one log line,
//! its metrics and its metered egress, and gives back the request's places.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::{Error, WasiBody};

use super::TenantPermit;
use super::gate::SharedRecord;
use crate::logs::{self, Level, LogLine};
use kiosk_domain::egress::EgressUnit;
use kiosk_domain::metering::now_ms;

/// A request body, cut at `limit` bytes with `HttpRequestBodySize`.
pub(crate) struct RequestBody {
    inner: WasiBody,
    sent: u64,
    limit: u64,
}

impl RequestBody {
    pub(crate) fn new(inner: WasiBody, limit: u64) -> Self {
        Self { inner, sent: 0, limit }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent = this.sent.saturating_add(data.len() as u64);
                    if this.sent > this.limit {
                        return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The end of one outbound request: what is written when its response is done.
pub(crate) struct Finish {
    pub(crate) record: SharedRecord,
    pub(crate) app: String,
    pub(crate) label: String,
    pub(crate) method: Method,
    pub(crate) shown: String,
    pub(crate) skus: Vec<(String, EgressUnit)>,
    pub(crate) started: std::time::Instant,
    pub(crate) status: Option<u16>,
    pub(crate) permits: Option<(OwnedSemaphorePermit, TenantPermit)>,
}

impl Finish {
    /// The response's head arrived with `status`: per-request SKUs count it now.
    pub(crate) fn answered(&mut self, status: u16) {
        self.status = Some(status);
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        for (sku, unit) in &self.skus {
            if *unit == EgressUnit::Request {
                record.metered.entry(sku.clone()).or_default().0 += 1;
            }
        }
    }

    /// The request failed before a response: its line, and `code` for the guest.
    pub(crate) fn failed(&mut self, code: Error, why: &str) -> Error {
        self.write(None, 0, Some(why));
        code
    }

    /// Writes the request's line (once) and frees its places.
    fn write(&mut self, received: Option<u64>, bytes: u64, problem: Option<&str>) {
        if self.permits.take().is_none() {
            return;
        }
        let ms = self.started.elapsed().as_millis();
        let (level, message, status) = match (self.status, problem) {
            (Some(status), None) => (
                Level::Info,
                format!("kiosk: outbound {} {} → {status} in {ms} ms, {bytes} B received", self.method, self.shown),
                class(status),
            ),
            (Some(status), Some(why)) => (
                Level::Warn,
                format!(
                    "kiosk: outbound {} {} → {status}, response cut after {} B in {ms} ms: {why}",
                    self.method,
                    self.shown,
                    received.unwrap_or(bytes)
                ),
                class(status),
            ),
            (None, why) => (
                Level::Warn,
                format!(
                    "kiosk: outbound {} {} failed in {ms} ms: {}",
                    self.method,
                    self.shown,
                    why.unwrap_or("no response")
                ),
                "error",
            ),
        };
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        record.lines.push(LogLine { at_ms: now_ms(), level, message: logs::sanitize(&message) });
        for (sku, unit) in &self.skus {
            if *unit == EgressUnit::KibReceived {
                record.metered.entry(sku.clone()).or_default().1 += bytes;
            }
        }
        drop(record);
        let labels = [("app", self.app.clone()), ("destination", self.label.clone()), ("status", status.to_string())];
        metrics::counter!("kiosk_outbound_requests_total", &labels).increment(1);
        metrics::counter!("kiosk_outbound_response_bytes_total", &labels[..2]).increment(bytes);
        metrics::histogram!("kiosk_outbound_request_duration_seconds", &labels[..2])
            .record(self.started.elapsed().as_secs_f64());
    }
}

fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // A response the guest dropped unread (or a call that ended first).
        self.write(None, 0, Some("the app stopped reading"));
    }
}

/// A response body: at most `limit` bytes, each next byte within `between` (if the guest
/// set one) and all before `deadline`.
pub(crate) struct LimitedBody {
    inner: hyper::body::Incoming,
    received: u64,
    limit: u64,
    between: Option<Duration>,
    deadline: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    finish: Finish,
    done: bool,
}

impl LimitedBody {
    pub(crate) fn new(
        inner: hyper::body::Incoming,
        limit: u64,
        between: Option<Duration>,
        deadline: tokio::time::Instant,
        finish: Finish,
    ) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(next_wake(between, deadline)));
        Self { inner, received: 0, limit, between, deadline, timer, finish, done: false }
    }

    fn end(&mut self, problem: Option<&str>) {
        if !self.done {
            self.done = true;
            self.finish.write(Some(self.received), self.received, problem);
        }
    }
}

fn next_wake(between: Option<Duration>, deadline: tokio::time::Instant) -> tokio::time::Instant {
    match between {
        Some(d) => deadline.min(tokio::time::Instant::now() + d),
        None => deadline,
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if this.received.saturating_add(len) > this.limit {
                        // Only what the guest was given is logged and metered.
                        let why = format!("response body over {} bytes (egress.max-response-body-bytes)", this.limit);
                        this.end(Some(&why));
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.limit)))));
                    }
                    this.received += len;
                }
                let wake = next_wake(this.between, this.deadline);
                this.timer.as_mut().reset(wake);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                this.end(Some("the connection broke"));
                Poll::Ready(Some(Err(Error::HttpResponseIncomplete)))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let why = if tokio::time::Instant::now() >= this.deadline {
                        "the call's deadline passed".to_string()
                    } else {
                        format!(
                            "no byte for {} ms (the app's between-bytes timeout)",
                            this.between.unwrap_or_default().as_millis()
                        )
                    };
                    this.end(Some(&why));
                    Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if hint.lower() > self.limit {
            hint = SizeHint::new();
        }
        hint
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let received = self.received;
            self.finish.write(Some(received), received, Some("the app stopped reading"));
        }
    }
}
