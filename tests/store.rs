//! The store suite, run against SQLite and PostgreSQL alike.

#![allow(clippy::unwrap_used)]

mod common;

use kiosk::kv::KvScope;
use kiosk::manifest::Manifest;
use kiosk::store::{Backend, Changed, EntitlementRow, InstallationRow, Principal, Store};
use kiosk::world::HOST_API_VERSION;

async fn suite(store: Store) {
    // Tokens: only the hash is stored; revoked or unknown secrets authenticate nobody.
    assert!(store.create_tenant("t1", "Tenant One", "operator").await.unwrap());
    let (_, secret) = store.create_token(&Principal::Tenant("t1".into()), "t1 token", "operator").await.unwrap();
    assert_eq!(store.authenticate(&secret).await.unwrap(), Some(Principal::Tenant("t1".into())));
    assert_eq!(store.authenticate("kiosk_not-a-token").await.unwrap(), None);
    assert!(!store.create_tenant("t1", "again", "operator").await.unwrap(), "a tenant is created once");

    // Partners and a version.
    assert!(store.create_partner("acme", "Acme", "operator").await.unwrap());
    store.add_certificate("acme", "ABCD", b"cert bytes", "operator").await.unwrap();
    assert_eq!(store.certificates().await.unwrap(), [("acme".to_string(), b"cert bytes".to_vec())]);
    let manifest_text = std::fs::read_to_string(common::manifest_path("budget-pacing")).unwrap();
    let manifest = Manifest::parse(manifest_text.as_bytes(), &HOST_API_VERSION).unwrap();
    store
        .register_version(&manifest, &manifest_text, "sha256:m", "sha256:c", b"\0asm", "ABCD", "ref", "partner:acme")
        .await
        .unwrap();
    let err = store
        .register_version(&manifest, &manifest_text, "sha256:m2", "sha256:c", b"\0asm", "ABCD", "ref", "partner:acme")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("record acme/budget-pacing@1.4.34"), "a version is registered once: {err}");
    let v = store.version("acme/budget-pacing", "1.4.34").await.unwrap().unwrap();
    assert_eq!((v.manifest_digest.as_str(), v.yanked), ("sha256:m", false));
    assert_eq!(store.component("sha256:c").await.unwrap().unwrap(), b"\0asm");
    assert!(store.set_yanked("acme/budget-pacing", "1.4.34", true, "partner:acme").await.unwrap());
    assert!(store.version("acme/budget-pacing", "1.4.34").await.unwrap().unwrap().yanked);
    assert_eq!(store.apps().await.unwrap()[0].3, ["analytics"]);

    // Entitlements.
    let e =
        EntitlementRow { tenant: "t1".into(), app: "acme/budget-pacing".into(), expires_ms: Some(5), revoked: false };
    store.set_entitlement(&e, "operator").await.unwrap();
    let got = store.entitlement("t1", "acme/budget-pacing").await.unwrap().unwrap();
    assert_eq!((got.expires_ms, got.revoked), (Some(5), false));

    // Installations and their key-value data.
    let row = InstallationRow {
        id: "i1".into(),
        tenant: "t1".into(),
        app: "acme/budget-pacing".into(),
        version: "1.4.34".into(),
        config: "{}".into(),
        secrets: vec![1, 2, 3],
        created_ms: 1,
        updated_ms: 1,
        row_version: 0,
        upgrade_policy: Default::default(),
    };
    store.insert_installation(&row, "tenant:t1").await.unwrap();
    assert_eq!(store.installations("t1").await.unwrap().len(), 1);
    assert!(store.installation("t2", "i1").await.unwrap().is_none(), "scoped by tenant");
    let scope = KvScope { tenant: "t1".into(), installation: "i1".into() };
    let changes = [("a".to_string(), Some(b"1".to_vec())), ("b".to_string(), Some(b"22".to_vec()))].into();
    assert_eq!(store.kv_commit(&scope, changes, 100).await.unwrap(), Ok(()));
    let over = [("c".to_string(), Some(vec![0u8; 200]))].into();
    assert_eq!(store.kv_commit(&scope, over, 100).await.unwrap(), Err(100), "over quota: refused");
    let entries = store.kv_load(&scope).await.unwrap();
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["a", "b"], "the refused change rolled back whole");
    let delete = [("a".to_string(), None)].into();
    store.kv_commit(&scope, delete, 100).await.unwrap().unwrap();
    assert_eq!(store.kv_load(&scope).await.unwrap().len(), 1);

    // Writes of an installation apply only at the row version read, and bump it.
    let read = store.installation("t1", "i1").await.unwrap().unwrap();
    assert_eq!(read.row_version, 0, "a new installation starts at row version 0");
    let configured = InstallationRow { config: r#"{"threshold":0.5}"#.into(), ..read.clone() };
    store.update_installation(&configured, "installation.configure", "tenant:t1").await.unwrap().unwrap();
    let now = store.installation("t1", "i1").await.unwrap().unwrap();
    assert_eq!((now.row_version, now.config.as_str()), (1, r#"{"threshold":0.5}"#));
    let stale = InstallationRow { config: "{}".into(), ..read.clone() };
    assert_eq!(store.update_installation(&stale, "installation.configure", "tenant:t1").await.unwrap(), Err(Changed));
    assert_eq!(store.delete_installation("t1", "i1", 0, "tenant:t1").await.unwrap(), Err(Changed));
    let unchanged = store.installation("t1", "i1").await.unwrap().unwrap();
    assert_eq!(
        (unchanged.row_version, unchanged.config.as_str()),
        (1, r#"{"threshold":0.5}"#),
        "a stale write wrote nothing"
    );
    assert_eq!(store.kv_load(&scope).await.unwrap().len(), 1, "a stale uninstall purged nothing");
    store.delete_installation("t1", "i1", 1, "tenant:t1").await.unwrap().unwrap();
    assert!(store.kv_load(&scope).await.unwrap().is_empty(), "uninstall purges key-value data");
    assert_eq!(store.delete_installation("t1", "i1", 1, "tenant:t1").await.unwrap(), Err(Changed), "gone");

    // Every step is in the audit log, newest first.
    let actions: Vec<_> = store.audit_log(20).await.unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        [
            "installation.uninstall",
            "installation.configure",
            "installation.install",
            "entitlement.set",
            "version.yank",
            "version.register",
            "certificate.add",
            "partner.create",
            "token.create",
            "tenant.create"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiosk.db").display());
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    suite(store).await;
    // Migrations are idempotent across restarts.
    Store::connect(&url).await.unwrap().close().await;
}

#[tokio::test]
async fn store_suite_on_postgresql() {
    let url = common::fresh_postgres_database().await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    suite(store).await;
    Store::connect(&url).await.unwrap().close().await;
}
