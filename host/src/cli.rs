//! The `kiosk` command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::CacheOutcome;
use crate::kv::MemoryKv;
use crate::limits::SandboxLimits;
use crate::logs::LogStore;
use crate::manifest::{ConfigSchema, Manifest};
use crate::metering::{MemorySink, now_ms};
use crate::runtime::{CallOutcome, Installation, Runtime, RuntimeSettings, Services, window_containing};
use crate::world::HOST_API_VERSION;

/// Kiosk: a WebAssembly plugin host for marketplace apps.
#[derive(Debug, Parser)]
#[command(name = "kiosk", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one app for one tenant: validate-config, install, invoke, report; prints the
    /// output, the metered usage and the logs.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The app's component (.wasm).
    component: PathBuf,
    /// The app manifest (manifest.json).
    #[arg(long)]
    manifest: PathBuf,
    /// The tenant to run as.
    #[arg(long)]
    tenant: String,
    /// The installation configuration, as JSON (or @file).
    #[arg(long, default_value = "{}")]
    config: String,
    /// The operation to invoke.
    #[arg(long)]
    invoke: String,
    /// The operation's input, as JSON (or @file).
    #[arg(long, default_value = "{}")]
    input: String,
    /// The installation id (default: `<tenant>-<app name>`).
    #[arg(long)]
    installation: Option<String>,
    /// Operator configuration (TOML) with a `[sandbox]` table of limits.
    #[arg(long, env = "KIOSK_CONFIG")]
    operator_config: Option<PathBuf>,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/kiosk/components).
    #[arg(long, env = "KIOSK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// The operator configuration file, as far as the CLI uses it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorConfig {
    #[serde(default)]
    sandbox: SandboxLimits,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KIOSK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_arg(value: &str, what: &str) -> anyhow::Result<Value> {
    let text = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {what} file {path}"))?,
        None => value.to_string(),
    };
    serde_json::from_str(&text).with_context(|| format!("--{what} is not valid JSON"))
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("kiosk").join("components"))
}

fn refused<T>(step: &str, outcome: &CallOutcome<T>) -> anyhow::Result<()> {
    if let Err(refusal) = &outcome.result {
        bail!("{step}: {refusal}");
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let operator: OperatorConfig = match &args.operator_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read operator config {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("operator config {} is not valid", path.display()))?
        }
        None => OperatorConfig::default(),
    };
    let manifest_bytes =
        std::fs::read(&args.manifest).with_context(|| format!("cannot read manifest {}", args.manifest.display()))?;
    let manifest = Manifest::parse(&manifest_bytes, &HOST_API_VERSION)
        .with_context(|| format!("manifest {} refused", args.manifest.display()))?;
    let schema = ConfigSchema::compile(&manifest.config)?;
    let config = schema.resolve(read_arg(&args.config, "config")?).context("--config refused")?;
    let input = read_arg(&args.input, "input")?;
    let wasm = std::fs::read(&args.component)
        .with_context(|| format!("cannot read component {}", args.component.display()))?;

    let sink = Arc::new(MemorySink::default());
    let logs = Arc::new(LogStore::new(operator.sandbox.log_buffer_bytes));
    let services = Services { kv: Arc::new(MemoryKv::default()), logs: logs.clone(), metering: sink.clone() };
    let cache_dir = args.cache_dir.clone().or_else(default_cache_dir);
    let runtime = Runtime::new(RuntimeSettings { limits: operator.sandbox, cache_dir }, services)?;

    let started = Instant::now();
    let component = Arc::new(runtime.load(&wasm)?);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let app = runtime.prepare(manifest, component.clone());
    let name = app.manifest.app.rsplit('/').next().unwrap_or("app").to_string();
    let inst =
        Installation::new(&args.tenant, args.installation.clone().unwrap_or_else(|| format!("{}-{name}", args.tenant)));

    let config_text = config.to_string();
    refused("validate-config", &runtime.validate_config(&app, &inst, &config_text)?)?;
    refused("install", &runtime.install(&app, &inst, &config_text)?)?;
    let started = Instant::now();
    let invoked = runtime.invoke(&app, &inst, &args.invoke, &input.to_string())?;
    let invoke_ms = started.elapsed().as_secs_f64() * 1000.0;
    let output = match &invoked.result {
        Ok(text) => serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.clone())),
        Err(refusal) => bail!("invoke {}: {refusal}", args.invoke),
    };
    let reported = runtime.report(&app, &inst, window_containing(now_ms(), Duration::from_secs(3600)))?;
    refused("report", &reported)?;
    let refused_records = reported.result.as_ref().map(|r| r.refused.clone()).unwrap_or_default();

    let cache = match &component.outcome {
        CacheOutcome::Hit => "hit".to_string(),
        CacheOutcome::Compiled => "compiled".to_string(),
        CacheOutcome::Rebuilt { reason } => format!("rebuilt ({reason})"),
    };
    let usage = sink.events();
    let log_lines = logs.lines(&inst.scope());
    if args.json {
        let doc = json!({
            "app": app.manifest.app,
            "version": app.manifest.version.to_string(),
            "tenant": inst.tenant,
            "installation": inst.id,
            "component": {"digest": component.digest.as_str(), "cache": cache, "loadMs": load_ms},
            "operation": args.invoke,
            "invokeMs": invoke_ms,
            "output": output,
            "usage": usage,
            "refusedUsage": refused_records,
            "logs": log_lines,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "app        {}@{} for tenant {} (installation {})",
        app.manifest.app, app.manifest.version, inst.tenant, inst.id
    );
    println!("component  {} ({cache}, ready in {load_ms:.1} ms)", component.digest);
    println!("invoke     {} in {invoke_ms:.2} ms", args.invoke);
    println!("\noutput:\n{}", serde_json::to_string_pretty(&output)?);
    println!("\nusage:");
    for e in &usage {
        println!(
            "  {:<22} {:>8}  {:<7} {}",
            e.sku,
            e.quantity,
            format!("{:?}", e.source).to_lowercase(),
            e.idempotency_key
        );
    }
    for r in &refused_records {
        println!("  refused {} x{}: {}", r.sku, r.quantity, r.reason);
    }
    println!("\nlogs:");
    for l in &log_lines {
        println!("  {:<5} {}", format!("{:?}", l.level).to_lowercase(), l.message);
    }
    Ok(())
}
