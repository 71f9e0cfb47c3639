//! The store suite, run against SQLite and PostgreSQL alike.

use kiosk::kv::KvScope;
use kiosk::manifest::Manifest;
use kiosk::store::{Backend, Changed, EntitlementRow, InstallationRow, Principal, Store};
use kiosk::world::HOST_API_VERSION;

use crate::common;

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
    assert_eq!(store.apps().await.unwrap()[0].categories, ["analytics"]);

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
    assert_eq!(
        store.kv_commit(&scope, over, 100).await.unwrap(),
        Err(kiosk::kv::QuotaHit::Installation(100)),
        "over quota: refused"
    );
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

/// Tenant t1, partner acme and budget-pacing 1.4.34 registered.
async fn seed_budget_pacing(store: &Store) {
    assert!(store.create_tenant("t1", "Tenant One", "operator").await.unwrap());
    assert!(store.create_partner("acme", "Acme", "operator").await.unwrap());
    let manifest_text = std::fs::read_to_string(common::manifest_path("budget-pacing")).unwrap();
    let manifest = Manifest::parse(manifest_text.as_bytes(), &HOST_API_VERSION).unwrap();
    store
        .register_version(&manifest, &manifest_text, "sha256:m", "sha256:c", b"\0asm", "ABCD", "ref", "partner:acme")
        .await
        .unwrap();
}

/// Tenant t1's installation `id` of budget-pacing 1.4.34, empty config.
fn installation_of(id: &str) -> InstallationRow {
    common::budget_pacing_row("t1", id)
}

/// What a call reads before it runs, in one statement (`Store::call_context`): the
/// installation, the four limit layers that can apply, the tenant's and partner's
/// switches and the licence, each change visible to the next read (on SQLite through
/// the inline reader, beside the pool's writes).
async fn call_context(store: Store) {
    use kiosk::limits::LimitValues;
    seed_budget_pacing(&store).await;
    assert!(store.create_tenant("t2", "Tenant Two", "operator").await.unwrap());
    let row = InstallationRow {
        config: r#"{"threshold":0.2}"#.into(),
        secrets: vec![9, 8, 7],
        updated_ms: 2,
        ..installation_of("i1")
    };
    store.insert_installation(&row, "tenant:t1").await.unwrap();
    assert!(store.call_context("t2", "i1").await.unwrap().is_none(), "another tenant's installation is not found");
    assert!(store.call_context("t1", "nope").await.unwrap().is_none());

    let read = store.call_context("t1", "i1").await.unwrap().unwrap();
    assert_eq!(read.installation.secrets, [9, 8, 7]);
    assert_eq!(read.installation.config, r#"{"threshold":0.2}"#);
    assert_eq!((read.installation.created_ms, read.installation.updated_ms), (1, 2));
    assert!(read.policy.layers.is_empty() && !read.policy.tenant_suspended && !read.policy.partner_disabled);
    assert!(read.entitlement.is_none());

    // Every layer that applies, and none of another tenant's or app's.
    let limits = |ms| LimitValues { timeout_ms: Some(ms), ..LimitValues::default() };
    store.put_limit_layer("", "", &limits(100), "operator").await.unwrap();
    store.put_limit_layer("t1", "", &limits(101), "operator").await.unwrap();
    store.put_limit_layer("", "acme/budget-pacing", &limits(102), "operator").await.unwrap();
    store.put_limit_layer("t1", "acme/budget-pacing", &limits(103), "operator").await.unwrap();
    store.put_limit_layer("t2", "", &limits(104), "operator").await.unwrap();
    store.put_limit_layer("t1", "acme/other", &limits(105), "operator").await.unwrap();
    let read = store.call_context("t1", "i1").await.unwrap().unwrap();
    let mut layers: Vec<_> =
        read.policy.layers.iter().map(|l| (l.tenant.as_str(), l.app.as_str(), l.limits.timeout_ms)).collect();
    layers.sort();
    assert_eq!(
        layers,
        [
            ("", "", Some(100)),
            ("", "acme/budget-pacing", Some(102)),
            ("t1", "", Some(101)),
            ("t1", "acme/budget-pacing", Some(103))
        ]
    );
    let policy = store.call_policy("t1", "acme/budget-pacing").await.unwrap();
    assert_eq!(policy.layers.len(), 4, "the same layers as the policy read alone");

    // The switches and the licence, from the next read on.
    assert!(store.set_tenant_suspended("t1", true, "operator").await.unwrap());
    assert!(store.set_partner_disabled("acme", true, "operator").await.unwrap());
    let e = EntitlementRow { tenant: "t1".into(), app: "acme/budget-pacing".into(), expires_ms: None, revoked: true };
    store.set_entitlement(&e, "operator").await.unwrap();
    let read = store.call_context("t1", "i1").await.unwrap().unwrap();
    assert!(read.policy.tenant_suspended && read.policy.partner_disabled);
    let licence = read.entitlement.unwrap();
    assert_eq!((licence.tenant.as_str(), licence.expires_ms, licence.revoked), ("t1", None, true));

    // A revoked token authenticates nobody from the next request on.
    let (id, secret) = store.create_token(&Principal::Tenant("t1".into()), "t1 token", "operator").await.unwrap();
    assert_eq!(store.authenticate(&secret).await.unwrap(), Some(Principal::Tenant("t1".into())));
    store.revoke_token(&id, "operator").await.unwrap();
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn call_context_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("kiosk.db").display())).await.unwrap();
    call_context(store).await;
}

#[tokio::test]
async fn call_context_on_postgresql() {
    call_context(Store::connect(&common::fresh_postgres_database().await).await.unwrap()).await;
}

/// `[logs] max-bytes-total`: the sum of every installation's lines is brought under the
/// bound by removing the oldest lines of any installation first; each installation
/// keeps a suffix of its cursor range, and the byte counts follow.
async fn global_log_bound(store: Store) {
    use kiosk::store::logs::{LogBounds, NewLogLine};
    seed_budget_pacing(&store).await;
    let bounds = LogBounds { max_lines: 1000, max_bytes: 1 << 20 };
    // Three installations, lines interleaved in time: a (at 0, 3, 6, …), b (1, 4, …), c (2, 5, …).
    for id in ["a", "b", "c"] {
        store.insert_installation(&installation_of(id), "tenant:t1").await.unwrap();
    }
    for step in 0..30_i64 {
        let id = ["a", "b", "c"][(step % 3) as usize];
        let line = NewLogLine { at_ms: step, level: "info".into(), message: format!("{:0>100}", step) };
        assert!(store.append_logs("t1", id, "call", "invoke:x", &[line], bounds).await.unwrap());
    }
    assert_eq!(store.log_bytes_total().await.unwrap(), 3000);
    assert_eq!(store.trim_logs_total(3000).await.unwrap().lines, 0, "at the bound: nothing goes");

    let trimmed = store.trim_logs_total(1950).await.unwrap();
    assert_eq!((trimmed.lines, trimmed.bytes), (11, 1100), "the 11 oldest lines cover the 1050 bytes over");
    assert_eq!(store.log_bytes_total().await.unwrap(), 1900);
    let mut kept = Vec::new();
    for id in ["a", "b", "c"] {
        let lines = store.logs("t1", id, 0, 100).await.unwrap();
        let seqs: Vec<i64> = lines.iter().map(|l| l.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{id} keeps a suffix of its cursors: {seqs:?}");
        kept.extend(lines.iter().map(|l| l.at_ms));
    }
    kept.sort();
    assert_eq!(kept, (11..30).collect::<Vec<_>>(), "the oldest lines went, across installations");
    // A reader's cursor stays valid: lines after it are still there.
    assert_eq!(store.logs("t1", "a", 3, 100).await.unwrap().first().map(|l| l.at_ms), Some(12));

    // New lines count from the trimmed totals.
    let line = NewLogLine { at_ms: 99, level: "info".into(), message: "x".repeat(100) };
    store.append_logs("t1", "b", "call", "invoke:x", &[line], bounds).await.unwrap();
    assert_eq!(store.log_bytes_total().await.unwrap(), 2000);
    let trimmed = store.trim_logs_total(0).await.unwrap();
    assert_eq!(trimmed.lines, 20, "a zero bound empties every log");
    assert_eq!(store.log_bytes_total().await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn global_log_bound_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("kiosk.db").display())).await.unwrap();
    global_log_bound(store).await;
}

#[tokio::test]
async fn global_log_bound_on_postgresql() {
    global_log_bound(Store::connect(&common::fresh_postgres_database().await).await.unwrap()).await;
}

/// Key-value snapshots asked for at once (on PostgreSQL, read together in batches,
/// `kv_batch`) are each their own scope's, duplicates and empty scopes included, and each
/// holds every change committed before it was asked for.
async fn snapshots_at_once(store: Store) {
    seed_budget_pacing(&store).await;
    let scope = |i: usize| KvScope { tenant: "t1".into(), installation: format!("i{i}") };
    for i in 0..12 {
        store.insert_installation(&installation_of(&format!("i{i}")), "tenant:t1").await.unwrap();
        if i % 4 != 3 {
            let changes = [(format!("k{i}"), Some(format!("v{i}").into_bytes()))].into();
            store.kv_commit(&scope(i), changes, 1 << 20).await.unwrap().unwrap();
        }
    }
    let asks: Vec<usize> = (0..96).map(|n| (n * 7) % 12).collect();
    let snapshots = futures_util::future::join_all(asks.iter().map(|&i| {
        let (store, scope) = (store.clone(), scope(i));
        async move { store.kv_load(&scope).await.unwrap() }
    }))
    .await;
    for (&i, snapshot) in asks.iter().zip(&snapshots) {
        if i % 4 == 3 {
            assert!(snapshot.is_empty(), "i{i} has no data: {snapshot:?}");
        } else {
            let only: Vec<(&String, &Vec<u8>)> = snapshot.iter().collect();
            assert_eq!(only, [(&format!("k{i}"), &format!("v{i}").into_bytes())], "i{i}'s own entry only");
        }
    }
    // A change committed, then asked for by many at once: every answer holds it.
    store.kv_commit(&scope(0), [("k0".to_string(), Some(b"new".to_vec()))].into(), 1 << 20).await.unwrap().unwrap();
    let first = scope(0);
    let again = futures_util::future::join_all((0..32).map(|_| store.kv_load(&first))).await;
    for snapshot in again {
        assert_eq!(snapshot.unwrap().get("k0").map(Vec::as_slice), Some(&b"new"[..]));
    }
}

#[tokio::test]
async fn snapshots_at_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("kiosk.db").display())).await.unwrap();
    snapshots_at_once(store).await;
}

#[tokio::test]
async fn snapshots_at_once_on_postgresql() {
    snapshots_at_once(Store::connect(&common::fresh_postgres_database().await).await.unwrap()).await;
}

/// The export's state (`store::export`): a sink's lease, its cursor moved only by the
/// replica holding it and only from where its push began (a replay is never undone by
/// a push in flight), parked events kept with their reason until re-driven, the
/// backoff after a failure, and the ledger read in commit order.
async fn sink_cursors(store: Store) {
    use kiosk::store::export::PushOutcome;
    for seq in 1..=10i64 {
        sqlx::query(
            "INSERT INTO usage_events (source, idem_key, tenant, installation, app, version, sku, quantity, at_ms,
             recorded_ms, seq) VALUES ('partner', $1, 't1', 'i1', 'acme/budget-pacing', '1.4.34', 'rows', 1, $2, $2, $3)",
        )
        .bind(format!("k{seq}"))
        .bind(seq * 1000)
        .bind(seq)
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.ensure_sink("s", 0).await.unwrap();
    store.ensure_sink("late", 5_500).await.unwrap();
    store.ensure_sink("late", 0).await.unwrap(); // exists: unchanged
    assert_eq!(store.sink_state("late").await.unwrap().unwrap().cursor, 5, "starts after what was recorded before");
    let now = 100_000;
    let lease = |l: Option<kiosk::store::export::Lease>| l.map(|l| (l.cursor, l.attempts, l.period_ms));
    assert_eq!(lease(store.lease_sink("s", "a", now, 60_000).await.unwrap()), Some((0, 0, 0)));
    assert_eq!(store.lease_sink("s", "b", now, 60_000).await.unwrap(), None, "held by a");
    let read: Vec<i64> = store.usage_after(0, 4).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(read, [1, 2, 3, 4]);

    let push = |from, cursor, sent, parked: Vec<(i64, &'static str)>, delivered: Vec<i64>| PushOutcome {
        from,
        cursor,
        sent,
        parked,
        delivered_parked: delivered,
        period_ms: None,
    };
    assert!(store.record_push("s", "a", now, &push(0, 4, 3, vec![(2, "no meter")], vec![])).await.unwrap());
    let state = store.sink_state("s").await.unwrap().unwrap();
    assert_eq!((state.cursor, state.sent, state.parked, state.oldest_unsent_ms), (4, 3, 1, Some(5_000)));
    assert_eq!(store.replay_sink("s", 8_500, 0).await.unwrap(), Some(4), "a replay never moves the cursor on");
    assert!(!store.record_push("s", "a", now, &push(0, 8, 4, vec![], vec![])).await.unwrap(), "a stale push");
    assert!(!store.record_push("s", "b", now, &push(4, 8, 4, vec![], vec![])).await.unwrap(), "not the holder");
    assert_eq!(store.sink_state("s").await.unwrap().unwrap().cursor, 4);
    // A replay while a push from 4 is in flight: the push's outcome is not written.
    assert_eq!(store.replay_sink("s", 2_500, 0).await.unwrap(), Some(2));
    assert!(!store.record_push("s", "a", now, &push(4, 8, 4, vec![], vec![])).await.unwrap());
    assert_eq!(store.sink_state("s").await.unwrap().unwrap().cursor, 2);
    assert_eq!(store.replay_sink("nope", 0, 0).await.unwrap(), None);

    // Parked: listed with the event and reason; re-driven, then delivered.
    let parked = store.parked("s", false, 0, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].event.seq, parked[0].reason.as_str(), parked[0].redrive), (2, "no meter", false));
    assert!(store.parked("s", true, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.redrive_parked("s").await.unwrap(), 1);
    assert_eq!(store.parked("s", true, 0, 10).await.unwrap().len(), 1);
    // A sink of aggregates also notes the first period it has not sent.
    let aggregates = PushOutcome { period_ms: Some(7_200_000), ..push(2, 10, 9, vec![], vec![2]) };
    assert!(store.record_push("s", "a", now, &aggregates).await.unwrap());
    let state = store.sink_state("s").await.unwrap().unwrap();
    assert_eq!((state.cursor, state.parked, state.oldest_unsent_ms, state.period_ms), (10, 0, None, 7_200_000));
    // Its replay sends again every period from the one holding the time (the hour at 0).
    assert_eq!(store.replay_sink("s", 9_500, 3_600_000).await.unwrap(), Some(9));
    assert_eq!(store.sink_state("s").await.unwrap().unwrap().period_ms, 0);
    assert!(store.record_push("s", "a", now, &push(9, 10, 1, vec![], vec![])).await.unwrap());

    // A failure: the error kept, no lease until the backoff passed.
    store.sink_failed("s", "a", "the receiver failed (HTTP 503)", now + 5_000).await.unwrap();
    let state = store.sink_state("s").await.unwrap().unwrap();
    assert_eq!((state.attempts, state.last_error.as_deref()), (1, Some("the receiver failed (HTTP 503)")));
    store.release_sink("s", "a").await.unwrap();
    assert_eq!(store.lease_sink("s", "b", now + 1_000, 60_000).await.unwrap(), None, "waiting out its backoff");
    assert_eq!(lease(store.lease_sink("s", "b", now + 5_000, 60_000).await.unwrap()), Some((10, 1, 0)));

    // A replica whose clock is slow books a later number at an earlier time: a replay
    // from 2.5 s still sends everything numbered after the first event booked from then.
    sqlx::query(
        "INSERT INTO usage_events (source, idem_key, tenant, installation, app, version, sku, quantity, at_ms,
         recorded_ms, seq) VALUES ('partner', 'slow', 't1', 'i1', 'acme/budget-pacing', '1.4.34', 'rows', 1, 1500, 1500, 11)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(store.replay_sink("s", 2_500, 0).await.unwrap(), Some(2));
}

#[tokio::test]
async fn sink_cursors_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("kiosk.db").display())).await.unwrap();
    sink_cursors(store).await;
}

#[tokio::test]
async fn sink_cursors_on_postgresql() {
    sink_cursors(Store::connect(&common::fresh_postgres_database().await).await.unwrap()).await;
}
