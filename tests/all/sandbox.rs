//! The sandbox against hostile guests, and isolation between tenants.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk::error::CallErrorKind;
use kiosk::kv::KvStore;
use kiosk::limits::SandboxLimits;
use kiosk::metering::UsageSource;
use kiosk::runtime::{AppVersion, Installation, Runtime};
use kiosk::world::UsageWindow;

use crate::common;
use crate::common::{Harness, guest_bytes};

const MIB: u64 = 1024 * 1024;

/// Operator ceiling used here; the hostile manifest asks for 32 MiB and 200 ms.
fn limits() -> SandboxLimits {
    SandboxLimits { memory_mib: 64, timeout_ms: 1_000, ..SandboxLimits::default() }
}

/// A bound on how long a stopped call may take that holds on a loaded machine; the
/// precise overrun is measured by `cargo bench --bench timeout`.
const STOPPED_WITHIN: Duration = Duration::from_secs(1);

async fn invoke_err(rt: &Runtime, app: &AppVersion, inst: &Installation, op: &str, input: &str) -> CallErrorKind {
    match rt.invoke(app, inst, op, input).await {
        Ok(outcome) => panic!("{op} should have failed, got {:?}", outcome.result),
        Err(failure) => {
            let text = failure.to_string();
            assert!(
                text.contains("test/hostile@0.0.1") && text.contains(&inst.tenant),
                "failure names app and tenant: {text}"
            );
            failure.kind
        }
    }
}

/// A core module implementing the world whose `invoke` grows a table until refused,
/// turned into a component with wit-component. (Rust guests cannot emit `table.grow`.)
fn table_bomb_component() -> Vec<u8> {
    let wat = r#"
    (module
      (memory (export "memory") 1)
      (table $t 1 funcref)
      (global $heap (mut i32) (i32.const 4096))
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (local $p i32)
        (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                               (i32.sub (i32.const 0) (local.get 2))))
        (global.set $heap (i32.add (local.get $p) (local.get 3)))
        (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
          (then (if (i32.eq (memory.grow (i32.add (i32.div_u (global.get $heap) (i32.const 65536)) (i32.const 1))) (i32.const -1))
                  (then unreachable))))
        (local.get $p))
      (func (export "kiosk:app/lifecycle@0.1.0#install") (export "kiosk:app/lifecycle@0.1.0#validate-config")
        (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 1024))
      (func (export "kiosk:app/lifecycle@0.1.0#configure") (export "kiosk:app/lifecycle@0.1.0#upgrade")
        (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 1024))
      (func (export "kiosk:app/lifecycle@0.1.0#uninstall")
        (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 1024))
      (func (export "kiosk:app/usage@0.1.0#report")
        (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i64) (result i32) (i32.const 1024))
      (func (export "kiosk:app/calls@0.1.0#invoke")
        (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
        (loop $grow
          (if (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))
            (then unreachable))
          (br $grow))
        (i32.const 1024))
    )"#;
    let mut module = wat::parse_str(wat).expect("table bomb WAT");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(kiosk::world::WIT_DIR).expect("WIT parses");
    let world = resolve.select_world(&[pkg], Some("app")).expect("world app");
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .expect("embed metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("componentize table bomb")
}

fn evaluate_input(i: usize) -> String {
    format!(r#"{{"campaignId":"c-{i}","budget":3000,"flightDays":30,"dailySpend":[100,100,100,{}]}}"#, 100 + i % 50)
}

/// Calls `export` of `app` for `inst`; `Ok(())` when the export completed.
async fn call_export(
    rt: &Runtime,
    app: &AppVersion,
    inst: &Installation,
    export: &str,
) -> Result<(), kiosk::error::CallFailure> {
    let window = UsageWindow { start_ms: 0, end_ms: 3_600_000 };
    match export {
        "validate-config" => rt.validate_config(app, inst, "{}").await.map(drop),
        "install" => rt.install(app, inst, "{}").await.map(drop),
        "configure" => rt.configure(app, inst, "{}", "{}").await.map(drop),
        "upgrade" => rt.upgrade(app, inst, "0.0.0", "{}").await.map(drop),
        "uninstall" => rt.uninstall(app, inst).await.map(drop),
        "invoke" => rt.invoke(app, inst, "echo", "{}").await.map(drop),
        "report" => rt.report(app, inst, window).await.map(drop),
        other => panic!("no export {other}"),
    }
}

const EXPORTS: [&str; 7] = ["validate-config", "install", "configure", "upgrade", "uninstall", "invoke", "report"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_loops_sleeps_or_blocks_in_any_export_times_out_naming_its_limit() {
    let h = Harness::new(limits());
    let rt = &h.runtime;
    let hostile = h.app("hostile-guest");
    assert_eq!(hostile.limits.timeout_ms, 200, "the app's request tightens the 1 s ceiling");
    // A CPU loop, a 60 s `std::thread::sleep` (WASI poll under the hood) and a 60 s
    // block on a wasi:clocks pollable, in each of the seven exports.
    for prefix in ["loop", "sleep", "poll"] {
        let inst = Installation::new("mallory", format!("{prefix}-1"));
        for export in EXPORTS {
            let started = Instant::now();
            let err = call_export(rt, &hostile, &inst, export).await.expect_err(export);
            let elapsed = started.elapsed();
            assert_eq!(err.kind, CallErrorKind::Timeout { limit_ms: 200 }, "{prefix} in {export}");
            assert!(err.to_string().contains("wall-time limit of 200 ms"), "{err}");
            assert!(elapsed >= Duration::from_millis(200), "{prefix} in {export} stopped early: {elapsed:?}");
            assert!(elapsed < STOPPED_WITHIN, "{prefix} in {export} was not stopped: {elapsed:?}");
        }
    }
    // Every slot was given back: nothing is left running.
    assert_eq!(rt.admission().free_slots(), limits().max_concurrent_instances as usize);
    assert_eq!(rt.admission().active("mallory"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_guest_gets_a_named_error_and_another_tenant_goes_on() {
    let h = Harness::new(limits());
    let rt = &h.runtime;
    let hostile = h.app("hostile-guest");
    assert_eq!(hostile.limits.memory_bytes, 32 * MIB);

    let mallory = Installation::new("mallory", "hostile-1");
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "grow-memory", "").await,
        CallErrorKind::MemoryLimit { limit_bytes: 32 * MIB }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "recurse", "").await,
        CallErrorKind::StackOverflow { limit_kib: 512 }
    );
    let trap = rt.invoke(&hostile, &mallory, "trap", "").await.expect_err("the trap fails the call");
    match &trap.kind {
        CallErrorKind::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("trap: {other:?}"),
    }
    // The panic message the guest wrote to stderr comes back, sanitised, with the
    // failure, and a last line names the failure in the failure's own words.
    let lines = trap.logs.clone().expect("the guest ran: its lines come back");
    assert!(lines.iter().any(|l| l.message.contains("hostile guest traps on purpose")), "{lines:?}");
    let last = lines.last().expect("a last line");
    assert_eq!(last.message, format!("call failed: {}", trap.kind));
    let flood = rt.invoke(&hostile, &mallory, "log-flood", "").await.expect_err("the flood fails the call");
    assert_eq!(flood.kind, CallErrorKind::LogLimit { limit_bytes: 64 * 1024 });
    let lines = flood.logs.expect("the guest ran: its lines come back");
    assert!(lines.iter().all(|l| !l.message.chars().any(char::is_control)), "control characters stripped");
    let (guest, last) = lines.split_at(lines.len() - 1);
    let kept: u64 = guest.iter().map(|l| l.message.len() as u64 + 1).sum();
    assert!(kept <= 64 * 1024, "the call's log bounded: {kept}");
    assert_eq!(last[0].message, format!("call failed: {}", flood.kind));
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "huge-output", &(2 * MIB).to_string()).await,
        CallErrorKind::OutputTooLarge { size: 2 * MIB, limit: MIB }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "echo", &"x".repeat(MIB as usize + 1)).await,
        CallErrorKind::InputTooLarge { size: MIB + 5, limit: MIB }
    );

    let bomb = rt.load(&table_bomb_component()).expect("table bomb loads");
    let bomb_app = rt.prepare(common::parse_manifest(&common::manifest_json("hostile-guest")), Arc::new(bomb));
    assert_eq!(
        invoke_err(rt, &bomb_app, &mallory, "anything", "").await,
        CallErrorKind::TableLimit { limit_elements: SandboxLimits::default().table_elements }
    );
    // Limits wasmtime and WASI enforce for Kiosk are named too.
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "stderr-flood", "").await,
        CallErrorKind::StderrLimit { limit_bytes: 64 * 1024 }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "random-huge", &(10 * MIB).to_string()).await,
        CallErrorKind::RandomLimit { limit_bytes: 64 * 1024 }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "handle-bomb", "").await,
        CallErrorKind::HandleLimit { limit: 1_000 }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "host-copy", &(8 * MIB).to_string()).await,
        CallErrorKind::HostCopyLimit { limit_bytes: 4 * MIB }
    );
    assert!(h.sink.events().is_empty(), "failed calls meter nothing");
    // Within the limits the same operations work.
    let ok = rt.invoke(&hostile, &mallory, "random-huge", "32").await.unwrap();
    assert_eq!(ok.result.unwrap(), "32");

    // Another tenant's 1,000 following calls all succeed with correct output.
    let pacing = h.app("budget-pacing");
    let alice = Installation::new("alice", "alice-pacing");
    rt.install(&pacing, &alice, r#"{"apiKey":"k","threshold":0.1}"#).await.unwrap().result.unwrap();
    for i in 0..1_000 {
        let out = rt.invoke(&pacing, &alice, "evaluate", &evaluate_input(i)).await.expect("call succeeds");
        let out: serde_json::Value = serde_json::from_str(&out.result.expect("app answers")).unwrap();
        let spent = 400.0 + (i % 50) as f64;
        assert_eq!(out["spent"], spent, "call {i}");
        assert_eq!(out["planned"], 400.0);
        assert_eq!(out["status"], if spent / 400.0 - 1.0 > 0.1 { "over" } else { "on-track" }, "call {i}");
    }
    let checks = h.sink.events().iter().filter(|e| e.sku == "pacing-check" && e.tenant == "alice").count();
    assert_eq!(checks, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tenants_never_see_each_others_state() {
    let h = Arc::new(Harness::new(limits()));
    // Isolation is the subject here, not time: the manifest's 200 ms per call was met
    // on a loaded machine (other tests compiling beside 3,600 calls on 2 cores).
    let hostile = h.app_with("hostile-guest", |m| m["limits"]["timeoutMs"] = 1_000.into());
    let threads: Vec<_> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|tenant| {
            let (h, app) = (h.clone(), hostile.clone());
            tokio::spawn(async move {
                let inst = Installation::new(tenant, format!("{tenant}-inst"));
                for i in 0..300 {
                    let counter = h.runtime.invoke(&app, &inst, "counter", "").await.unwrap().result.unwrap();
                    assert_eq!(counter, "1", "{tenant} call {i}: the global counter starts from zero");
                    let me = h.runtime.invoke(&app, &inst, "whoami", "").await.unwrap().result.unwrap();
                    assert_eq!(me, format!("{tenant}/{tenant}-inst"));
                    let set = h.runtime.invoke(&app, &inst, "kv-set", &format!("secret={tenant}-{i}")).await;
                    set.unwrap().result.unwrap();
                    let read = h.runtime.invoke(&app, &inst, "kv-get", "secret").await.unwrap().result.unwrap();
                    assert_eq!(read, format!("{tenant}-{i}"), "key-value data is per installation");
                }
            })
        })
        .collect();
    for t in threads {
        t.await.expect("tenant task");
    }
    // A second installation of the same tenant starts empty.
    let other = Installation::new("alice", "alice-second");
    assert_eq!(h.runtime.invoke(&hostile, &other, "kv-get", "secret").await.unwrap().result.unwrap(), "<none>");
}

#[tokio::test]
async fn undeclared_sku_is_an_error_to_the_guest_and_records_nothing() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let out = h.runtime.invoke(&app, &inst, "undeclared-sku", "").await.unwrap();
    assert_eq!(out.result.unwrap(), r#"refused: MeteringError::UndeclaredSku("no-such-sku")"#);
    assert!(out.usage.is_empty());
    assert!(h.sink.events().is_empty());
}

#[tokio::test]
async fn usage_is_metered_from_host_guest_and_report() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let echo = h.runtime.invoke(&app, &inst, "echo", "hi").await.unwrap();
    assert_eq!(echo.result.unwrap(), "hi");
    assert_eq!(echo.usage.len(), 1);
    assert_eq!(
        (echo.usage[0].sku.as_str(), echo.usage[0].quantity, echo.usage[0].source),
        ("calls", 1, UsageSource::Host)
    );
    let rec = h.runtime.invoke(&app, &inst, "record", "7").await.unwrap();
    assert_eq!(
        (rec.usage[0].sku.as_str(), rec.usage[0].quantity, rec.usage[0].source),
        ("events", 7, UsageSource::Guest)
    );
    let window = UsageWindow { start_ms: 3_600_000, end_ms: 7_200_000 };
    let reported = h.runtime.report(&app, &inst, window).await.unwrap().result.unwrap();
    assert_eq!(reported.accepted.len(), 1);
    assert_eq!(reported.accepted[0].source, UsageSource::Report);
    assert_eq!(reported.accepted[0].idempotency_key, "a1/report/a1:3600000");
    let all = h.sink.events();
    assert_eq!(all.iter().map(|e| e.quantity).sum::<u64>(), 1 + 7 + 2);
    assert!(all.iter().all(|e| e.tenant == "alice" && e.app == "test/hostile" && e.version == "0.0.1"));
    let keys: std::collections::HashSet<_> = all.iter().map(|e| &e.idempotency_key).collect();
    assert_eq!(keys.len(), all.len(), "idempotency keys are unique");
}

#[tokio::test]
async fn a_trapped_call_commits_neither_storage_nor_usage() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let err = h.runtime.invoke(&app, &inst, "kv-set-then-trap", "k=v").await.unwrap_err();
    assert!(matches!(err.kind, CallErrorKind::Trap { .. }), "{err}");
    assert_eq!(h.runtime.invoke(&app, &inst, "kv-get", "k").await.unwrap().result.unwrap(), "<none>");
    assert!(h.sink.events().is_empty());
}

/// Commits through a separate key-value store and sink, keeping what each call handed
/// over: how many writes a call asks for, and with what.
struct Recording {
    inner: kiosk::effects::SeparateCommitter,
    seen: std::sync::Mutex<Vec<kiosk::effects::CallEffects>>,
}

#[async_trait::async_trait]
impl kiosk::effects::CallCommitter for Recording {
    async fn commit(
        &self,
        effects: kiosk::effects::CallEffects,
    ) -> Result<Vec<kiosk::metering::SinkOutcome>, kiosk::effects::CommitError> {
        self.seen.lock().unwrap().push(effects.clone());
        self.inner.commit(effects).await
    }
}

#[tokio::test]
async fn a_call_hands_over_its_effects_once_and_a_call_without_effects_writes_nothing() {
    let kv = Arc::new(kiosk::kv::MemoryKv::default());
    let sink = Arc::new(kiosk::metering::MemorySink::default());
    let recording = Arc::new(Recording {
        inner: kiosk::effects::SeparateCommitter { kv: kv.clone(), metering: sink.clone() },
        seen: std::sync::Mutex::default(),
    });
    let services = kiosk::runtime::Services { kv, commit: recording.clone() };
    let settings = kiosk::runtime::RuntimeSettings { limits: limits(), ..Default::default() };
    let runtime = Runtime::new(settings, services).unwrap();
    let component = runtime.load(&guest_bytes("hostile-guest")).unwrap();
    let app = runtime.prepare(common::parse_manifest(&common::manifest_json("hostile-guest")), Arc::new(component));
    let inst = Installation::new("alice", "a1");
    let seen = || recording.seen.lock().unwrap().clone();

    // Reads only, meters nothing, logs nothing: no write at all.
    assert_eq!(runtime.invoke(&app, &inst, "kv-get", "k").await.unwrap().result.unwrap(), "<none>");
    assert!(seen().is_empty(), "a call without effects asks for no write: {:?}", seen());

    // Key-value changes: one write, with them.
    runtime.invoke(&app, &inst, "kv-set", "k=v").await.unwrap().result.unwrap();
    let writes = seen();
    assert_eq!(writes.len(), 1);
    let changes = &writes[0].kv.as_ref().unwrap().changes;
    assert_eq!(changes.get("k"), Some(&Some(b"v".to_vec())));
    assert!(writes[0].usage.is_empty() && writes[0].lines.is_none(), "{:?}", writes[0]);

    // Usage only (echo meters `calls`): one write, with it.
    runtime.invoke(&app, &inst, "echo", "hi").await.unwrap().result.unwrap();
    let writes = seen();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[1].usage.iter().map(|e| e.sku.as_str()).collect::<Vec<_>>(), ["calls"]);
    assert!(writes[1].kv.as_ref().is_none_or(|kv| kv.changes.is_empty()), "{:?}", writes[1]);

    // A logging call of a recorded installation: its lines go in the same write, under
    // its call id and operation, and the outcome says so.
    let logged = Installation::new("alice", "a1").with_call_id("call-1").with_log("invoke:log");
    let done = runtime.invoke(&app, &logged, "log", "careful").await.unwrap();
    assert!(done.logs_kept, "the lines went with the effects");
    let writes = seen();
    assert_eq!(writes.len(), 3, "one write per call");
    let lines = writes[2].lines.as_ref().unwrap();
    assert_eq!((lines.call_id.as_str(), lines.operation.as_str()), ("call-1", "invoke:log"));
    assert_eq!(lines.lines.iter().map(|l| (l.level, l.message.as_str())).collect::<Vec<_>>(), [("warn", "careful")]);
}

#[tokio::test]
async fn key_value_is_refused_when_the_manifest_does_not_ask_for_it_and_quota_holds() {
    let h = Harness::new(SandboxLimits { kv_quota_bytes: 64, ..limits() });
    let app = h.app_with("hostile-guest", |m| m["capabilities"]["keyValue"] = false.into());
    let inst = Installation::new("alice", "a1");
    let refused = h.runtime.invoke(&app, &inst, "kv-set", "k=v").await.unwrap().result.unwrap_err();
    assert!(refused.message.contains("NotEnabled"), "{refused:?}");
    let app = h.app("hostile-guest");
    let refused =
        h.runtime.invoke(&app, &inst, "kv-set", &format!("k={}", "v".repeat(100))).await.unwrap().result.unwrap_err();
    assert!(refused.message.contains("QuotaExceeded(64)"), "{refused:?}");
}

#[tokio::test]
async fn uninstall_purges_key_value_data() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    h.runtime.invoke(&app, &inst, "kv-set", "k=v").await.unwrap().result.unwrap();
    h.runtime.uninstall(&app, &inst).await.unwrap().result.unwrap();
    assert!(h.kv.load(&inst.scope()).await.unwrap().is_empty());
    assert_eq!(h.runtime.invoke(&app, &inst, "kv-get", "k").await.unwrap().result.unwrap(), "<none>");
}

#[test]
fn a_component_that_does_not_implement_the_world_is_refused_clearly() {
    let h = Harness::new(limits());
    let empty = wat::parse_str("(component)").unwrap();
    let err = h.runtime.load(&empty).unwrap_err().to_string();
    assert!(err.contains("does not implement the kiosk:app@0.1.0 world"), "{err}");
    assert!(err.contains("sha256:"), "names the digest: {err}");
    // A component of another world: the example app's bytes truncated are no component.
    let mut broken = guest_bytes("budget-pacing");
    broken.truncate(broken.len() / 2);
    let err = h.runtime.load(&broken).unwrap_err().to_string();
    assert!(err.contains("could not be compiled"), "{err}");
    let core = wat::parse_str("(module)").unwrap();
    let err = h.runtime.load(&core).unwrap_err().to_string();
    assert!(err.contains("could not be compiled"), "{err}");
}

#[tokio::test]
async fn app_errors_reach_callers_capped_and_without_control_or_bidi_characters() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let refusal = h.runtime.invoke(&app, &inst, "long-error", "").await.unwrap().result.unwrap_err();
    assert!(refusal.message.len() <= kiosk::runtime::MAX_APP_TEXT_BYTES, "{}", refusal.message.len());
    assert!(refusal.code.len() <= kiosk::runtime::MAX_APP_CODE_BYTES, "{}", refusal.code.len());
    for text in [&refusal.message, &refusal.code] {
        assert!(!text.chars().any(|c| c.is_control() || ('\u{202A}'..='\u{202E}').contains(&c)), "{text:.80}");
    }
    assert!(refusal.message.starts_with("[2Jevil"), "{:.40}", refusal.message);
    assert!(refusal.message.ends_with('…'), "a cut is marked");
}

#[tokio::test]
async fn guest_text_a_backend_cannot_store_and_out_of_range_quantities_are_refused_to_the_guest() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let nul = h.runtime.invoke(&app, &inst, "kv-nul", "").await.unwrap();
    assert_eq!(nul.result.unwrap(), "refused: KvError::InvalidKey(512)");
    for quantity in [u64::MAX, 1 << 53] {
        let refused = h.runtime.invoke(&app, &inst, "record", &quantity.to_string()).await.unwrap();
        let refusal = refused.result.unwrap_err();
        assert!(refusal.message.contains("InvalidQuantity"), "{quantity}: {refusal:?}");
    }
    let largest = h.runtime.invoke(&app, &inst, "record", &((1u64 << 53) - 1).to_string()).await.unwrap();
    assert_eq!(largest.result.unwrap(), "recorded");
    assert_eq!(h.sink.events().iter().map(|e| e.quantity).collect::<Vec<_>>(), [(1 << 53) - 1]);
}

#[tokio::test]
async fn a_report_is_judged_record_by_record_before_anything_counts() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "report-bad-1");
    let window = UsageWindow { start_ms: 3_600_000, end_ms: 7_200_000 };
    let reported = h.runtime.report(&app, &inst, window).await.unwrap().result.unwrap();
    let accepted: Vec<_> = reported.accepted.iter().map(|e| (e.quantity, e.idempotency_key.as_str())).collect();
    assert_eq!(
        accepted,
        [(5, "report-bad-1/report/good-3600000"), ((1 << 53) - 1, "report-bad-1/report/largest-3600000")]
    );
    let reasons: Vec<&str> = reported.refused.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 8, "{reasons:#?}");
    for expected in [
        "is not declared by test/hostile@0.0.1",
        "\"calls\" is metered by the host for its operations",
        "quantity 0 is outside 1..=9007199254740991",
        "quantity 18446744073709551615 is outside",
        "quantity 9007199254740992 is outside",
        "idempotency key must be 1-200 bytes, found 1048576",
        "must not contain NUL",
        "appears twice in this report",
    ] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no refusal says {expected:?}: {reasons:#?}");
    }
    assert!(reported.refused.iter().all(|r| r.idempotency_key.len() <= 200), "shown keys are capped");
    // Only the accepted records reached the sink.
    assert_eq!(h.sink.events().iter().map(|e| e.quantity).sum::<u64>(), 5 + (1 << 53) - 1);
}

#[tokio::test]
async fn a_report_over_the_record_cap_or_the_copy_limit_fails_naming_it_and_records_nothing() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let window = UsageWindow { start_ms: 0, end_ms: 3_600_000 };
    let some = Installation::new("alice", "report-some-1");
    let err = h.runtime.report(&app, &some, window).await.unwrap_err();
    assert_eq!(err.kind, CallErrorKind::ReportTooLarge { records: 5_000, limit: 1_000 });
    // 200k records are never lifted into host memory: the copy stops at its limit.
    let many = Installation::new("alice", "report-many-1");
    let err = h.runtime.report(&app, &many, window).await.unwrap_err();
    assert_eq!(err.kind, CallErrorKind::HostCopyLimit { limit_bytes: 4 * MIB });
    assert!(h.sink.events().is_empty());
}

#[tokio::test]
async fn a_conflicting_report_record_is_refused_alone_and_the_rest_counts() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "report-vary-1");
    let first = UsageWindow { start_ms: 0, end_ms: 1_000 };
    let second = UsageWindow { start_ms: 1_000, end_ms: 2_000 };
    let r1 = h.runtime.report(&app, &inst, first).await.unwrap().result.unwrap();
    assert_eq!(r1.accepted.len(), 2);
    let r2 = h.runtime.report(&app, &inst, second).await.unwrap().result.unwrap();
    assert_eq!(r2.accepted.len(), 1, "the new window's own record counts");
    assert_eq!(r2.refused.len(), 1);
    assert_eq!(r2.refused[0].idempotency_key, "fixed");
    assert!(r2.refused[0].reason.contains("already recorded with quantity 1"), "{:?}", r2.refused[0]);
    assert_eq!(h.sink.events().len(), 3);

    // The same when the guest also meters through `record-usage` during its report: the
    // ledger's verdicts stay with the records they are about.
    let metering = Installation::new("alice", "report-vary-metering-1");
    let r1 = h.runtime.report(&app, &metering, first).await.unwrap();
    assert_eq!(r1.result.unwrap().accepted.len(), 2);
    let r2 = h.runtime.report(&app, &metering, second).await.unwrap();
    let sources: Vec<_> = r2.usage.iter().map(|u| (u.source, u.quantity)).collect();
    assert_eq!(sources, [(UsageSource::Guest, 3), (UsageSource::Report, 1)], "refused records are not usage");
    let reported = r2.result.unwrap();
    assert_eq!(reported.accepted.len(), 1);
    assert_eq!(reported.accepted[0].idempotency_key, "report-vary-metering-1/report/w-1000");
    assert_eq!(reported.refused.len(), 1);
    assert_eq!(reported.refused[0].idempotency_key, "fixed");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sleepers_of_one_tenant_never_fail_another_tenants_calls() {
    use kiosk::admission::{AdmissionSettings, Refusal};
    // A tenant allowed many calls at once is still held to half the slots.
    let admission = AdmissionSettings {
        tenant_max_concurrent: 1_000,
        tenant_slot_share_percent: 50,
        tenant_calls_per_second: 10_000,
        tenant_burst: 10_000,
        ..AdmissionSettings::default()
    };
    let limits = SandboxLimits { timeout_ms: 30_000, ..limits() };
    let h =
        Arc::new(Harness::with_settings(kiosk::runtime::RuntimeSettings { limits, admission, ..Default::default() }));
    // The sleeper asks for 20 s, so they all sleep through the other tenant's calls.
    let sleeper = h.app_with("hostile-guest", |m| m["limits"]["timeoutMs"] = 20_000.into());
    let quick = h.app("hostile-guest");
    let cap = h.runtime.admission().tenant_cap();
    assert_eq!(cap, 128, "half of 256 slots");

    let sleepers: Vec<_> = (0..300)
        .map(|i| {
            let (h, app) = (h.clone(), sleeper.clone());
            tokio::spawn(async move {
                let inst = Installation::new("mallory", format!("m-{i}"));
                h.runtime.invoke(&app, &inst, "sleep", "").await
            })
        })
        .collect();
    // Wait (by observation, not by a timer) until mallory holds every place she may.
    while h.runtime.admission().active("mallory") < cap {
        tokio::task::yield_now().await;
    }

    let mut latencies = Vec::new();
    let bob = Installation::new("bob", "bob-1");
    for i in 0..300 {
        let started = Instant::now();
        let out = h.runtime.invoke(&quick, &bob, "echo", &format!("hello {i}")).await.expect("bob's call succeeds");
        latencies.push(started.elapsed());
        assert_eq!(out.result.unwrap(), format!("hello {i}"));
    }
    // Mallory's sleepers were still holding their slots all along.
    assert_eq!(h.runtime.admission().active("mallory"), cap);
    latencies.sort();
    println!(
        "bob's 300 calls beside 300 sleepers: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );

    // Beyond her share mallory was refused at once, with a Retry-After; the rest sleep on.
    let mut refused = 0;
    let mut sleeping = Vec::new();
    for s in sleepers {
        if s.is_finished() {
            match s.await.unwrap() {
                Err(kiosk::error::CallFailure { kind: CallErrorKind::Busy(refusal), .. }) => {
                    assert!(matches!(refusal, Refusal::TenantConcurrency { limit: 128, .. }), "{refusal}");
                    assert_eq!(refusal.retry_after_s(), 1);
                    refused += 1;
                }
                other => panic!("a finished sleeper must have been refused: {other:?}"),
            }
        } else {
            sleeping.push(s);
        }
    }
    assert_eq!(refused, 300 - 128, "every call beyond her share was refused at once");
    assert_eq!(sleeping.len(), 128);
    // A caller that goes away (an HTTP client disconnecting) drops its call: the slot
    // comes back at once, sleep or no sleep.
    for s in &sleeping {
        s.abort();
    }
    for s in sleeping {
        assert!(s.await.unwrap_err().is_cancelled());
    }
    assert_eq!(h.runtime.admission().active("mallory"), 0);
    assert_eq!(h.runtime.admission().free_slots(), 256);
}
