//! Kiosk's property and fuzz targets, as one test binary (`fuzz`, declared in
//! host/Cargo.toml), on stable Rust: every parser that takes input from a hostile party
//! (a partner's manifest and artifact, a registry's answers, an uploaded certificate or
//! signature, a guest's records and keys, a request body) is a target, a `#[test]` that
//! runs it through [`harness::fuzz`]: first the checked-in corpus
//! (`tests/fuzz/corpus/<target>/`) and the saved failures
//! (`tests/fuzz/regressions/<target>.txt`), then new cases until the target's time budget
//! ends. Each target checks invariants, not only the absence of panics.
//!
//! ```text
//! cargo test --release --test fuzz                        # every target, a few seconds each
//! KIOSK_FUZZ_SECONDS=60 cargo test --release --test fuzz manifest -- --nocapture
//! bash .ci/fuzz 30m                                       # every target 30 minutes, random seeds
//! bash .ci/fuzz 30m manifest                              # one target
//! KIOSK_FUZZ_SEED=<64 hex digits> cargo test --release --test fuzz <target>   # replay a seed
//! ```
//!
//! Environment: `KIOSK_FUZZ_SECONDS` (budget per target, default in `harness.rs`),
//! `KIOSK_FUZZ_RANDOM=1` (a random seed per target, printed), `KIOSK_FUZZ_SEED`.
//! `-- --nocapture` shows each target's count of cases.

#![allow(clippy::unwrap_used)]

mod harness;

mod api;
mod config;
mod icon;
mod manifest;
mod oci;
mod openpgp;
mod resolve;
mod usage;
