//! Every mutation writes its audit row in its own transaction: with an audit table that
//! refuses inserts (a trigger), each mutation — of the store, of the lifecycle core and
//! over the HTTP API — fails and leaves every table as it was; without the trigger, the
//! same mutations succeed. SQLite and PostgreSQL.

use kiosk::store::{Backend, EntitlementRow, Principal, Store};
use kiosk_core::lifecycle::{InstallRequest, Kiosk, UpgradeRequest};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Column as _, Row as _};

use crate::common;
use crate::common::api::Api;

const TENANT: &str = "demo";
const APP: &str = "acme/budget-pacing";

/// One column of any row, as text (the tables hold text, integers, bytes and NULL).
fn column(r: &AnyRow, i: usize) -> String {
    if let Ok(v) = r.try_get::<Option<String>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = r.try_get::<Option<Vec<u8>>, _>(i) {
        return format!("{v:?}");
    }
    panic!("column {i}: unexpected type");
}

/// Every row of the tables a mutation here could touch (all but `skip`), sorted.
async fn snapshot(store: &Store, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "audit",
        "tokens",
        "partners",
        "partner_certs",
        "tenants",
        "versions",
        "entitlements",
        "installations",
        "kv",
        "kv_usage",
        "registries",
        "distrusted_certs",
    ] {
        if skip.contains(&table) {
            continue;
        }
        let sql = if table == "versions" {
            // Not the manifests (long): everything a mutation could change.
            "SELECT app, version, yanked, quarantined, quarantine_reason FROM versions".to_string()
        } else {
            format!("SELECT * FROM {table}")
        };
        for r in sqlx::query(&sql).fetch_all(store.pool()).await.unwrap() {
            // `installations.log_seq` and `log_bytes` are the cursor and size of the
            // installation's log: a hook's lines are kept whatever becomes of the write
            // (a failed call's lines are the ones worth reading), so they move without an audit row by design.
            let cells: Vec<String> = (0..r.columns().len())
                .filter(|&i| !["log_seq", "log_bytes"].contains(&r.columns()[i].name()))
                .map(|i| column(&r, i))
                .collect();
            out.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    out.sort();
    out
}

async fn refuse_audit(store: &Store) {
    let statements: &[&str] = match store.backend() {
        Backend::Sqlite => {
            &["CREATE TRIGGER audit_refused BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END"]
        }
        Backend::Postgres => &[
            "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'audit refused'; END $$",
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_refused()",
        ],
    };
    for sql in statements {
        sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
    }
}

async fn accept_audit(store: &Store) {
    let sql = match store.backend() {
        Backend::Sqlite => "DROP TRIGGER audit_refused",
        Backend::Postgres => "DROP TRIGGER audit_refused ON audit",
    };
    sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
}

/// The mutations, each a step that writes and audits.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    CreatePartner,
    AddCertificate,
    ReplaceCertificate,
    CreateTenant,
    CreateToken,
    CreateTokenBy,
    RevokeToken,
    SetEntitlement,
    Yank,
    Install,
    Configure,
    Upgrade,
    Uninstall,
    HttpCreatePartner,
    HttpCreateTenant,
}

struct World {
    kiosk: std::sync::Arc<Kiosk>,
    api: Api,
    operator: String,
    /// An installation of 1.4.34, for configure, upgrade and uninstall.
    installation: String,
    /// A token to revoke.
    revocable: String,
    /// The fingerprint of acme's registered certificate.
    acme_cert: String,
}

impl World {
    /// Runs one mutation: `Err` with what it said when it failed.
    async fn run(&self, m: Mutation) -> Result<(), String> {
        let (store, k) = (&self.kiosk.store(), &self.kiosk);
        let store_err = |e: kiosk::store::StoreError| e.to_string();
        let core_err = |f: kiosk_core::error::Failure| format!("{:?}: {}", f.class, f.detail);
        match m {
            Mutation::CreatePartner => store.create_partner("globex", "Globex", "operator").await.map(drop),
            Mutation::AddCertificate => store.add_certificate("acme", "FEEDFACE", b"cert", "operator").await.map(drop),
            Mutation::ReplaceCertificate => {
                store.add_certificate("acme", &self.acme_cert, b"new bytes", "operator").await.map(drop)
            }
            Mutation::CreateTenant => store.create_tenant("t2", "T2", "operator").await.map(drop),
            Mutation::CreateToken => {
                store.create_token(&Principal::Tenant(TENANT.into()), "t", "operator").await.map(drop)
            }
            Mutation::CreateTokenBy => store
                .create_token_by(&Principal::Partner("acme".into()), "p", Some(i64::MAX), "operator")
                .await
                .map(drop),
            Mutation::RevokeToken => store.revoke_token(&self.revocable, "operator").await.map(drop),
            Mutation::SetEntitlement => {
                let e = EntitlementRow { tenant: TENANT.into(), app: APP.into(), expires_ms: None, revoked: false };
                store.set_entitlement(&e, "operator").await
            }
            Mutation::Yank => store.set_yanked(APP, "1.4.34", true, "operator").await.map(drop),
            Mutation::Install => {
                let request = InstallRequest {
                    app: APP.into(),
                    version: Some("1.5.0".into()),
                    config: Some(json!({"apiKey": "k"})),
                    ..Default::default()
                };
                return k.install(TENANT, request, "tenant:demo").await.map(drop).map_err(core_err);
            }
            Mutation::Configure => {
                let config = json!({"apiKey": "k", "threshold": 0.5});
                return k
                    .configure(TENANT, &self.installation, config, "tenant:demo")
                    .await
                    .map(drop)
                    .map_err(core_err);
            }
            Mutation::Upgrade => {
                let request = UpgradeRequest { version: Some("1.5.0".into()), ..Default::default() };
                return k.upgrade(TENANT, &self.installation, request, "tenant:demo").await.map(drop).map_err(core_err);
            }
            Mutation::Uninstall => {
                return k.uninstall(TENANT, &self.installation, "tenant:demo").await.map(drop).map_err(core_err);
            }
            Mutation::HttpCreatePartner | Mutation::HttpCreateTenant => {
                let (path, body) = match m {
                    Mutation::HttpCreatePartner => ("partners", json!({"name": "initech"})),
                    _ => ("tenants", json!({"id": "t3"})),
                };
                let reply = self.api.send(Some(&self.operator), Method::POST, &format!("/v1/{path}"), Some(body)).await;
                return match reply.status {
                    StatusCode::CREATED => Ok(()),
                    status => Err(format!("{status}: {}", reply.text)),
                };
            }
        }
        .map_err(store_err)
    }
}

async fn every_mutation_commits_with_its_audit_row(database: Option<String>) {
    let server = common::budget_pacing_server(database, &["1.4.34", "1.5.0"]).await;
    let kiosk = server.started.state.clone();
    let store = &kiosk.store();
    let operator = store.create_token(&Principal::Operator, "op", "operator").await.unwrap().1;
    let revocable = store.create_token_by(&Principal::Tenant(TENANT.into()), "r", None, "operator").await.unwrap().0;
    let request = InstallRequest {
        app: APP.into(),
        version: Some("1.4.34".into()),
        config: Some(json!({"apiKey": "k"})),
        ..Default::default()
    };
    let installation = kiosk.install(TENANT, request, "tenant:demo").await.unwrap().id;
    let acme_cert = store.certificate_rows().await.unwrap().into_iter().find(|c| c.partner == "acme").unwrap();
    let world = World {
        kiosk: kiosk.clone(),
        api: server.api.clone(),
        operator,
        installation,
        revocable,
        acme_cert: acme_cert.fingerprint,
    };
    use Mutation::*;
    let all = [
        CreatePartner,
        AddCertificate,
        ReplaceCertificate,
        CreateTenant,
        CreateToken,
        CreateTokenBy,
        RevokeToken,
        SetEntitlement,
        Yank,
        Install,
        Configure,
        Upgrade,
        Uninstall,
        HttpCreatePartner,
        HttpCreateTenant,
    ];

    refuse_audit(store).await;
    for m in all {
        // Nothing is skipped: the hooks' key-value changes commit with the row, or not at all.
        let skip: &[&str] = &[];
        let before = snapshot(store, skip).await;
        let said = world.run(m).await.expect_err(&format!("{m:?} succeeded without its audit row"));
        match m {
            Install | Configure | Upgrade | Uninstall => assert!(said.starts_with("Internal"), "{m:?}: {said}"),
            HttpCreatePartner | HttpCreateTenant => assert!(said.starts_with("500"), "{m:?}: {said}"),
            _ => assert!(said.contains("write audit log") && said.contains("audit refused"), "{m:?}: {said}"),
        }
        let after = snapshot(store, skip).await;
        let changed: Vec<String> = (after.iter().filter(|r| !before.contains(r)).map(|r| format!("+ {r}")))
            .chain(before.iter().filter(|r| !after.contains(r)).map(|r| format!("- {r}")))
            .map(|r| r.chars().take(300).collect())
            .collect();
        assert!(changed.is_empty(), "{m:?} left a change behind without its audit row: {changed:#?}");
    }

    // The same mutations with an audit table that takes rows: each succeeds (so the
    // refusals above were the audit row's) and is audited.
    accept_audit(store).await;
    for m in all {
        let audited = store.audit_log(1000).await.unwrap().len();
        world.run(m).await.unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert!(store.audit_log(1000).await.unwrap().len() > audited, "{m:?} wrote no audit row");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutation_commits_with_its_audit_row_on_sqlite() {
    every_mutation_commits_with_its_audit_row(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutation_commits_with_its_audit_row_on_postgresql() {
    every_mutation_commits_with_its_audit_row(Some(common::fresh_postgres_database().await)).await;
}
