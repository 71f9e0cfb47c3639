//! An uninstall claims its installation before the app's hook runs (issue 31): an
//! uninstall and a configure of one installation started together never leave an
//! uninstall that answered 409 after running the app's hook. Each request answers 200 or
//! 409 `installation-changed` (a configure may also find the installation already gone,
//! 404, when the uninstall finished before it read it); an uninstall that answered 200
//! removed the installation, and one that answered 409 left it in place with no line of
//! the `uninstall` operation in its log: the hostile guest's hook traps (mode
//! `trap-uninstall`), so a hook that ran leaves a `call failed: …` line there. The
//! uninstall starts after a delay that sweeps a lone configure's duration, so that the
//! configure's write lands before, during and after the uninstall's hook across the
//! rounds. Over the HTTP API, on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Installation, kind};

const ROUNDS: usize = 20;

/// 200, or a 409 `installation-changed` that says so: `true` if it succeeded.
fn succeeded(what: &str, round: usize, (status, body): &(StatusCode, Value)) -> bool {
    match *status {
        StatusCode::OK => true,
        StatusCode::CONFLICT => {
            assert_eq!(kind(body), "installation-changed", "round {round}: {what}: {body}");
            let detail = body["detail"].as_str().unwrap();
            // Lost the race, or found the installation held by the uninstall's claim.
            let said = detail.contains("changed while this request ran") || detail.contains("is being uninstalled");
            assert!(said, "round {round}: {what}: {detail}");
            false
        }
        other => panic!("round {round}: {what} answered {other}: {body}"),
    }
}

async fn uninstall_races_configure(database: Option<String>) {
    let server = common::hostile_server(database, "", |_| {}).await;
    let token = server.store().create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let install = json!({"app": "test/hostile", "version": "0.0.1", "config": {"mode": "trap-uninstall"}});

    // How long a lone configure takes (warm): the uninstall's delays sweep it.
    let warm = server.install(&token, "demo", install.clone()).await.id;
    let warm_path = format!("/v1/tenants/demo/installations/{warm}");
    let mut lone = Duration::ZERO;
    for n in 0..3 {
        let config = json!({"config": {"mode": "trap-uninstall", "warm": n}});
        let started = Instant::now();
        let (status, body) = server.call(Some(&token), Method::PATCH, &warm_path, Some(config)).await;
        assert_eq!(status, StatusCode::OK, "a lone configure: {body}");
        lone = started.elapsed();
    }

    let (mut uninstalls, mut configures, mut gone) = (0, 0, 0);
    let (mut uninstalls_lost, mut configures_lost) = (0, 0);
    for round in 0..ROUNDS {
        let installed = server.install(&token, "demo", install.clone()).await;
        let path = format!("/v1/tenants/demo/installations/{}", installed.id);
        let config = json!({"config": {"mode": "trap-uninstall", "round": round}});
        let configure = server.call(Some(&token), Method::PATCH, &path, Some(config));
        let delay = lone.mul_f64(round as f64 / ROUNDS as f64);
        let uninstall = async {
            tokio::time::sleep(delay).await;
            server.call(Some(&token), Method::DELETE, &path, None).await
        };
        let (configured, uninstalled) = tokio::join!(configure, uninstall);

        let removed = succeeded("uninstall", round, &uninstalled);
        // A configure that read the installation after the uninstall removed it.
        let configure_gone = removed && configured.0 == StatusCode::NOT_FOUND;
        let configured = !configure_gone && succeeded("configure", round, &configured);
        assert!(configured || removed, "round {round}: the first writer cannot lose: uninstall {uninstalled:?}");
        configures_lost += usize::from(!configured && !configure_gone);
        uninstalls_lost += usize::from(!removed);
        uninstalls += usize::from(removed);
        configures += usize::from(configured);
        gone += usize::from(configure_gone);

        let (status, now) = server.call(Some(&token), Method::GET, &path, None).await;
        if removed {
            let (_, body) = &uninstalled;
            assert_eq!(body["uninstalled"], true, "round {round}: {body}");
            let detail = body["hook"]["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("the hook failed"), "round {round}: the trapping hook ran once: {body}");
            assert_eq!(status, StatusCode::NOT_FOUND, "round {round}: an uninstall that answered 200: {now}");
            continue;
        }
        assert_eq!(status, StatusCode::OK, "round {round}: an uninstall that answered 409 removes nothing: {now}");
        let now: Installation = serde_json::from_value(now).unwrap();
        assert_eq!(now.config["round"], round, "round {round}: the configure that won: {now:?}");
        let (status, logs) = server.call(Some(&token), Method::GET, &format!("{path}/logs?limit=1000"), None).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {logs}");
        let hook_lines: Vec<&Value> =
            logs["items"].as_array().unwrap().iter().filter(|l| l["operation"] == "uninstall").collect();
        assert!(
            hook_lines.is_empty(),
            "round {round}: the uninstall answered 409 `installation-changed` and left the installation, but the \
             app's uninstall hook ran: {hook_lines:?}"
        );
    }
    eprintln!(
        "{ROUNDS} rounds (lone configure {lone:?}): {uninstalls} uninstalls and {configures} configures answered 200, \
         {uninstalls_lost} uninstalls and {configures_lost} configures answered 409, {gone} configures found the \
         installation gone"
    );
    let conflicts = uninstalls_lost + configures_lost;
    assert!(conflicts > 0, "the requests never overlapped in {ROUNDS} rounds: the race was not exercised");
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_races_configure_on_sqlite() {
    uninstall_races_configure(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_races_configure_on_postgresql() {
    uninstall_races_configure(Some(common::fresh_postgres_database().await)).await;
}
