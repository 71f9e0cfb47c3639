//! The operator's egress policy over the API (`/v1/egress`), on SQLite and PostgreSQL:
//! switched off for one partner's apps, hosts denied for one partner and for every
//! partner, each applying from the next call and undone by removing it; bad hosts
//! refused naming the entry; only the operator may set it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use kiosk::store::Principal;

use super::support::{Setup, error_of, setup};

async fn policy(postgres: bool) {
    let Setup { api, server, port, .. } = setup("outbound-guest", postgres).await;
    let operator = server.store().create_token(&Principal::Operator, "test", "operator").await.unwrap().1;
    let token = server.token("demo").await;
    let id = server.install(&token, "demo", json!({"apiKey": "policy-test-key"})).await;
    let fetch = |host: &str| json!({"url": format!("https://{host}:{port}/echo")});
    let call = |host: &'static str| {
        let (server, token, id, input) = (&server, &token, &id, fetch(host));
        async move { server.invoke(token, "demo", id, "fetch", input).await.1 }
    };
    let put = async |path: &str, body: Value| server.call(Some(&operator), Method::PUT, path, Some(body)).await;
    let delete = async |path: &str| server.call(Some(&operator), Method::DELETE, path, None).await.0;
    assert_eq!(call("api.acme.test").await["output"]["status"], 200);

    // Off for the partner's apps: the next call's request is refused, naming why.
    let (status, body) = put("/v1/egress/partners/test", json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"partner": "test", "enabled": false, "deny": [], "updatedMs": body["updatedMs"]}));
    let body = call("api.acme.test").await;
    assert!(error_of(&body).contains("HttpRequestDenied"), "{body}");
    let logs = server.logs(&token, &id).await;
    assert!(logs.iter().any(|l| l.contains("switched outbound HTTP off for test's apps")), "{logs:?}");

    // On again, one host denied for the partner; another for every partner.
    let (status, _) = put("/v1/egress/partners/test", json!({"enabled": true, "deny": ["api.acme.test"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(error_of(&call("api.acme.test").await).contains("HttpRequestDenied"));
    assert_eq!(call("other.acme.test").await["output"]["status"], 200, "other hosts are untouched");
    let (status, body) = put("/v1/egress", json!({"enabled": true, "deny": ["*.acme.test"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = call("other.acme.test").await;
    assert!(error_of(&body).contains("HttpRequestDenied"), "{body}");
    let logs = server.logs(&token, &id).await;
    assert!(logs.iter().any(|l| l.contains("the operator denies other.acme.test")), "{logs:?}");

    // The operator reads both layers, the file's and the API's.
    let (status, body) = server.call(Some(&operator), Method::GET, "/v1/egress", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["everyPartner"]["deny"], json!(["*.acme.test"]), "{body}");
    assert_eq!(body["partners"][0]["partner"], "test", "{body}");
    assert_eq!(body["config"]["enabled"], true, "{body}");
    assert!(body["config"]["hosts"].as_array().unwrap().iter().any(|h| h["host"] == "api.acme.test"), "{body}");

    // Removing both restores the file's policy alone.
    assert_eq!(delete("/v1/egress").await, StatusCode::NO_CONTENT);
    assert_eq!(delete("/v1/egress/partners/test").await, StatusCode::NO_CONTENT);
    assert_eq!(delete("/v1/egress/partners/test").await, StatusCode::NOT_FOUND, "nothing left to remove");
    assert_eq!(call("api.acme.test").await["output"]["status"], 200);

    // Bad input is refused naming the entry; nothing is stored.
    for (bad, why) in [("127.0.0.1", "address"), ("api.*.example", "not a host name"), ("", "not a host name")] {
        let (status, body) = put("/v1/egress", json!({"enabled": true, "deny": ["ok.example", bad]})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
        assert_eq!(body["type"], "urn:kiosk:problem:invalid-host", "{body}");
        assert_eq!(body["field"], "deny/1", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
    }
    // U+0000 is refused at the edge, on both backends alike.
    let (status, body) = put("/v1/egress", json!({"enabled": true, "deny": ["ok.example", "a\u{0}b.example"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "urn:kiosk:problem:invalid-text", "{body}");
    assert!(body["field"].as_str().unwrap().contains("deny/1"), "{body}");
    let too_many: Vec<String> = (0..257).map(|i| format!("h{i}.example")).collect();
    let (status, body) = put("/v1/egress", json!({"enabled": true, "deny": too_many})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "deny", "{body}");
    let (status, _) = put("/v1/egress/partners/nobody", json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = server.call(Some(&operator), Method::GET, "/v1/egress", None).await;
    assert_eq!((body["everyPartner"].clone(), body["partners"].clone()), (Value::Null, json!([])), "{body}");

    // Only the operator.
    let (status, _) = server.call(Some(&token), Method::PUT, "/v1/egress", Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(call("api.acme.test").await["output"]["status"], 200);
    drop(api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_egress_policy_over_the_api_on_sqlite() {
    policy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_egress_policy_over_the_api_on_postgres() {
    policy(true).await;
}
