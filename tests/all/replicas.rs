//! Two `kiosk serve` processes on one PostgreSQL database behave as one service: what
//! one registers, yanks, limits or logs, the other honours on its next request.
//! Real parts: two server processes, PostgreSQL, Debian's docker-registry, gpg keys.

use std::process::Child;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::json;

use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};

use crate::common;
use crate::common::api::{Api, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};

const OPERATOR: &str = "op-replicas-test-token-0123456789";
const SECRETS_KEY: &str = "7f3a91bc7f3a91bc7f3a91bc7f3a91bc7f3a91bc7f3a91bc7f3a91bc7f3a91bc";

/// A `kiosk serve` process, and a client of it (the replica derefs to it).
struct Replica {
    child: Child,
    api: Api,
}

impl std::ops::Deref for Replica {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// A `kiosk serve` process on `database` with its own data directory and port; every
    /// replica shares the operator token and the secrets key (as an operator deploys them).
    fn start(dir: &std::path::Path, name: &str, database: &str) -> Self {
        let port = common::registry::free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data-dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\n\
                 operator-token = \"{OPERATOR}\"\nsecrets-key = \"{SECRETS_KEY}\"\n",
                dir.join(name).display()
            ),
        )
        .unwrap();
        let (child, _) =
            common::spawn_serve(&["--config", config.to_str().unwrap()], &[], &dir.join(format!("{name}.log")));
        Self { child, api: Api::new(format!("http://127.0.0.1:{port}")) }
    }
}

async fn publish(registry: &Registry, secret_key: &[u8], version: &str) {
    let mut manifest = common::manifest_json("budget-pacing");
    manifest["version"] = version.into();
    let wasm = common::guest_bytes("budget-pacing");
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let sigs = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, &wasm).unwrap().0];
    push(registry, "acme/budget-pacing", version, &assemble(&m, &wasm, &sigs), |_| {}).await.unwrap();
}

#[tokio::test]
async fn two_replicas_on_one_postgresql_behave_as_one_service() {
    let database = common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let registry_server = TestRegistry::start(Mode::Plain);
    let host = registry_server.host.clone();
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);

    let a = Replica::start(dir.path(), "a", &database);
    let b = Replica::start(dir.path(), "b", &database);

    // The operator sets up on A: partner, certificate, registry, tenant, tokens.
    a.create_partner(OPERATOR, "acme").await;
    let cert = String::from_utf8(gpg.export(&key)).unwrap();
    let (st, body) = a
        .call(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(json!({"certificate": cert})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let reg = json!({"insecure": true, "partners": {"acme": ["acme/"]}});
    let (st, body) = a.call(Some(OPERATOR), Method::PUT, &format!("/v1/registries/{host}"), Some(reg)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    a.create_tenant(OPERATOR, "t1").await;
    let partner = a.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let tenant = a.create_token(OPERATOR, "tenant", Some("t1")).await.token;

    // Register on A → install and invoke on B.
    let registry = Registry::new(
        &RegistrySettings { host: host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    publish(&registry, &gpg.export_secret(&key), "1.0.0").await;
    publish(&registry, &gpg.export_secret(&key), "1.1.0").await;
    for version in ["1.0.0", "1.1.0"] {
        let body = json!({"reference": format!("{host}/acme/budget-pacing:{version}")});
        let (st, body) =
            a.call(Some(&partner), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "registered on A: {body}");
    }
    let install = json!({"app": "acme/budget-pacing", "version": "1.0.0", "config": {"apiKey": "k-1"}});
    let id = b.install(&tenant, "t1", install).await.id;
    let input = json!({"campaignId": "c-1", "budget": 30, "flightDays": 30, "dailySpend": [1]});
    let invoke = format!("/v1/tenants/t1/installations/{id}/invoke/evaluate");
    let (st, body) = b.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
    assert_eq!(st, StatusCode::OK, "invoked on B: {body}");

    // Logs written on A are read on B.
    let call_id = a.invoked(&tenant, "t1", &id, "evaluate", input.clone()).await.call_id;
    let (st, logs) = b.call(Some(&tenant), Method::GET, &format!("/v1/tenants/t1/installations/{id}/logs"), None).await;
    assert_eq!(st, StatusCode::OK, "{logs}");
    let line = logs["items"].as_array().unwrap().iter().find(|l| l["callId"] == call_id.as_str());
    assert!(line.is_some_and(|l| l["message"].as_str().unwrap().contains("campaign c-1")), "A's call on B: {logs}");

    // A tenant override set on A applies to A's next call at once and to B's within the
    // stated bound (`CALL_READS_FRESH`, the call cache's), no restart: an input cap of
    // 16 bytes refuses the evaluate input on both.
    let (st, body) =
        a.call(Some(OPERATOR), Method::PUT, "/v1/limits/tenants/t1", Some(json!({"maxInputBytes": 16}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let changed = Instant::now();
    let (st, body) = a.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "A's next call: {body}");
    assert!(body["detail"].as_str().unwrap().contains("16"), "the limit is named: {body}");
    let body = common::holds_within_bound(changed, "the override set on A, on B", async || {
        let (st, body) = b.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
        (st == StatusCode::PAYLOAD_TOO_LARGE, body)
    })
    .await;
    assert!(body["detail"].as_str().unwrap().contains("16"), "the limit is named: {body}");
    let (_, view) = b.call(Some(&tenant), Method::GET, &format!("/v1/tenants/t1/installations/{id}"), None).await;
    assert_eq!(view["limits"]["maxInputBytes"], json!({"value": 16, "source": "tenant"}), "{view}");
    let (st, _) = b.call(Some(OPERATOR), Method::DELETE, "/v1/limits/tenants/t1", None).await;
    assert!(st.is_success());
    let changed = Instant::now();
    common::holds_within_bound(changed, "the override removed on B, on A", async || {
        let (st, body) = a.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
        (st == StatusCode::OK, body)
    })
    .await;

    // A suspension on A, then its lifting on B, each holding on the other replica within
    // the bound:
    let (st, _) = a.call(Some(OPERATOR), Method::POST, "/v1/tenants/t1/suspend", None).await;
    assert!(st.is_success());
    let changed = Instant::now();
    let body = common::holds_within_bound(changed, "the suspension on A, on B", async || {
        let (st, body) = b.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
        (st == StatusCode::FORBIDDEN, body)
    })
    .await;
    assert_eq!(kind(&body), "tenant-suspended", "{body}");
    let (st, _) = b.call(Some(OPERATOR), Method::POST, "/v1/tenants/t1/resume", None).await;
    assert!(st.is_success());
    let changed = Instant::now();
    common::holds_within_bound(changed, "the resumption on B, on A", async || {
        let (st, body) = a.call(Some(&tenant), Method::POST, &invoke, Some(input.clone())).await;
        (st == StatusCode::OK, body)
    })
    .await;
    // A token revoked on A: A refuses its next request at once, B within the bound.
    let spare = a.create_token(OPERATOR, "tenant", Some("t1")).await;
    for replica in [&a, &b] {
        let (st, body) = replica.call(Some(&spare.token), Method::POST, &invoke, Some(input.clone())).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, _) = a.call(Some(OPERATOR), Method::DELETE, &format!("/v1/tokens/{}", spare.id), None).await;
    assert!(st.is_success());
    let changed = Instant::now();
    let (st, body) = a.call(Some(&spare.token), Method::POST, &invoke, Some(input.clone())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "revoked on A, refused by A's next request: {body}");
    common::holds_within_bound(changed, "the revocation on A, on B", async || {
        let (st, body) = b.call(Some(&spare.token), Method::POST, &invoke, Some(input.clone())).await;
        (st == StatusCode::UNAUTHORIZED, body)
    })
    .await;

    // Yank on B → install refused on A.
    let (st, body) =
        b.call(Some(&partner), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/1.1.0/yank", None).await;
    assert!(st.is_success(), "{body}");
    let install = json!({"app": "acme/budget-pacing", "version": "1.1.0", "config": {"apiKey": "k-2"}});
    let (st, body) = a.call(Some(&tenant), Method::POST, "/v1/tenants/t1/installations", Some(install)).await;
    assert_eq!(kind(&body), "version-yanked", "{st} {body}");
    // … and the upgrade path of the first installation on A skips it too.
    let (st, body) = a
        .call(Some(&tenant), Method::POST, &format!("/v1/tenants/t1/installations/{id}/upgrade"), Some(json!({})))
        .await;
    assert!(!st.is_success(), "no version to upgrade to once 1.1.0 is yanked: {body}");
}
