//! The sandbox against hostile guests, and isolation between tenants.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, guest_bytes};
use kiosk::error::CallErrorKind;
use kiosk::kv::KvStore;
use kiosk::limits::SandboxLimits;
use kiosk::metering::UsageSource;
use kiosk::runtime::{AppVersion, Installation, Runtime};
use kiosk::world::UsageWindow;

const MIB: u64 = 1024 * 1024;

/// Operator ceiling used here; the hostile manifest asks for 32 MiB and 200 ms.
fn limits() -> SandboxLimits {
    SandboxLimits { memory_mib: 64, timeout_ms: 1_000, ..SandboxLimits::default() }
}

fn invoke_err(rt: &Runtime, app: &AppVersion, inst: &Installation, op: &str, input: &str) -> CallErrorKind {
    match rt.invoke(app, inst, op, input) {
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

#[test]
fn each_hostile_guest_gets_a_named_error_and_another_tenant_goes_on() {
    let h = Harness::new(limits());
    let rt = &h.runtime;
    let hostile = h.app("hostile-guest");
    assert_eq!(hostile.limits.timeout_ms, 200, "the app's request tightens the 1 s ceiling");
    assert_eq!(hostile.limits.memory_bytes, 32 * MIB);

    // An infinite loop in each export times out within the limit plus 50 ms.
    let looping = Installation::new("mallory", "loop-1");
    let window = UsageWindow { start_ms: 0, end_ms: 3_600_000 };
    type Export<'a> = Box<dyn Fn() -> Result<(), kiosk::error::CallFailure> + 'a>;
    let exports: Vec<(&str, Export)> = vec![
        ("validate-config", Box::new(|| rt.validate_config(&hostile, &looping, "{}").map(drop))),
        ("install", Box::new(|| rt.install(&hostile, &looping, "{}").map(drop))),
        ("configure", Box::new(|| rt.configure(&hostile, &looping, "{}", "{}").map(drop))),
        ("upgrade", Box::new(|| rt.upgrade(&hostile, &looping, "0.0.0", "{}").map(drop))),
        ("uninstall", Box::new(|| rt.uninstall(&hostile, &looping).map(drop))),
        ("invoke", Box::new(|| rt.invoke(&hostile, &looping, "echo", "{}").map(drop))),
        ("report", Box::new(|| rt.report(&hostile, &looping, window).map(drop))),
    ];
    for (name, call) in exports {
        let started = Instant::now();
        let err = call().expect_err(name);
        let elapsed = started.elapsed();
        assert_eq!(err.kind, CallErrorKind::Timeout { limit_ms: 200 }, "{name}");
        assert!(err.to_string().contains("wall-time limit of 200 ms"), "{err}");
        assert!(elapsed >= Duration::from_millis(200), "{name} stopped early: {elapsed:?}");
        assert!(elapsed < Duration::from_millis(250), "{name} overran: {elapsed:?}");
    }

    let mallory = Installation::new("mallory", "hostile-1");
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "grow-memory", ""),
        CallErrorKind::MemoryLimit { limit_bytes: 32 * MIB }
    );
    assert_eq!(invoke_err(rt, &hostile, &mallory, "recurse", ""), CallErrorKind::StackOverflow { limit_kib: 512 });
    match invoke_err(rt, &hostile, &mallory, "trap", "") {
        CallErrorKind::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("trap: {other:?}"),
    }
    // The panic message the guest wrote to stderr is kept, sanitised, in its log.
    let lines = h.logs.lines(&mallory.scope());
    assert!(lines.iter().any(|l| l.message.contains("hostile guest traps on purpose")), "{lines:?}");
    assert_eq!(invoke_err(rt, &hostile, &mallory, "log-flood", ""), CallErrorKind::LogLimit { limit_bytes: 64 * 1024 });
    let lines = h.logs.lines(&mallory.scope());
    assert!(lines.iter().all(|l| !l.message.chars().any(char::is_control)), "control characters stripped");
    let kept: usize = lines.iter().map(|l| l.message.len()).sum();
    assert!(kept as u64 <= limits().log_buffer_bytes, "log buffer bounded: {kept}");
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "huge-output", &(2 * MIB).to_string()),
        CallErrorKind::OutputTooLarge { size: 2 * MIB, limit: MIB }
    );
    assert_eq!(
        invoke_err(rt, &hostile, &mallory, "echo", &"x".repeat(MIB as usize + 1)),
        CallErrorKind::InputTooLarge { size: MIB + 5, limit: MIB }
    );

    let bomb = rt.load(&table_bomb_component()).expect("table bomb loads");
    let bomb_app = rt.prepare(common::parse_manifest(&common::manifest_json("hostile-guest")), Arc::new(bomb));
    assert_eq!(
        invoke_err(rt, &bomb_app, &mallory, "anything", ""),
        CallErrorKind::TableLimit { limit_elements: 10_000 }
    );
    assert!(h.sink.events().is_empty(), "failed calls meter nothing");

    // Another tenant's 1,000 following calls all succeed with correct output.
    let pacing = h.app("budget-pacing");
    let alice = Installation::new("alice", "alice-pacing");
    rt.install(&pacing, &alice, r#"{"apiKey":"k","threshold":0.1}"#).unwrap().result.unwrap();
    for i in 0..1_000 {
        let out = rt.invoke(&pacing, &alice, "evaluate", &evaluate_input(i)).expect("call succeeds");
        let out: serde_json::Value = serde_json::from_str(&out.result.expect("app answers")).unwrap();
        let spent = 400.0 + (i % 50) as f64;
        assert_eq!(out["spent"], spent, "call {i}");
        assert_eq!(out["planned"], 400.0);
        assert_eq!(out["status"], if spent / 400.0 - 1.0 > 0.1 { "over" } else { "on-track" }, "call {i}");
    }
    let checks = h.sink.events().iter().filter(|e| e.sku == "pacing-check" && e.tenant == "alice").count();
    assert_eq!(checks, 1_000);
}

#[test]
fn concurrent_tenants_never_see_each_others_state() {
    let h = Arc::new(Harness::new(limits()));
    let hostile = h.app("hostile-guest");
    let threads: Vec<_> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|tenant| {
            let (h, app) = (h.clone(), hostile.clone());
            std::thread::spawn(move || {
                let inst = Installation::new(tenant, format!("{tenant}-inst"));
                for i in 0..300 {
                    let counter = h.runtime.invoke(&app, &inst, "counter", "").unwrap().result.unwrap();
                    assert_eq!(counter, "1", "{tenant} call {i}: the global counter starts from zero");
                    let me = h.runtime.invoke(&app, &inst, "whoami", "").unwrap().result.unwrap();
                    assert_eq!(me, format!("{tenant}/{tenant}-inst"));
                    h.runtime.invoke(&app, &inst, "kv-set", &format!("secret={tenant}-{i}")).unwrap().result.unwrap();
                    let read = h.runtime.invoke(&app, &inst, "kv-get", "secret").unwrap().result.unwrap();
                    assert_eq!(read, format!("{tenant}-{i}"), "key-value data is per installation");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("tenant thread");
    }
    // A second installation of the same tenant starts empty.
    let other = Installation::new("alice", "alice-second");
    assert_eq!(h.runtime.invoke(&hostile, &other, "kv-get", "secret").unwrap().result.unwrap(), "<none>");
}

#[test]
fn undeclared_sku_is_an_error_to_the_guest_and_records_nothing() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let out = h.runtime.invoke(&app, &inst, "undeclared-sku", "").unwrap();
    assert_eq!(out.result.unwrap(), r#"refused: MeteringError::UndeclaredSku("no-such-sku")"#);
    assert!(out.usage.is_empty());
    assert!(h.sink.events().is_empty());
}

#[test]
fn usage_is_metered_from_host_guest_and_report() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let echo = h.runtime.invoke(&app, &inst, "echo", "hi").unwrap();
    assert_eq!(echo.result.unwrap(), "hi");
    assert_eq!(echo.usage.len(), 1);
    assert_eq!(
        (echo.usage[0].sku.as_str(), echo.usage[0].quantity, echo.usage[0].source),
        ("calls", 1, UsageSource::Host)
    );
    let rec = h.runtime.invoke(&app, &inst, "record", "7").unwrap();
    assert_eq!(
        (rec.usage[0].sku.as_str(), rec.usage[0].quantity, rec.usage[0].source),
        ("events", 7, UsageSource::Guest)
    );
    let window = UsageWindow { start_ms: 3_600_000, end_ms: 7_200_000 };
    let reported = h.runtime.report(&app, &inst, window).unwrap().result.unwrap();
    assert_eq!(reported.accepted.len(), 1);
    assert_eq!(reported.accepted[0].source, UsageSource::Report);
    assert_eq!(reported.accepted[0].idempotency_key, "a1/report/a1:3600000");
    let all = h.sink.events();
    assert_eq!(all.iter().map(|e| e.quantity).sum::<u64>(), 1 + 7 + 2);
    assert!(all.iter().all(|e| e.tenant == "alice" && e.app == "test/hostile" && e.version == "0.0.1"));
    let keys: std::collections::HashSet<_> = all.iter().map(|e| &e.idempotency_key).collect();
    assert_eq!(keys.len(), all.len(), "idempotency keys are unique");
}

#[test]
fn a_trapped_call_commits_neither_storage_nor_usage() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    let err = h.runtime.invoke(&app, &inst, "kv-set-then-trap", "k=v").unwrap_err();
    assert!(matches!(err.kind, CallErrorKind::Trap { .. }), "{err}");
    assert_eq!(h.runtime.invoke(&app, &inst, "kv-get", "k").unwrap().result.unwrap(), "<none>");
    assert!(h.sink.events().is_empty());
}

#[test]
fn key_value_is_refused_when_the_manifest_does_not_ask_for_it_and_quota_holds() {
    let h = Harness::new(SandboxLimits { kv_quota_bytes: 64, ..limits() });
    let app = h.app_with("hostile-guest", |m| m["capabilities"]["keyValue"] = false.into());
    let inst = Installation::new("alice", "a1");
    let refused = h.runtime.invoke(&app, &inst, "kv-set", "k=v").unwrap().result.unwrap_err();
    assert!(refused.message.contains("NotEnabled"), "{refused:?}");
    let app = h.app("hostile-guest");
    let refused =
        h.runtime.invoke(&app, &inst, "kv-set", &format!("k={}", "v".repeat(100))).unwrap().result.unwrap_err();
    assert!(refused.message.contains("QuotaExceeded(64)"), "{refused:?}");
}

#[test]
fn uninstall_purges_key_value_data() {
    let h = Harness::new(limits());
    let app = h.app("hostile-guest");
    let inst = Installation::new("alice", "a1");
    h.runtime.invoke(&app, &inst, "kv-set", "k=v").unwrap().result.unwrap();
    h.runtime.uninstall(&app, &inst).unwrap().result.unwrap();
    assert!(h.kv.load(&inst.scope()).unwrap().is_empty());
    assert_eq!(h.runtime.invoke(&app, &inst, "kv-get", "k").unwrap().result.unwrap(), "<none>");
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
