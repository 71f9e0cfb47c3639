//! Lifecycle writes are conditional on the row version read: a configure and an upgrade
//! of one installation started together never lose each other's write. Each answers 200
//! or 409 `installation-changed`; an upgrade that answered 200 is never undone (the
//! installation does not end on the old version), and the config is the one of the
//! configure that answered 200, if any. Over the HTTP API, on SQLite and PostgreSQL.

use kiosk::store::Principal;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common;

const ROUNDS: usize = 20;
const OLD: &str = "1.4.34";
const NEW: &str = "1.5.0";

fn kind(b: &Value) -> &str {
    b["type"].as_str().unwrap_or("").trim_start_matches("urn:kiosk:problem:")
}

/// 200, or a 409 `installation-changed` that says so: `true` if it succeeded.
async fn succeeded(what: &str, round: usize, resp: reqwest::Response) -> bool {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    match status {
        StatusCode::OK => true,
        StatusCode::CONFLICT => {
            assert_eq!(kind(&body), "installation-changed", "round {round}: {what}: {body}");
            assert!(
                body.get("field").is_none_or(Value::is_null),
                "round {round}: {what}: no field is at fault: {body}"
            );
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("changed while this request ran") && detail.contains("retry"), "{detail}");
            false
        }
        other => panic!("round {round}: {what} answered {other}: {body}"),
    }
}

async fn configure_races_upgrade(database: Option<String>) {
    let (started, _dir) = common::budget_pacing_server(database, &[OLD, NEW]).await;
    let token = started.state.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let base = format!("http://{}/v1/tenants/demo/installations", started.addr);
    let http = reqwest::Client::new();
    let (mut conflicts, mut upgrades, mut configures) = (0, 0, 0);
    for round in 0..ROUNDS {
        let install = json!({"app": "acme/budget-pacing", "version": OLD, "config": {"apiKey": "k", "threshold": 0.1}});
        let resp = http.post(&base).bearer_auth(&token).json(&install).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let installed: Value = resp.json().await.unwrap();
        assert_eq!(installed["rowVersion"], 0, "{installed}");
        let url = format!("{base}/{}", installed["id"].as_str().unwrap());

        let threshold = 0.2 + round as f64 / 100.0;
        let configure = http
            .patch(&url)
            .bearer_auth(&token)
            .json(&json!({"config": {"apiKey": "k", "threshold": threshold}}))
            .send();
        let upgrade = http.post(format!("{url}/upgrade")).bearer_auth(&token).json(&json!({"version": NEW})).send();
        let (configured, upgraded) = tokio::join!(configure, upgrade);
        let configured = succeeded("configure", round, configured.unwrap()).await;
        let upgraded = succeeded("upgrade", round, upgraded.unwrap()).await;
        assert!(configured || upgraded, "round {round}: the first writer cannot lose");
        conflicts += usize::from(!configured) + usize::from(!upgraded);
        (configures, upgrades) = (configures + usize::from(configured), upgrades + usize::from(upgraded));

        let now: Value = http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        let expected_version = if upgraded { NEW } else { OLD };
        assert_eq!(
            now["version"], expected_version,
            "round {round} (configure {configured}, upgrade {upgraded}): {now}"
        );
        let expected_threshold = if configured { threshold } else { 0.1 };
        assert_eq!(now["config"]["threshold"], expected_threshold, "round {round}: {now}");
        assert_eq!(now["secretsSet"], json!(["/apiKey"]), "round {round}: {now}");
        let writes = usize::from(configured) + usize::from(upgraded);
        assert_eq!(now["rowVersion"], writes, "round {round}: one bump per write: {now}");
    }
    eprintln!(
        "{ROUNDS} rounds: {configures} configures and {upgrades} upgrades answered 200, {conflicts} answered 409"
    );
    assert!(conflicts > 0, "the requests never overlapped in {ROUNDS} rounds: the race was not exercised");
}

#[tokio::test(flavor = "multi_thread")]
async fn configure_races_upgrade_on_sqlite() {
    configure_races_upgrade(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configure_races_upgrade_on_postgresql() {
    configure_races_upgrade(Some(common::fresh_postgres_database().await)).await;
}
