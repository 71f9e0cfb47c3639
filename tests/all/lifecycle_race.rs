//! Lifecycle writes are conditional on the row version read: a configure and an upgrade
//! of one installation started together never lose each other's write. Each answers 200
//! or 409 `installation-changed`; an upgrade that answered 200 is never undone (the
//! installation does not end on the old version), and the config is the one of the
//! configure that answered 200, if any. Over the HTTP API, on SQLite and PostgreSQL.
//! The hooks' key-value changes go with the write that won: budget-pacing's `configure`
//! and `upgrade` both store the threshold they were given, and after every round the
//! stored one is the installation's (a request that answered 409 kept nothing).

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Installation, kind};

const ROUNDS: usize = 20;
const OLD: &str = "1.4.34";
const NEW: &str = "1.5.0";

/// 200, or a 409 `installation-changed` that says so: `true` if it succeeded.
fn succeeded(what: &str, round: usize, (status, body): (StatusCode, Value)) -> bool {
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
    let server = common::budget_pacing_server(database, &[OLD, NEW]).await;
    let token = server.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let (mut conflicts, mut upgrades, mut configures) = (0, 0, 0);
    for round in 0..ROUNDS {
        let install = json!({"app": "acme/budget-pacing", "version": OLD, "config": {"apiKey": "k", "threshold": 0.1}});
        let installed = server.install(&token, "demo", install).await;
        assert_eq!(installed.row_version, 0, "{installed:?}");
        let path = format!("/v1/tenants/demo/installations/{}", installed.id);

        // Binary fractions: the app reads and writes them back digit for digit.
        let threshold = 0.25 + round as f64 / 128.0;
        let config = json!({"config": {"apiKey": "k", "threshold": threshold}});
        let configure = server.call(Some(&token), Method::PATCH, &path, Some(config));
        let upgrade_path = format!("{path}/upgrade");
        let upgrade = server.call(Some(&token), Method::POST, &upgrade_path, Some(json!({"version": NEW})));
        let (configured, upgraded) = tokio::join!(configure, upgrade);
        let configured = succeeded("configure", round, configured);
        let upgraded = succeeded("upgrade", round, upgraded);
        assert!(configured || upgraded, "round {round}: the first writer cannot lose");
        conflicts += usize::from(!configured) + usize::from(!upgraded);
        (configures, upgrades) = (configures + usize::from(configured), upgrades + usize::from(upgraded));

        let now: Installation = server.call_as(Some(&token), Method::GET, &path, None, StatusCode::OK).await;
        let expected_version = if upgraded { NEW } else { OLD };
        assert_eq!(
            now.version, expected_version,
            "round {round} (configure {configured}, upgrade {upgraded}): {now:?}"
        );
        let expected_threshold = if configured { threshold } else { 0.1 };
        assert_eq!(now.config["threshold"], expected_threshold, "round {round}: {now:?}");
        assert_eq!(now.secrets_set, ["/apiKey"], "round {round}: {now:?}");
        let writes = usize::from(configured) + usize::from(upgraded);
        assert_eq!(now.row_version, writes as i64, "round {round}: one bump per write: {now:?}");
        let scope = kiosk::kv::KvScope { tenant: "demo".into(), installation: installed.id.clone() };
        let stored = server.store().kv_load(&scope).await.unwrap();
        let settings: Value = serde_json::from_slice(&stored["settings"]).unwrap();
        assert_eq!(
            settings["threshold"], now.config["threshold"],
            "round {round} (configure {configured}, upgrade {upgraded}): the hooks' stored settings are those of the \
             write that won, never of a request that answered 409"
        );
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
