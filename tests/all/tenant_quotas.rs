//! Tenant quotas over the HTTP API, on SQLite and PostgreSQL: a tenant at its
//! installation quota is refused with 422 `tenant-quota` naming it and nothing is
//! created; the key-value bytes of all its installations together never pass its
//! key-value quota, however many installations write; the operator may only lower a
//! tenant's quotas (the collection share too, a percent), and the tenant reads its
//! quotas and its use of them; the estate shows each tenant's key-value bytes.

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{TestServer, kind};

const KV_QUOTA: u64 = 600;

fn install_body() -> Value {
    json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}})
}

async fn quotas_hold(database: Option<String>) {
    let toml = format!(
        "[sandbox]\ntenant-installations = 2\ntenant-kv-bytes = {KV_QUOTA}\ntenant-collection-share = 50\n\
         [usage]\nwindow-seconds = 315360000\n"
    );
    let s = TestServer::fresh_with(database, &toml, vec![common::demo_app("budget-pacing")]).await;
    let store = s.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let operator = store.create_token(&Principal::Operator, "o", "operator").await.unwrap().1;
    let quotas = || s.call_as::<Value>(Some(&tenant), Method::GET, "/v1/tenants/demo/quotas", None, StatusCode::OK);

    let q = quotas().await;
    assert_eq!(q["installations"], json!({"limit": 2, "default": 2, "own": null, "used": 0}), "{q}");
    assert_eq!(q["kvBytes"]["limit"], KV_QUOTA, "{q}");
    let places = kiosk::collector::PARALLELISM / 2;
    assert_eq!(q["collectionShare"], json!({"limit": 50, "default": 50, "own": null, "places": places}), "{q}");

    // The installation quota: the third install is refused, naming it, and creates nothing.
    let first = s.install(&tenant, "demo", install_body()).await.id;
    let second = s.install(&tenant, "demo", install_body()).await.id;
    let (status, body) =
        s.call(Some(&tenant), Method::POST, "/v1/tenants/demo/installations", Some(install_body())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(kind(&body), "tenant-quota", "{body}");
    assert_eq!(body["field"], "app", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("2 installations") && detail.contains("installations"), "{detail}");
    let listed: Value =
        s.call_as(Some(&tenant), Method::GET, "/v1/tenants/demo/installations", None, StatusCode::OK).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2), "nothing half-created: {listed}");

    // The key-value quota over both installations: each evaluate stores one more
    // campaign; writes go to both in turn until one is refused, then every write that
    // grows the tenant's bytes is refused on either installation.
    let ids = [first.as_str(), second.as_str()];
    let mut refused_at = None;
    for n in 0..200 {
        let input = json!({"campaignId": format!("c{n}"), "budget": 30, "flightDays": 30, "dailySpend": [1]});
        let (status, body) = s.invoke(&tenant, "demo", ids[n % 2], "evaluate", input).await;
        match status {
            StatusCode::OK => assert!(refused_at.is_none(), "call {n} grew the tenant's bytes after a refusal: {body}"),
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(kind(&body), "tenant-quota", "call {n}: {body}");
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.contains(&format!("{KV_QUOTA} bytes")), "call {n}: {detail}");
                refused_at.get_or_insert(n);
            }
            other => panic!("call {n}: {other}: {body}"),
        }
        let used = quotas().await["kvBytes"]["used"].as_u64().unwrap();
        assert!(used <= KV_QUOTA, "call {n}: the tenant holds {used} bytes over its quota of {KV_QUOTA}");
        if refused_at.is_some_and(|at| n > at + 3) {
            break;
        }
    }
    let at = refused_at.expect("200 campaigns never reached the tenant's key-value quota");
    assert!(at > 2, "the quota was reached by writes of both installations, not at once: call {at}");
    // The estate shows what the tenant's installations hold, in the list and alone.
    let used = quotas().await["kvBytes"]["used"].clone();
    assert!(used.as_u64().is_some_and(|u| u > 0), "{used}");
    let listed: Value = s.call_as(Some(&operator), Method::GET, "/v1/tenants", None, StatusCode::OK).await;
    let demo = listed["items"].as_array().unwrap().iter().find(|t| t["id"] == "demo").unwrap();
    assert_eq!((&demo["kvBytes"], &demo["installations"]), (&used, &json!(2)), "{listed}");
    let alone: Value = s.call_as(Some(&operator), Method::GET, "/v1/tenants/demo", None, StatusCode::OK).await;
    assert_eq!(alone["kvBytes"], used, "{alone}");
    // A refused call kept nothing: its key is in neither installation.
    for id in ids {
        let scope = kiosk::kv::KvScope { tenant: "demo".into(), installation: id.into() };
        let keys = store.kv_load(&scope).await.unwrap();
        assert!(!keys.contains_key(&format!("campaign/c{at}")), "the refused call's key was kept: {keys:?}");
    }

    // The operator may only lower a tenant's quotas, each naming its field.
    let path = "/v1/limits/tenants/demo/quotas";
    for (body, field, expected) in [
        (json!({"kvBytes": KV_QUOTA + 1}), "kvBytes", "limit-above-ceiling"),
        (json!({"installations": 0}), "installations", "invalid-limit"),
        (json!({"installations": -1}), "installations", "invalid-limit"),
        (json!({"installations": "1"}), "installations", "invalid-limit"),
        (json!({"maxApps": 1}), "maxApps", "invalid-limit"),
        (json!({"collectionShare": 51}), "collectionShare", "limit-above-ceiling"),
        (json!({"collectionShare": 0}), "collectionShare", "invalid-limit"),
        (json!({"collectionShare": 101}), "collectionShare", "invalid-limit"),
        (json!({"installations": 1, "collectionShare": 0.5}), "collectionShare", "invalid-limit"),
    ] {
        let (status, problem) = s.call(Some(&operator), Method::PUT, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert_eq!((kind(&problem), problem["field"].as_str()), (expected, Some(field)), "{body}: {problem}");
    }
    let (status, _) = s.call(Some(&tenant), Method::PUT, path, Some(json!({"installations": 5}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a tenant cannot set its own quotas");
    let body = json!({"installations": 1, "collectionShare": 25});
    let set: Value = s.call_as(Some(&operator), Method::PUT, path, Some(body), StatusCode::OK).await;
    assert_eq!(set["installations"], json!({"limit": 1, "default": 2, "own": 1, "used": 2}), "{set}");
    let share = json!({"limit": 25, "default": 50, "own": 25, "places": kiosk::collector::PARALLELISM / 4});
    assert_eq!(set["collectionShare"], share, "{set}");
    assert_eq!(quotas().await["collectionShare"], share, "the tenant reads its share");

    // Uninstalling frees a place only under the quota that applies now.
    let uninstall = format!("/v1/tenants/demo/installations/{first}");
    let (status, body) = s.call(Some(&tenant), Method::DELETE, &uninstall, None).await;
    assert!(status.is_success(), "{status}: {body}");
    let (status, body) =
        s.call(Some(&tenant), Method::POST, "/v1/tenants/demo/installations", Some(install_body())).await;
    assert_eq!((status, kind(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "tenant-quota"), "own quota 1: {body}");
    let (status, _) = s.call(Some(&operator), Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let q = quotas().await;
    assert_eq!((&q["installations"]["own"], &q["collectionShare"]["own"]), (&Value::Null, &Value::Null), "{q}");
    s.install(&tenant, "demo", install_body()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_quotas_hold_on_sqlite() {
    quotas_hold(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_quotas_hold_on_postgresql() {
    quotas_hold(Some(common::fresh_postgres_database().await)).await;
}
