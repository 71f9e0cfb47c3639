//! The database out of reach (its pool closed under a running server, as when every
//! connection is gone): requests get 503 `storage-unavailable` with `Retry-After`, in
//! Kiosk's words, never a 500 and never the database's text — on SQLite and PostgreSQL.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::api::{TestServer, kind};
use crate::common::fresh_postgres_database;

const OPERATOR: &str = "operator-token-storage-down";

#[tokio::test]
async fn a_database_out_of_reach_is_a_503_to_retry_on_sqlite() {
    out_of_reach(None).await;
}

#[tokio::test]
async fn a_database_out_of_reach_is_a_503_to_retry_on_postgresql() {
    out_of_reach(Some(fresh_postgres_database().await)).await;
}

async fn out_of_reach(database: Option<String>) {
    let server = TestServer::fresh(database, &format!("[server]\noperator-token = \"{OPERATOR}\"\n")).await;
    server.create_tenant(OPERATOR, "shop").await;
    let tenant = server.create_token(OPERATOR, "tenant", Some("shop")).await.token;
    let (status, _) = server.call(Some(&tenant), Method::GET, "/v1/catalog/apps", None).await;
    assert_eq!(status, StatusCode::OK);

    server.store().close().await;
    for (token, method, path, body) in [
        (&tenant, Method::GET, "/v1/catalog/apps", None),
        (&tenant, Method::POST, "/v1/tenants/shop/installations", Some(json!({"app": "acme/none"}))),
        (&OPERATOR.to_string(), Method::POST, "/v1/tenants", Some(json!({"id": "later"}))),
    ] {
        let reply = server.send(Some(token), method.clone(), path, body).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {}", reply.text);
        let problem = reply.json();
        assert_eq!(kind(&problem), "storage-unavailable", "{problem}");
        assert_eq!(reply.header("retry-after"), Some("1"), "{method} {path}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.contains("pool") && !detail.contains("sqlx"), "the database's words leaked: {detail}");
    }
}
