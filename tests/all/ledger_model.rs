//! The ledger against a model (issue 31), on SQLite and PostgreSQL: random steps, each a
//! batch of 1 to 4 submissions sent at once — calls (key-value sets and deletes within a
//! fixed per-installation quota, usage, lines; now and then a call id again, a retry)
//! and partner batches (duplicates, conflicts, events the ledger must refuse) — some with
//! an injected fault (a group failing before its `COMMIT`, a lost `COMMIT` reply, or
//! both). An in-memory model applies the same submissions; since concurrent submissions
//! may be grouped and ordered any way, a step passes if some serial order (and, with a
//! lost reply, some first group) explains every answer and the rows they touched. After
//! every step the database must equal the model: totals per tenant and SKU, key-value
//! entries and byte counts, log lines. `KIOSK_MODEL_SEED` replays a run's choices (not
//! its timing), `KIOSK_MODEL_STEPS` sets its length.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiosk::effects::{CallEffects, CallLines, KvWrite, LogEntry};
use kiosk::kv::{KvChanges, KvEntries, KvScope, QuotaHit};
use kiosk::ledger::{Ledger, LedgerFaults, MAX_KEY_BYTES, MAX_QUANTITY, Recorded, Refusal};
use kiosk::metering::{UsageEvent, UsageSource};
use kiosk::store::Store;
use kiosk::store::logs::LogBounds;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Row as _;

use crate::common;

/// Steps per backend by default: measured on 2 cores in `cargo test --release`, about 2 s
/// on SQLite and 9 s on PostgreSQL (run side by side), well under a minute together.
const STEPS: usize = 500;

/// Where calls write, with each installation's fixed key-value quota (bytes).
const SCOPES: [(&str, &str, u64); 3] = [("t", "i0", 64), ("t", "i1", 96), ("u", "i2", 128)];
const SKUS: [&str; 3] = ["s0", "s1", "s2"];
const BOUNDS: LogBounds = LogBounds { max_lines: 1 << 30, max_bytes: 1 << 40 };
const AT_MS: u64 = 1_700_000_000_000;

/// The defects of events the ledger must refuse, each drawn when a roll of 0..100 is
/// under its bound (and at least the previous one's), with the refusal it must get.
type Defect = (u32, fn(&mut UsageEvent), Option<Refusal>);
const DEFECTS: [Defect; 8] = [
    (7, |e| e.quantity = 0, Some(Refusal::ZeroQuantity)),
    (9, |e| e.quantity = MAX_QUANTITY + 1, Some(Refusal::QuantityTooLarge { quantity: MAX_QUANTITY + 1 })),
    (11, |e| e.sku = "s\0".into(), Some(Refusal::InvalidText { field: "sku" })),
    (12, |e| e.idempotency_key.push('\0'), Some(Refusal::InvalidText { field: "idempotency key" })),
    (13, |e| e.tenant = "t\0".into(), Some(Refusal::InvalidText { field: "tenant" })),
    (15, |e| e.idempotency_key.clear(), Some(Refusal::EmptyKey)),
    (17, |e| e.idempotency_key = "x".repeat(MAX_KEY_BYTES + 1), Some(Refusal::KeyTooLong { bytes: MAX_KEY_BYTES + 1 })),
    (18, |e| e.at_ms = u64::MAX, Some(Refusal::TimeOutOfRange { at_ms: u64::MAX })),
];

/// What a submitter was told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Events(Vec<Recorded>),
    Quota(u64),
    Failed,
}

/// One submission: a call's effects (its usage in `events`), or a partner batch; with the
/// refusal each event must get (the generator made at most one defect per event).
#[derive(Debug, Clone)]
struct Sub {
    call: Option<CallEffects>,
    events: Vec<UsageEvent>,
    refusals: Vec<Option<Refusal>>,
}

impl Sub {
    /// The (source, key) of each event the ledger stores or compares.
    fn ids(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.events.iter().zip(&self.refusals).filter(|(_, r)| r.is_none()).map(|(e, _)| id(e))
    }

    /// In one line: keys cut short, values by their length.
    fn show(&self) -> String {
        let events = self.events.iter().zip(&self.refusals).map(|(e, r)| {
            let key = &e.idempotency_key[..e.idempotency_key.len().min(16)];
            format!("{}:{key:?} {}:{} x{} {:?}", e.source.as_str(), e.tenant, e.sku, e.quantity, r)
        });
        let events = events.collect::<Vec<_>>().join(", ");
        let Some(c) = &self.call else { return format!("  partner batch [{events}]") };
        let kv =
            c.kv.as_ref().map(|kv| kv.changes.iter().map(|(k, v)| (k, v.as_ref().map(Vec::len))).collect::<Vec<_>>());
        let lines = c.lines.as_ref().map(|l| l.lines.len());
        format!(
            "  call {} in {}/{}: kv {kv:?}, lines {lines:?}, events [{events}]",
            c.call_id, c.scope.tenant, c.scope.installation
        )
    }
}

fn id(e: &UsageEvent) -> (String, String) {
    (e.source.as_str().to_string(), e.idempotency_key.clone())
}

fn scope_key(s: &KvScope) -> (String, String) {
    (s.tenant.clone(), s.installation.clone())
}

fn bytes(entries: &KvEntries) -> u64 {
    entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

/// What the database must hold. `applied` is not compared: it decides whether a call
/// id's effects are kept again.
#[derive(Debug, Clone, Default)]
struct Model {
    /// (source, key) → (tenant, SKU, quantity).
    usage: HashMap<(String, String), (String, String, u64)>,
    kv: BTreeMap<(String, String), KvEntries>,
    applied: HashSet<String>,
    /// Lines kept per call id (only ids with lines).
    lines: HashMap<String, usize>,
}

impl Model {
    /// `sub` applied serially: a call not applied before has its key-value changes judged
    /// against its quota (over it: nothing of the call is kept), then its lines and events.
    fn apply(&mut self, sub: &Sub) -> Answer {
        if let Some(call) = sub.call.as_ref().filter(|c| !self.applied.contains(&c.call_id)) {
            if let Some(KvWrite { changes, quota }) = &call.kv {
                let entries = self.kv.entry(scope_key(&call.scope)).or_default();
                let mut next = entries.clone();
                for (k, v) in changes {
                    match v {
                        Some(v) => next.insert(k.clone(), v.clone()),
                        None => next.remove(k),
                    };
                }
                if bytes(&next) > *quota {
                    return Answer::Quota(*quota);
                }
                *entries = next;
            }
            self.applied.insert(call.call_id.clone());
            let n = call.lines.as_ref().map_or(0, |l| l.lines.len());
            if n > 0 {
                *self.lines.entry(call.call_id.clone()).or_default() += n;
            }
        }
        let outcomes = sub.events.iter().zip(&sub.refusals).map(|(e, refusal)| match refusal {
            Some(reason) => Recorded::Refused { reason: reason.clone() },
            None => match self.usage.entry(id(e)) {
                Entry::Occupied(o) if o.get().2 == e.quantity => Recorded::Duplicate,
                Entry::Occupied(o) => Recorded::Conflict { recorded_quantity: o.get().2 },
                Entry::Vacant(v) => {
                    v.insert((e.tenant.clone(), e.sku.clone(), e.quantity));
                    Recorded::Recorded
                }
            },
        });
        Answer::Events(outcomes.collect())
    }

    /// The part of the model `subs` read or write.
    fn slice(&self, subs: &[Sub]) -> Model {
        let mut part = Model::default();
        for sub in subs {
            part.usage.extend(sub.ids().filter_map(|id| self.usage.get(&id).map(|row| (id, row.clone()))));
            if let Some(c) = &sub.call {
                let scope = scope_key(&c.scope);
                part.kv.insert(scope.clone(), self.kv.get(&scope).cloned().unwrap_or_default());
                part.applied.extend(self.applied.get(&c.call_id).cloned());
                part.lines.extend(self.lines.get_key_value(&c.call_id).map(|(id, n)| (id.clone(), *n)));
            }
        }
        part
    }

    fn merge(&mut self, part: Model) {
        self.usage.extend(part.usage);
        self.kv.extend(part.kv);
        self.applied.extend(part.applied);
        self.lines.extend(part.lines);
    }

    /// Events, key-value entries (value lengths) and lines per call, for a failure.
    fn show(&self) -> String {
        let kv: BTreeMap<_, BTreeMap<_, _>> =
            self.kv.iter().map(|(s, e)| (s, e.iter().map(|(k, v)| (k, v.len())).collect())).collect();
        format!("events {:?}, kv {kv:?}, lines {:?}", self.usage, self.lines)
    }

    fn same_rows(&self, db: &Model) -> bool {
        self.usage == db.usage && self.kv == db.kv && self.lines == db.lines
    }

    /// Quantity and event count per (tenant, SKU).
    fn totals(&self) -> BTreeMap<(String, String), (u64, u64)> {
        let mut totals: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (tenant, sku, q) in self.usage.values() {
            let t = totals.entry((tenant.clone(), sku.clone())).or_default();
            *t = (t.0 + q, t.1 + 1);
        }
        totals
    }
}

/// The first group fails before its `COMMIT` (each member is written again alone), or
/// commits and loses its reply (each member is written again alone: answered as by a
/// second application), or both (the first member written alone commits and loses its
/// reply: answered an error though its effects were kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    FailGroup,
    LoseReply,
    Both,
}

/// Every answer and slice of the model that some serial order of `subs` gives (with
/// `LoseReply`, each first group: a prefix of the order).
fn explanations(model: &Model, subs: &[Sub], fault: Fault) -> impl Iterator<Item = (Model, Vec<Answer>)> {
    let k = subs.len();
    let splits = if fault == Fault::LoseReply { 1..=k } else { k..=k };
    permutations(k).into_iter().flat_map(move |order| splits.clone().map(move |split| (order.clone(), split))).map(
        move |(order, split)| {
            let mut part = model.slice(subs);
            let mut answers = vec![Answer::Failed; k];
            for (n, &i) in order.iter().enumerate() {
                answers[i] = part.apply(&subs[i]);
                if fault == Fault::LoseReply && n + 1 == split {
                    for &j in &order[..split] {
                        answers[j] = part.apply(&subs[j]);
                    }
                }
            }
            if fault == Fault::Both {
                answers[order[0]] = Answer::Failed;
            }
            (part, answers)
        },
    )
}

/// Every order of `0..k`.
fn permutations(k: usize) -> Vec<Vec<usize>> {
    let all = (0..k.pow(k as u32)).map(|n| (0..k).map(|d| n / k.pow(d as u32) % k).collect::<Vec<_>>());
    all.filter(|order| (0..k).all(|i| order.contains(&i))).collect()
}

/// An event and the refusal it must get.
type Made = (UsageEvent, Option<Refusal>);

struct Script {
    rng: StdRng,
    step: usize,
    made: usize,
    /// Calls made so far, to submit again.
    calls: Vec<Sub>,
}

impl Script {
    fn fresh(&mut self, prefix: &str) -> String {
        self.made += 1;
        format!("{prefix}{}-{}", self.step, self.made)
    }

    /// A usage event from key pool `pool`, with at most one defect and its refusal.
    fn event(&mut self, source: UsageSource, tenant: &str, installation: &str, pool: &str) -> Made {
        let n = self.rng.random_range(0..30);
        let key = if self.rng.random_bool(0.3) { self.fresh(pool) } else { format!("{pool}{n}") };
        let r = &mut self.rng;
        let mut e = UsageEvent {
            tenant: tenant.into(),
            installation: installation.into(),
            app: "acme/budget-pacing".into(),
            version: "1.4.34".into(),
            sku: SKUS[r.random_range(0..SKUS.len())].into(),
            quantity: r.random_range(1..=3),
            at_ms: AT_MS,
            source,
            idempotency_key: key,
        };
        let roll = r.random_range(0..100);
        // Storable at the limits: the longest key, the largest quantity (on few keys, so
        // the totals stay far inside a BIGINT).
        match roll {
            18..20 => {
                e.idempotency_key =
                    format!("{pool}{}", r.random_range(0..3)).repeat(MAX_KEY_BYTES)[..MAX_KEY_BYTES].into()
            }
            20..21 => (e.idempotency_key, e.quantity) = (format!("max-{pool}{}", r.random_range(0..3)), MAX_QUANTITY),
            _ => {}
        }
        let (_, defect, refusal) = DEFECTS.iter().find(|(below, ..)| roll < *below).unwrap_or(&(0, |_| {}, None));
        defect(&mut e);
        (e, refusal.clone())
    }

    fn call(&mut self, model: &Model) -> Sub {
        let (tenant, installation, quota) = SCOPES[self.rng.random_range(0..SCOPES.len())];
        let call_id = self.fresh("call-");
        let held = model.kv.get(&(tenant.to_string(), installation.to_string())).cloned().unwrap_or_default();
        let mut changes = KvChanges::new();
        for _ in 0..self.rng.random_range(0..=3) {
            let key = format!("k{}", self.rng.random_range(0..6));
            if self.rng.random_bool(0.3) {
                changes.insert(key, None);
                continue;
            }
            // Often exactly what fills the quota (as the model stands), else at random.
            let old = held.get(&key).map_or(0, |v| key.len() + v.len()) as u64;
            let room = (quota + old).checked_sub(bytes(&held) + key.len() as u64);
            let len = match room {
                Some(room) if self.rng.random_bool(0.3) => room as usize,
                _ => self.rng.random_range(0..=40),
            };
            changes.insert(key, Some(vec![b'a' + self.rng.random_range(0..26u8); len]));
        }
        let kv = match self.rng.random_range(0..20) {
            0..3 => None,
            3 => Some(KvWrite { changes: KvChanges::new(), quota }),
            _ => Some(KvWrite { changes, quota }),
        };
        let (mut usage, mut refusals) = (Vec::new(), Vec::new());
        for _ in 0..self.rng.random_range(0..=3) {
            let source = if self.rng.random_bool(0.5) { UsageSource::Host } else { UsageSource::Guest };
            let (e, r) = self.event(source, tenant, installation, "c");
            usage.push(e);
            refusals.push(r);
        }
        let lines = self.rng.random_bool(0.8).then(|| CallLines {
            call_id: call_id.clone(),
            operation: "invoke:op".into(),
            lines: (0..self.rng.random_range(0..=3))
                .map(|n| LogEntry { at_ms: AT_MS, level: "info", message: format!("line {n} of {call_id}") })
                .collect(),
        });
        let scope = KvScope { tenant: tenant.into(), installation: installation.into() };
        let call = CallEffects { call_id, scope, kv, usage: Vec::new(), lines };
        let call = Sub { call: Some(call), events: usage, refusals };
        self.calls.push(call.clone());
        call
    }

    /// A partner batch, now and then with an event again (same or other quantity).
    fn batch(&mut self) -> Sub {
        let (mut events, mut refusals) = (Vec::new(), Vec::new());
        for _ in 0..self.rng.random_range(1..=4) {
            let tenant = if self.rng.random_bool(0.7) { "t" } else { "u" };
            let (e, r) = self.event(UsageSource::Partner, tenant, "i0", "p");
            let again = r.is_none() && self.rng.random_bool(0.2);
            let quantity = if self.rng.random_bool(0.5) { e.quantity } else { e.quantity % 3 + 1 };
            events.push(e.clone());
            refusals.push(r);
            if again {
                events.push(UsageEvent { quantity, ..e });
                refusals.push(None);
            }
        }
        Sub { call: None, events, refusals }
    }

    /// One step's submissions (distinct call ids) and fault.
    fn step(&mut self, model: &Model) -> (Vec<Sub>, Fault) {
        let k = if self.rng.random_bool(0.4) { 1 } else { self.rng.random_range(2..=4) };
        let mut subs: Vec<Sub> = Vec::new();
        while subs.len() < k {
            let sub = match self.rng.random_range(0..10) {
                0..2 if !self.calls.is_empty() => self.calls[self.rng.random_range(0..self.calls.len())].clone(),
                0..6 => self.call(model),
                _ => self.batch(),
            };
            let id = |s: &Sub| s.call.as_ref().map(|c| c.call_id.clone());
            if id(&sub).is_none() || subs.iter().all(|s| id(s) != id(&sub)) {
                subs.push(sub);
            }
        }
        let fault = [Fault::FailGroup, Fault::LoseReply, Fault::Both].get(self.rng.random_range(0..10));
        (subs, fault.copied().unwrap_or(Fault::None))
    }
}

async fn submit(ledger: &Ledger, sub: &Sub) -> Answer {
    let events = sub.events.clone();
    let answer = match &sub.call {
        Some(call) => {
            let call = CallEffects { usage: events, ..call.clone() };
            ledger.commit_call(call, BOUNDS).await.map(|w| match w {
                Ok(events) => Answer::Events(events),
                Err(QuotaHit::Installation(quota)) => Answer::Quota(quota),
                // No tenant quota is set in these stores (no `tenant_quotas` row).
                Err(QuotaHit::Tenant(quota)) => panic!("a tenant quota of {quota} bytes where none is set"),
            })
        }
        None => ledger.record(events).await.map(Answer::Events),
    };
    answer.unwrap_or(Answer::Failed)
}

/// The rows of `sql` with the text parameters `args`.
async fn query(store: &Store, sql: &str, args: &[&str]) -> Vec<sqlx::any::AnyRow> {
    let bound = args.iter().fold(sqlx::query(sql), |q, arg| q.bind(arg.to_string()));
    bound.fetch_all(store.pool()).await.unwrap()
}

fn int(row: &sqlx::any::AnyRow, column: usize) -> u64 {
    row.get::<i64, _>(column) as u64
}

/// The rows `subs` touch, as a slice of the model.
async fn read_slice(store: &Store, subs: &[Sub]) -> Model {
    let mut db = Model::default();
    for sub in subs {
        for (source, key) in sub.ids() {
            let sql = "SELECT tenant, sku, quantity FROM usage_events WHERE source = $1 AND idem_key = $2";
            if let Some(r) = query(store, sql, &[&source, &key]).await.first() {
                db.usage.insert((source, key), (r.get(0), r.get(1), int(r, 2)));
            }
        }
        if let Some(c) = &sub.call {
            db.kv.insert(scope_key(&c.scope), store.kv_load(&c.scope).await.unwrap());
            let sql = "SELECT COUNT(*) FROM installation_logs WHERE call_id = $1";
            let n = int(&query(store, sql, &[&c.call_id]).await[0], 0) as usize;
            if n > 0 {
                db.lines.insert(c.call_id.clone(), n);
            }
        }
    }
    db
}

/// The whole database against the model: totals, every scope's entries and byte count,
/// the number of lines (and, with `every_row`, each event and each call's lines).
async fn check_all(store: &Store, model: &Model, at: &str, every_row: bool) {
    let sql = "SELECT tenant, sku, CAST(SUM(quantity) AS BIGINT), COUNT(*) FROM usage_events GROUP BY tenant, sku";
    let totals: BTreeMap<(String, String), (u64, u64)> =
        query(store, sql, &[]).await.iter().map(|r| ((r.get(0), r.get(1)), (int(r, 2), int(r, 3)))).collect();
    assert_eq!(totals, model.totals(), "{at}: (quantity, events) per (tenant, SKU): database vs model");
    for (tenant, installation, quota) in SCOPES {
        let scope = KvScope { tenant: tenant.into(), installation: installation.into() };
        let want = model.kv.get(&scope_key(&scope)).cloned().unwrap_or_default();
        assert_eq!(store.kv_load(&scope).await.unwrap(), want, "{at}: key-value entries of {tenant}/{installation}");
        let sql = "SELECT bytes FROM kv_usage WHERE tenant = $1 AND installation = $2";
        let counted = query(store, sql, &[tenant, installation]).await.first().map_or(0, |r| int(r, 0));
        assert_eq!(counted, bytes(&want), "{at}: kv_usage bytes of {tenant}/{installation}");
        assert!(counted <= quota, "{at}: {tenant}/{installation} holds {counted} bytes, over its quota {quota}");
    }
    let lines = int(&query(store, "SELECT COUNT(*) FROM installation_logs", &[]).await[0], 0);
    assert_eq!(lines as usize, model.lines.values().sum::<usize>(), "{at}: log lines in all");
    if every_row {
        let sql = "SELECT source, idem_key, tenant, sku, quantity FROM usage_events";
        let usage: HashMap<(String, String), (String, String, u64)> = query(store, sql, &[])
            .await
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), int(r, 4))))
            .collect();
        assert!(usage == model.usage, "{at}: the stored events differ from the model's");
        let sql = "SELECT call_id, COUNT(*) FROM installation_logs GROUP BY call_id";
        let per_call: HashMap<String, usize> =
            query(store, sql, &[]).await.iter().map(|r| (r.get(0), int(r, 1) as usize)).collect();
        assert!(per_call == model.lines, "{at}: the lines per call differ from the model's");
    }
}

/// A store with tenant t's installations i0 and i1 and tenant u's i2 (lines need rows).
async fn setup(database: Option<String>, dir: &std::path::Path) -> Store {
    let url = database.unwrap_or_else(|| format!("sqlite://{}", dir.join("model.db").display()));
    let store = Store::connect(&url).await.unwrap();
    common::register_budget_pacing(&store).await;
    for (tenant, id, _) in SCOPES {
        store.create_tenant(tenant, tenant, "operator").await.unwrap();
        let row = common::budget_pacing_row(tenant, id);
        store.insert_installation(&row, &format!("tenant:{tenant}")).await.unwrap();
    }
    store
}

async fn ledger_against_model(database: Option<String>, backend: &str) {
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}: {v}")));
    let seed = env("KIOSK_MODEL_SEED").unwrap_or_else(|| rand::rng().random());
    let steps = env("KIOSK_MODEL_STEPS").map_or(STEPS, |n| n as usize);
    eprintln!("ledger_model on {backend}: seed {seed} (KIOSK_MODEL_SEED), {steps} steps (KIOSK_MODEL_STEPS)");
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = database.is_none();
    let store = setup(database, dir.path()).await;
    let faults = Arc::new(LedgerFaults::default());
    let ledger = Ledger::start_with_faults(store.clone(), faults.clone());
    let mut model = Model::default();
    let mut script = Script { rng: StdRng::seed_from_u64(seed), step: 0, made: 0, calls: Vec::new() };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for step in 0..steps {
        let at = format!("{backend}, step {step}, seed {seed}");
        script.step = step;
        let (subs, fault) = script.step(&model);
        let set = |counter: &AtomicUsize, on: bool| counter.store(usize::from(on), Ordering::SeqCst);
        set(&faults.fail_groups, matches!(fault, Fault::FailGroup | Fault::Both));
        set(&faults.lose_replies, matches!(fault, Fault::LoseReply | Fault::Both));
        // On SQLite, now and then the writer lock is held while the batch is sent, so that
        // the ledger's thread takes the batch in (at most) two groups rather than one by one.
        let hold = if sqlite && subs.len() > 1 && script.rng.random_bool(0.5) {
            Some(store.begin_write().await.unwrap())
        } else {
            None
        };
        let release = async move {
            if let Some(tx) = hold {
                tokio::task::yield_now().await;
                tx.rollback().await.unwrap();
            }
        };
        let (answers, ()) =
            tokio::join!(futures_util::future::join_all(subs.iter().map(|s| submit(&ledger, s))), release);
        let left = (faults.fail_groups.load(Ordering::SeqCst), faults.lose_replies.load(Ordering::SeqCst));
        assert_eq!(left, (0, 0), "{at}: the injected fault {fault:?} was taken");
        let db = read_slice(&store, &subs).await;
        let Some((part, _)) = explanations(&model, &subs, fault).find(|(part, a)| *a == answers && part.same_rows(&db))
        else {
            let (part, expected) = explanations(&model, &subs, fault).next().unwrap();
            panic!(
                "{at}: no serial order of the {} submissions (fault {fault:?}) explains the ledger.\n\
                 answers: {answers:?}\nthe model, in submission order: {expected:?}\n\
                 rows touched, database: {}\nmodel, in submission order: {}\nsubmissions:\n{}",
                subs.len(),
                db.show(),
                part.show(),
                subs.iter().map(Sub::show).collect::<Vec<_>>().join("\n")
            );
        };
        let full = part.kv.iter().filter(|((_, i), e)| SCOPES.iter().any(|s| s.1 == i && bytes(e) == s.2)).count();
        *seen.entry("scope left at its quota".into()).or_default() += full;
        model.merge(part);
        for answer in &answers {
            let kinds = match answer {
                Answer::Events(outcomes) => outcomes.iter().map(|o| format!("{o:?}")).collect(),
                other => vec![format!("{other:?}")],
            };
            for kind in kinds {
                *seen.entry(kind.split([' ', '(']).next().unwrap_or_default().into()).or_default() += 1;
            }
        }
        *seen.entry(format!("fault {fault:?}")).or_default() += 1;
        check_all(&store, &model, &at, step + 1 == steps).await;
    }
    eprintln!("ledger_model on {backend}: {steps} steps in {:.1?}; {seen:?}", started.elapsed());
}

#[tokio::test]
async fn the_ledger_matches_its_model_on_sqlite() {
    ledger_against_model(None, "SQLite").await;
}

#[tokio::test]
async fn the_ledger_matches_its_model_on_postgresql() {
    ledger_against_model(Some(common::fresh_postgres_database().await), "PostgreSQL").await;
}
