//! The time-budgeted harness every target runs on: `fuzz(target, strategy, property)`.
//!
//! 1. Every file of `tests/fuzz/corpus/<target>/` (`Input::from_file`) and every case of
//!    `tests/fuzz/regressions/<target>.txt` (`Input::decode`, one a line) is checked first.
//! 2. Then new cases from `strategy` run on a proptest `TestRunner` until the target's
//!    budget ends (`KIOSK_FUZZ_SECONDS`, counted from the target's start). A failing case
//!    is shrunk by proptest, printed, and appended to the regression file, so that the
//!    next run replays it first; the test then fails.
//!
//! Seeds: per target and deterministic by default (CI runs the same cases each time, as
//! many as the budget allows); `KIOSK_FUZZ_RANDOM=1` draws one and prints it;
//! `KIOSK_FUZZ_SEED=<64 hex digits>` replays one.
//!
//! Byte-level targets get `mutated` (corpus files with bit flips, byte inserts and
//! deletes, duplicated ranges, splices, truncation and target tokens) beside their
//! structured strategies; `json_value` and `text` build structured JSON.

use std::fmt::Debug;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestError, TestRng, TestRunner};
use serde_json::Value;

/// 4 s per target: 14 targets on the test harness's 2 threads take ~30 s, well under 2 minutes.
const DEFAULT_SECONDS: f64 = 4.0;

/// Most shrinking steps for one failure (each runs the property once).
const MAX_SHRINK_ITERS: u32 = 20_000;

/// An input of a target: how a regression line and a corpus file become one.
pub trait Input: Clone + Debug {
    /// One line (no line break) that `decode` reads back.
    fn encode(&self) -> String;
    fn decode(line: &str) -> Option<Self>;
    /// A corpus file as an input; `None`: the target takes no such file.
    fn from_file(bytes: &[u8]) -> Option<Self>;
}

/// Bytes: a JSON string when they are UTF-8 (readable), else `hex:…`.
impl Input for Vec<u8> {
    fn encode(&self) -> String {
        match std::str::from_utf8(self) {
            Ok(text) => serde_json::to_string(text).unwrap_or_default(),
            Err(_) => format!("hex:{}", hex(self)),
        }
    }

    fn decode(line: &str) -> Option<Self> {
        match line.strip_prefix("hex:") {
            Some(digits) => unhex(digits.trim()),
            None => serde_json::from_str::<String>(line).ok().map(String::into_bytes),
        }
    }

    fn from_file(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

/// A structured input (a serde type) encoded as one line of JSON; corpus files are
/// JSON documents of the type.
#[macro_export]
macro_rules! json_input {
    ($t:ty) => {
        impl $crate::harness::Input for $t {
            fn encode(&self) -> String {
                serde_json::to_string(self).unwrap_or_default()
            }
            fn decode(line: &str) -> Option<Self> {
                serde_json::from_str(line).ok()
            }
            fn from_file(bytes: &[u8]) -> Option<Self> {
                serde_json::from_slice(bytes).ok()
            }
        }
    };
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(digits: &str) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) || !digits.is_ascii() {
        return None;
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok()).collect()
}

/// `tests/fuzz/` in the source tree.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz")
}

/// The corpus files of `target`, recursively, sorted by path.
pub fn corpus_files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    let mut out = Vec::new();
    walk(&fuzz_dir().join("corpus").join(target), &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The corpus of `target` as bytes only.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    corpus_files(target).into_iter().map(|(_, bytes)| bytes).collect()
}

fn regression_file(target: &str) -> PathBuf {
    fuzz_dir().join("regressions").join(format!("{target}.txt"))
}

fn budget() -> Duration {
    let seconds = std::env::var("KIOSK_FUZZ_SECONDS").ok().and_then(|s| s.trim().parse::<f64>().ok());
    Duration::from_secs_f64(seconds.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(DEFAULT_SECONDS))
}

/// The target's seed: `KIOSK_FUZZ_SEED`, a random one with `KIOSK_FUZZ_RANDOM=1`, else one
/// derived from the target's name.
fn seed(target: &str) -> [u8; 32] {
    if let Some(given) = std::env::var("KIOSK_FUZZ_SEED").ok().filter(|s| !s.trim().is_empty()) {
        let bytes = unhex(given.trim()).filter(|b| b.len() == 32);
        return bytes.and_then(|b| b.try_into().ok()).expect("KIOSK_FUZZ_SEED must be 64 hex digits");
    }
    if std::env::var("KIOSK_FUZZ_RANDOM").is_ok_and(|v| v == "1") {
        return rand::random();
    }
    // FNV-1a of the name, stretched by splitmix64.
    let mut state =
        target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    seed
}

thread_local! {
    static IN_PROPERTY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics inside a property are failures the harness reports (after shrinking, which
/// may panic thousands of times): the default hook stays silent for them only.
fn quiet_panics_in_properties() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_PROPERTY.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs `property` on `input`, a panic being a failure.
fn check_one<T>(property: &impl Fn(T) -> TestCaseResult, input: T) -> Result<(), String> {
    IN_PROPERTY.with(|p| p.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(input)));
    IN_PROPERTY.with(|p| p.set(false));
    match outcome {
        Ok(Ok(())) | Ok(Err(proptest::test_runner::TestCaseError::Reject(_))) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic_text(&*panic)),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Appends a failing case to the target's regression file.
fn save_regression<T: Input>(target: &str, input: &T, reason: &str, seed: &[u8; 32]) -> PathBuf {
    let path = regression_file(target);
    let reason: String = reason.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(400).collect();
    let entry = format!("# found with seed {}: {reason}\n{}\n", hex(seed), input.encode());
    let written = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&path))
        .and_then(|mut f| f.write_all(entry.as_bytes()));
    if let Err(e) = written {
        eprintln!("fuzz {target}: could not save the case to {}: {e}", path.display());
    }
    path
}

/// Checks `property` on the target's corpus and regressions, then on new cases of
/// `strategy` until the budget ends. Panics (failing the test) on the first failure.
pub fn fuzz<S>(target: &str, strategy: S, property: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Input,
{
    quiet_panics_in_properties();
    let started = Instant::now();
    let deadline = started + budget();
    let files = corpus_files(target);
    let mut replayed = 0;
    for (path, bytes) in &files {
        if let Some(input) = S::Value::from_file(bytes) {
            replayed += 1;
            if let Err(reason) = check_one(&property, input.clone()) {
                panic!("fuzz {target}: corpus file {} fails: {reason}\ninput: {input:?}", path.display());
            }
        }
    }
    let regressions = std::fs::read_to_string(regression_file(target)).unwrap_or_default();
    let mut regressed = 0;
    for (n, line) in regressions.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let input = S::Value::decode(line).unwrap_or_else(|| {
            panic!("fuzz {target}: line {} of {} is not an input", n + 1, regression_file(target).display())
        });
        regressed += 1;
        if let Err(reason) = check_one(&property, input.clone()) {
            panic!(
                "fuzz {target}: regression case (line {} of {}) fails again: {reason}\ninput: {input:?}",
                n + 1,
                regression_file(target).display()
            );
        }
    }

    let seed = seed(target);
    let config = Config {
        failure_persistence: None,
        max_shrink_iters: MAX_SHRINK_ITERS,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let mut cases: u64 = 0;
    // At least one case, however small the budget.
    while cases == 0 || Instant::now() < deadline {
        let tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(reason) => panic!("fuzz {target}: the strategy gave up: {reason}"),
        };
        let result = runner.run_one(tree, |input| {
            IN_PROPERTY.with(|p| p.set(true));
            let result = property(input);
            IN_PROPERTY.with(|p| p.set(false));
            result
        });
        IN_PROPERTY.with(|p| p.set(false));
        cases += 1;
        match result {
            Ok(_) => {}
            Err(TestError::Fail(reason, minimal)) => {
                let saved = save_regression(target, &minimal, &reason.to_string(), &seed);
                panic!(
                    "fuzz {target}: case {cases} fails: {reason}\nminimal input: {minimal:?}\nencoded: {}\n\
                     saved to {} (replayed first from now on); seed {} (KIOSK_FUZZ_SEED)",
                    minimal.encode(),
                    saved.display(),
                    hex(&seed)
                );
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {target}: aborted: {reason}"),
        }
    }
    println!(
        "fuzz {target}: {replayed} corpus files, {regressed} regressions, {cases} new cases in {:.1} s (seed {})",
        started.elapsed().as_secs_f64(),
        hex(&seed)
    );
}

// --- strategies --------------------------------------------------------------------------

/// One edit of a corpus file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Duplicate(Index, Index, usize),
    Splice(Index, Index, Index, usize),
    Truncate(Index),
    Token(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        2 => (any::<Index>(), interesting_byte()).prop_map(|(at, b)| Mutation::SetByte(at, b)),
        2 => (any::<Index>(), proptest::collection::vec(interesting_byte(), 1..8)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => (any::<Index>(), 1usize..32).prop_map(|(at, len)| Mutation::Delete(at, len)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(from, to, len)| Mutation::Duplicate(from, to, len)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..256)
            .prop_map(|(at, other, from, len)| Mutation::Splice(at, other, from, len)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Mutation::Token(at, token)),
    ]
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0u8, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'\n', b'='
        ])
    ]
}

/// Tokens every byte-level target splices in, besides its own.
#[rustfmt::skip]
const COMMON_TOKENS: &[&str] = &[
    "\"", "\\", "{", "}", "[", "]", ",", ":", "null", "true", "false", "0", "-1", "1.5", "1e999", "-0",
    "18446744073709551616", "9007199254740992", "-9223372036854775809", "\"\\u0000\"", "\\u0000",
    "\"\\ud800\"", "é", "\u{202e}", "\"\":", "{}", "[]", "\"x\":1,",
];

fn apply(base: &[u8], mutations: &[Mutation], corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = base.to_vec();
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    for m in mutations {
        let len = out.len();
        match m {
            Mutation::FlipBit(i, bit) => {
                if len > 0 {
                    let i = i.index(len);
                    out[i] ^= 1 << bit;
                }
            }
            Mutation::SetByte(i, b) => {
                if len > 0 {
                    let i = i.index(len);
                    out[i] = *b;
                }
            }
            Mutation::Insert(i, bytes) => {
                let i = at(i, len);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                if len > 0 {
                    let i = i.index(len);
                    out.drain(i..(i + n).min(len));
                }
            }
            Mutation::Duplicate(from, to, n) => {
                if len > 0 {
                    let from = from.index(len);
                    let piece = out[from..(from + n).min(len)].to_vec();
                    let to = at(to, len);
                    out.splice(to..to, piece);
                }
            }
            Mutation::Splice(i, other, from, n) => {
                if !corpus.is_empty() {
                    let other = &corpus[other.index(corpus.len())];
                    if !other.is_empty() {
                        let from = from.index(other.len());
                        let i = at(i, len);
                        out.splice(i..i, other[from..(from + n).min(other.len())].iter().copied());
                    }
                }
            }
            Mutation::Truncate(i) => out.truncate(at(i, len)),
            Mutation::Token(i, token) => {
                let token = if token.index(2) == 0 || tokens.is_empty() {
                    COMMON_TOKENS[token.index(COMMON_TOKENS.len())].as_bytes()
                } else {
                    tokens[token.index(tokens.len())]
                };
                let i = at(i, len);
                out.splice(i..i, token.iter().copied());
            }
        }
    }
    out
}

/// A corpus file of `target` with 1-8 mutations (`tokens`: the target's own, beside the
/// common JSON and text ones). Shrinks towards fewer mutations, then the file as is.
pub fn mutated(target: &str, tokens: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    let corpus = Arc::new(corpus(target));
    if corpus.is_empty() {
        return proptest::collection::vec(any::<u8>(), 0..256).boxed();
    }
    let files = corpus.len();
    (0..files, proptest::collection::vec(mutation(), 1..8))
        .prop_map(move |(file, mutations)| apply(&corpus[file], &mutations, &corpus, tokens))
        .boxed()
}

/// Text that finds edges: short ASCII, any Unicode, control characters and NUL, long runs.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9-]{0,12}",
        2 => "[ -~]{0,24}",
        2 => any::<String>(),
        1 => prop::sample::select(vec![
            String::new(), " ".into(), "\0".into(), "a\0b".into(), "~".into(), "/".into(), "~1".into(), "~0".into(),
            "..".into(), "\u{202e}".into(), "é".into(), "-".into(), "_".into(), "\n".into(), "x".repeat(300),
        ]),
    ]
    .boxed()
}

/// Any JSON value, object keys mostly drawn from `keys` (a target's member names) so
/// that the documents reach past the first unknown-field refusal.
pub fn json_value(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 2, 5, 1000, 1 << 53, (1 << 53) + 1, i64::MAX, i64::MIN])
            .prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(keys), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An object key: one of `keys`, or any text.
pub fn key(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    if keys.is_empty() {
        return text();
    }
    prop_oneof![4 => prop::sample::select(keys).prop_map(str::to_string), 1 => text()].boxed()
}

/// `object` with members replaced, added or removed, at the top level or one level down:
/// documents that keep most of a valid shape.
pub fn edited_object(object: Value, keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    #[derive(Debug, Clone)]
    enum Edit {
        Set(Option<Index>, String, Value),
        Remove(Option<Index>, Index),
    }
    let edit = prop_oneof![
        (proptest::option::of(any::<Index>()), key(keys), json_value(keys)).prop_map(|(p, k, v)| Edit::Set(p, k, v)),
        (proptest::option::of(any::<Index>()), any::<Index>()).prop_map(|(p, i)| Edit::Remove(p, i)),
    ];
    proptest::collection::vec(edit, 1..4)
        .prop_map(move |edits| {
            let mut doc = object.clone();
            for edit in edits {
                let parent = match &edit {
                    Edit::Set(p, ..) | Edit::Remove(p, _) => *p,
                };
                let target = match parent {
                    None => Some(&mut doc),
                    Some(i) => {
                        let members: Vec<String> =
                            doc.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                        if members.is_empty() {
                            None
                        } else {
                            let name = members[i.index(members.len())].clone();
                            doc.get_mut(&name)
                        }
                    }
                };
                match (target, edit) {
                    (Some(Value::Object(map)), Edit::Set(_, k, v)) => {
                        map.insert(k, v);
                    }
                    (Some(Value::Object(map)), Edit::Remove(_, i)) if !map.is_empty() => {
                        let name = map.keys().nth(i.index(map.len())).cloned().unwrap_or_default();
                        map.remove(&name);
                    }
                    (Some(Value::Array(items)), Edit::Set(_, _, v)) => items.push(v),
                    (Some(Value::Array(items)), Edit::Remove(_, i)) if !items.is_empty() => {
                        let n = items.len();
                        items.remove(i.index(n));
                    }
                    _ => {}
                }
            }
            doc
        })
        .boxed()
}
