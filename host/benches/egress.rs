//! The outbound rung (issue 26): a call of a 0.2.0 app that makes one request to a
//! loopback HTTP server through the egress gate, against the same request made by the
//! host directly with a pooled hyper client. Both reuse their connection (the second
//! request onwards), so the difference is the call (a fresh Store, instantiation, the
//! guest's client) plus the gate (judging, the bounded bodies, the log line).
//!
//! Needs the guests built for wasm32-wasip2 (`bash .ci/test` or the README's build).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::NullSink;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Empty};
use kiosk::admission::AdmissionSettings;
use kiosk::egress::InstallationEgress;
use kiosk::egress::settings::{EgressSettings, HostRule};
use kiosk::kv::MemoryKv;
use kiosk::manifest::Manifest;
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::HOST_API_VERSION;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A keep-alive HTTP/1.1 server on loopback answering every request with a small JSON body.
async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut pending = Vec::new();
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        // One write: head and body in one segment (two small writes would
                        // meet Nagle and the client's delayed ACK: 40 ms a request).
                        let body = r#"{"spend":[120,130,95]}"#;
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn benches(c: &mut Criterion) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/outbound_guest.wasm"))
        .expect("build the guests first: bash .ci/test");
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _guard = tokio_rt.enter();
    let port = tokio_rt.block_on(server());
    let destination = format!("http://api.bench.test:{port}");

    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/guests/outbound/manifest.json")).unwrap()).unwrap();
    manifest["capabilities"]["outbound"] = serde_json::json!([{"destination": destination}]);
    manifest["skus"] = serde_json::json!([]);
    let manifest = Manifest::parse(manifest.to_string().as_bytes(), &HOST_API_VERSION).unwrap();
    let egress = EgressSettings {
        resolve: [("api.bench.test".to_string(), vec!["127.0.0.1".parse().unwrap()])].into(),
        hosts: vec![HostRule {
            host: kiosk::net::HostPattern::parse("api.bench.test").unwrap(),
            partners: None,
            private_addresses: true,
            http: true,
            ca_file: None,
        }],
        tenant_requests_per_second: 1_000_000,
        ..Default::default()
    };
    let admission =
        AdmissionSettings { tenant_calls_per_second: u32::MAX, tenant_burst: u32::MAX, ..Default::default() };
    let services = Services::separate(Arc::new(MemoryKv::default()), Arc::new(NullSink));
    let rt = Runtime::new(RuntimeSettings { admission, egress, ..Default::default() }, services).unwrap();
    let app = rt.prepare(manifest, Arc::new(rt.load(&wasm).unwrap()));
    let layer = Arc::new(InstallationEgress { enabled: true, ..Default::default() });
    let inst = Installation::new("bench-tenant", "bench-installation").with_egress(layer);
    let input = serde_json::json!({"url": format!("{destination}/spend")}).to_string();
    let first = tokio_rt.block_on(rt.invoke(&app, &inst, "fetch", &input)).unwrap().result.unwrap();
    assert!(first.contains("\"status\":200"), "{first}");
    c.bench_function("outbound: a call making one loopback request (reused connection)", |b| {
        b.iter(|| tokio_rt.block_on(rt.invoke(&app, &inst, "fetch", &input)).unwrap().result.unwrap())
    });

    // The same call with no request: what the call itself costs (Store, instantiation,
    // the guest's JSON), so the rest is the request through the gate.
    let none = serde_json::json!({}).to_string();
    c.bench_function("outbound: the same app's call making no request", |b| {
        b.iter(|| tokio_rt.block_on(rt.invoke(&app, &inst, "config", &none)).unwrap().result.unwrap())
    });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://127.0.0.1:{port}/spend").parse().unwrap();
    c.bench_function("outbound: the same request made by the host directly (reused connection)", |b| {
        b.iter(|| {
            tokio_rt.block_on(async {
                let response = client.get(uri.clone()).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
    });
}

criterion_group!(egress, benches);
criterion_main!(egress);
