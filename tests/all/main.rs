//! Kiosk's end-to-end tests, as one test binary (`all`, declared in host/Cargo.toml).
//!
//! Every suite is a module of this crate: `tests/all/<suite>.rs` (or
//! `tests/all/<suite>/mod.rs` with its own submodules, as `egress`), and all of them
//! share the helpers of [`common`] (`tests/all/common/`: guest components and
//! manifests, an in-process `kiosk serve` and one HTTP client for every suite
//! (`common::api`), the real binary as a child process, a fresh PostgreSQL database per
//! test, gpg keys, a real registry). One binary links wasmtime and the host once, instead
//! of once per suite.
//!
//! The guests the suites load (`tests/guests/`), the console's tests (`tests/console/`),
//! the ORAS interop script (`tests/interop/`) and the committed snapshots
//! (`tests/snapshots/`) stay beside this directory, found from `CARGO_MANIFEST_DIR`.
//!
//! A test's name is its module path, so a filter picks a suite, a test or any set:
//!
//! ```text
//! cargo test --release --test all                         # every suite
//! cargo test --release --test all sandbox::               # one suite
//! cargo test --release --test all egress::policy::        # part of one
//! cargo test --release --test all postgres                # every test on PostgreSQL
//! cargo test --release --test all -- --exact store::store_suite_on_sqlite   # one test
//! cargo test --release --test all -- --list               # what there is
//! ```
//!
//! The suites run in one process, on the harness's threads at once: a test must not
//! change process-wide state (environment variables, the current directory, a global
//! recorder) and names whatever it shares outside the process (ports, databases,
//! directories) uniquely — `common::registry::free_port`, `common::fresh_postgres_database`
//! and temporary directories do. A test that measures the whole process (its resident
//! memory, the metrics recorder the in-process servers share) runs alone in a child
//! process of this binary: `common::alone`.
//!
//! The components are built for wasm32-wasip2 first; `.ci/test` does that and runs them.

#![allow(clippy::unwrap_used)]

mod common;

mod admin_cli;
mod artifact;
mod audit_tx;
mod cache;
mod catalog_export;
mod catalog_meta;
mod cert_paths;
mod cli;
mod collector;
mod containment;
mod crash;
mod drain;
mod egress;
mod estate;
mod faults;
mod hygiene;
mod idempotency;
mod ledger;
mod ledger_model;
mod ledger_retry;
mod lifecycle_race;
mod limits;
mod logs;
mod new_app;
mod openapi;
mod operations;
mod partner_usage;
mod policies;
mod polyglot;
mod private_apps;
mod registry;
mod registry_mtls;
mod replicas;
mod revocation;
mod sandbox;
mod secrets;
mod serve_process;
mod server;
mod statements;
mod storage_down;
mod store;
mod tenant_quotas;
mod trust;
mod trust_boundaries;
mod uninstall;
mod uninstall_race;
mod usage_export;
mod watch;
