//! The `kiosk` command line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use kiosk_core::config::OperatorConfig;
use kiosk_core::error::{Failure, Kind};
use kiosk_core::lifecycle::InstallRequest;
use kiosk_core::local::register_local_build;
use kiosk_distribution::artifact::{
    ArtifactError, ArtifactRef, BlobSource, LayoutSource, SizeCaps, VerifiedArtifact, fetch_verified,
};
use kiosk_distribution::icon::{IconFormat, check_icon};
use kiosk_distribution::registry::Registry;
use kiosk_domain::manifest::Manifest;
use kiosk_domain::metering::now_ms;
use kiosk_runtime::cache::CacheOutcome;
use kiosk_runtime::runtime::{Installation, window_containing};
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::EntitlementRow;

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
    /// Signs an app's manifest and component and pushes them as an OCI artifact
    /// (to `host/repository:tag`, or `oci-layout:<dir>:<tag>`).
    Publish(PublishArgs),
    /// Pulls and verifies an artifact without installing it; prints app, version,
    /// digests and signer.
    Verify(SourceArgs),
    /// Pulls, verifies, caches and pins an artifact, and compiles its component.
    Pull(SourceArgs),
    /// Writes a starter app (manifest, WIT, source, build script, a `kiosk run`
    /// invocation) in Rust, Python or JavaScript.
    New(crate::new::NewArgs),
    /// Runs the HTTP API server.
    Serve(ServeArgs),
    /// The operator's tasks over the HTTP API: partners, tenants, tokens, limits, logs, …
    Admin(crate::admin::AdminArgs),
    /// The public catalog as static files: `export DIR`, signed for mirroring.
    #[command(subcommand)]
    Catalog(crate::catalog_export::CatalogCmd),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "KIOSK_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// `sqlite://FILE` or `postgres://…` (default: SQLite in the data directory).
    #[arg(long, env = "KIOSK_DATABASE_URL")]
    database: Option<String>,
    /// Operator configuration (TOML).
    #[arg(long, env = "KIOSK_CONFIG")]
    config: Option<PathBuf>,
    /// Demo: sign and register `manifest.json=component.wasm` from a local OCI layout,
    /// create tenant `demo` and print tokens.
    #[arg(long = "demo-app", value_name = "MANIFEST=WASM")]
    demo_apps: Vec<String>,
    /// How the log (stderr) is written: `text` or `json` (default: `[server] log-format`
    /// of the config, else text).
    #[arg(long, env = "KIOSK_LOG_FORMAT")]
    log_format: Option<kiosk_server::ops::LogFormat>,
}

/// How to reach a registry (overrides the operator config for this host).
#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// Use plain HTTP for the registry (only for registries you trust on the path).
    #[arg(long)]
    insecure: bool,
    /// PEM file of CA certificates to trust for the registry.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Registry user (password from KIOSK_REGISTRY_PASSWORD).
    #[arg(long, env = "KIOSK_REGISTRY_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "KIOSK_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A registry bearer token.
    #[arg(long, env = "KIOSK_REGISTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Operator configuration (TOML): registries, partners, caps, data directory.
    #[arg(long, env = "KIOSK_CONFIG")]
    operator_config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// An app directory (with manifest.json and one .wasm) or the two files, then the
    /// target reference.
    #[arg(required = true, num_args = 2..)]
    inputs: Vec<PathBuf>,
    /// The partner's OpenPGP secret key (unencrypted), e.g. from `gpg --export-secret-keys`.
    #[arg(long)]
    key: PathBuf,
    /// The app's icon for the catalog: a PNG or JPEG file (`.png`, `.jpg`), square,
    /// 16-1024 px a side; checked here as Kiosk checks it, then signed and pushed as a layer.
    #[arg(long, value_name = "FILE")]
    icon: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// `host/repository:tag`, or `oci-layout:<dir>:<tag>`.
    reference: String,
    /// The app (`partner/name`); default: the last two path segments of the repository.
    #[arg(long)]
    app: Option<String>,
    /// Trust a partner certificate: `partner=cert.asc` (in addition to the operator config).
    #[arg(long = "cert", value_name = "PARTNER=FILE")]
    certs: Vec<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
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
    /// Send the app's requests for a declared destination to a stand-in of that API on
    /// this machine: `--mock https://api.acme.example=http://127.0.0.1:8080` (loopback
    /// only; repeatable). The request keeps the declared name in `Host`.
    #[arg(long = "mock", value_name = "DESTINATION=URL")]
    mocks: Vec<String>,
    /// Run against this store (`sqlite://…` or `postgres://…`) instead of a fresh one:
    /// its entitlements apply, and the build is registered there (a version already
    /// registered must be this very build).
    #[arg(long)]
    database: Option<String>,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/kiosk/components).
    #[arg(long, env = "KIOSK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Most log lines `kiosk run` prints (the installation's bound applies first).
const RUN_LOG_LINES: i64 = 1000;

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        || tracing_subscriber::EnvFilter::try_from_env("KIOSK_LOG").unwrap_or_else(|_| "warn,kiosk=info".into());
    // `kiosk serve` installs its own, once its log format is known (flag, variable, config).
    if !matches!(cli.command, Command::Serve(_)) {
        kiosk_server::ops::init_logging(kiosk_server::ops::LogFormat::Text, filter());
    }
    let result = match cli.command {
        Command::Run(args) => tokio_runtime().and_then(|rt| rt.block_on(run(args))),
        Command::New(args) => crate::new::new_app(&args).map(|dir| {
            println!(
                "created {}: `cd {}`, build it with `bash build.sh`, then run it with `bash try.sh`",
                dir.display(),
                dir.display()
            );
        }),
        Command::Publish(args) => tokio_runtime().and_then(|rt| rt.block_on(publish(args))),
        Command::Verify(args) => tokio_runtime().and_then(|rt| rt.block_on(verify(args, false))),
        Command::Pull(args) => tokio_runtime().and_then(|rt| rt.block_on(verify(args, true))),
        Command::Serve(args) => tokio_runtime().and_then(|rt| {
            rt.block_on(kiosk_server::serve::run(
                kiosk_server::serve::ServeOptions {
                    listen: args.listen,
                    database: args.database,
                    config: args.config,
                    demo_apps: args.demo_apps,
                    log_format: args.log_format,
                },
                filter(),
            ))
        }),
        Command::Admin(args) => tokio_runtime().and_then(|rt| rt.block_on(crate::admin::run(args))),
        Command::Catalog(cmd) => tokio_runtime().and_then(|rt| rt.block_on(crate::catalog_export::run(cmd))),
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

/// Guest text for a terminal: strings inside the output are stripped of control and
/// bidi-override characters (serde_json escapes controls but not bidi overrides).
fn terminal_safe(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(kiosk_runtime::logs::sanitize(s)),
        Value::Array(items) => Value::Array(items.iter().map(terminal_safe).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (kiosk_runtime::logs::sanitize(k), terminal_safe(v))).collect())
        }
        other => other.clone(),
    }
}

/// A core failure for the terminal: the detail, then each problem found.
fn failed(step: &str, f: Failure) -> anyhow::Error {
    let mut text = format!("{step}: {}", f.detail);
    for e in &f.errors {
        text.push_str(&format!("\n  {e}"));
    }
    anyhow::anyhow!(text)
}

/// `kiosk run`: the partner's local loop, through the same lifecycle as the API. The
/// build is signed with a local key and registered in a store — a fresh SQLite database
/// in a temporary directory, or `--database` — then installed, invoked and asked for its
/// usage report. In a fresh store the tenant is granted the licence the app requires (no
/// one else could); in a given store, its entitlements apply as they would in the API.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut operator = match &args.operator_config {
        Some(path) => OperatorConfig::load(path)?,
        None => OperatorConfig::default(),
    };
    for mock in &args.mocks {
        let (destination, to) = mock.split_once('=').with_context(|| {
            format!("--mock {mock:?} must be DESTINATION=URL, e.g. https://api.acme.example=http://127.0.0.1:8080")
        })?;
        let rule =
            kiosk_runtime::egress::settings::MockRule { destination: destination.to_string(), to: to.to_string() };
        rule.parse().map_err(|e| anyhow::anyhow!("--mock: {e}"))?;
        operator.egress.mocks.push(rule);
    }
    let manifest_bytes =
        std::fs::read(&args.manifest).with_context(|| format!("cannot read manifest {}", args.manifest.display()))?;
    let manifest = Manifest::parse(&manifest_bytes, &HOST_API_VERSION)
        .with_context(|| format!("manifest {} refused", args.manifest.display()))?;
    let config = read_arg(&args.config, "config")?;
    let input = read_arg(&args.input, "input")?;
    let wasm = std::fs::read(&args.component)
        .with_context(|| format!("cannot read component {}", args.component.display()))?;

    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let ephemeral = args.database.is_none();
    if ephemeral {
        operator.data_dir = Some(scratch.path().to_path_buf());
    }
    let cache_dir = args.cache_dir.clone().or_else(default_cache_dir);
    let kiosk = kiosk_core::host::open(operator, args.database.clone(), cache_dir).await?;
    let key_dir = kiosk.config().data_dir().join("local");
    // Registration compiles the component (or loads it from the cache): "ready in"
    // covers signing, verification, compilation and the instantiation check.
    let started = Instant::now();
    let version = register_local_build(&kiosk, &manifest_bytes, &wasm, &key_dir, "cli").await?;
    kiosk.ensure_tenant(&args.tenant, &args.tenant, "cli").await?;
    if ephemeral && manifest.licensing.requires_entitlement {
        let grant =
            EntitlementRow { tenant: args.tenant.clone(), app: version.app.clone(), expires_ms: None, revoked: false };
        kiosk.grant(&grant, "cli").await?;
    }

    let app = kiosk.app_version(&version).await.map_err(|f| failed("load", f))?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let component = app.component.clone();
    let name = app.manifest.app.rsplit('/').next().unwrap_or("app").to_string();
    let id = args.installation.clone().unwrap_or_else(|| format!("{}-{name}", args.tenant));
    let request = InstallRequest {
        app: version.app.clone(),
        version: Some(version.version.clone()),
        track: None,
        config: Some(config),
        id: Some(id),
        ..InstallRequest::default()
    };
    let row = kiosk.install(&args.tenant, request, "cli").await.map_err(|f| match f.kind {
        Kind::ConfigInvalid => failed("--config refused", f),
        _ => failed("install", f),
    })?;
    let inst = Installation::new(&row.tenant, &row.id);
    let started = Instant::now();
    let invoked = kiosk.invoke(&row.tenant, &row.id, &args.invoke, &input).await;
    let invoke_ms = started.elapsed().as_secs_f64() * 1000.0;
    let invoked = match invoked {
        Ok(invoked) => invoked,
        Err(f) => {
            // The guest's logs (stderr included) are what explains a failed call.
            for l in kiosk.logs(&row, 0, RUN_LOG_LINES).await.unwrap_or_default() {
                eprintln!("log {:<5} {}", l.level, l.message);
            }
            return Err(failed(&format!("invoke {}", args.invoke), f));
        }
    };
    let output = invoked.output;
    let reported = kiosk
        .report(&row, window_containing(now_ms(), Duration::from_secs(3600)))
        .await
        .map_err(|f| failed("report", f))?;
    let refused_records = reported.refused.clone();
    let log_lines: Vec<Value> = kiosk
        .logs(&row, 0, RUN_LOG_LINES)
        .await
        .map_err(|f| failed("logs", f))?
        .into_iter()
        .map(|l| {
            json!({"cursor": l.seq, "at_ms": l.at_ms, "callId": l.call_id, "operation": l.operation,
                   "level": l.level, "message": l.message})
        })
        .collect();

    let cache = match &component.outcome {
        CacheOutcome::Hit => "hit".to_string(),
        CacheOutcome::Compiled => "compiled".to_string(),
        CacheOutcome::Rebuilt { reason } => format!("rebuilt ({reason})"),
    };
    let usage: Vec<_> = invoked.usage.into_iter().chain(reported.accepted).collect();
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
    println!("\noutput:\n{}", serde_json::to_string_pretty(&terminal_safe(&output))?);
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
        let text = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        println!("  {:<5} {}", text("level"), text("message"));
    }
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn registry_for(args: &RegistryArgs, config: &OperatorConfig, host: &str) -> anyhow::Result<Registry> {
    let mut settings = config.registry(host);
    settings.insecure |= args.insecure;
    if args.ca_bundle.is_some() {
        settings.ca_bundle.clone_from(&args.ca_bundle);
    }
    if args.username.is_some() {
        settings.username.clone_from(&args.username);
        settings.password.clone_from(&args.password);
    }
    if args.token.is_some() {
        settings.token.clone_from(&args.token);
    }
    Ok(Registry::new(&settings, config.transfer)?)
}

fn load_config(args: &RegistryArgs) -> anyhow::Result<OperatorConfig> {
    match &args.operator_config {
        Some(path) => OperatorConfig::load(path),
        None => Ok(OperatorConfig::default()),
    }
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let (reference, inputs) = args.inputs.split_last().context("missing the target reference")?;
    let reference = ArtifactRef::parse(&reference.to_string_lossy()).map_err(anyhow::Error::msg)?;
    let (mut manifest_path, mut wasm_path) = (None, None);
    for input in inputs {
        if input.is_dir() {
            manifest_path.get_or_insert(input.join("manifest.json"));
            let wasm: Vec<_> = std::fs::read_dir(input)
                .with_context(|| format!("cannot read {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            match wasm.as_slice() {
                [one] => wasm_path = Some(one.clone()),
                [] => {}
                _ => bail!("{} holds several .wasm files; name the component file", input.display()),
            }
        } else if input.extension().is_some_and(|e| e == "wasm") {
            wasm_path = Some(input.clone());
        } else {
            manifest_path = Some(input.clone());
        }
    }
    let manifest_path = manifest_path.context("no manifest.json given")?;
    let wasm_path = wasm_path.context("no component (.wasm) given")?;
    let manifest_bytes =
        std::fs::read(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let manifest = Manifest::parse(&manifest_bytes, &HOST_API_VERSION)
        .with_context(|| format!("manifest {} refused", manifest_path.display()))?;
    if manifest.version.to_string() != reference.tag() {
        bail!(
            "manifest version {} does not equal the tag {:?}; the tag must be the exact version",
            manifest.version,
            reference.tag()
        );
    }
    let key = std::fs::read(&args.key).with_context(|| format!("cannot read key {}", args.key.display()))?;
    let (manifest_sig, signer) = kiosk_distribution::publish::sign_detached(&key, &manifest_bytes)?;
    let (wasm_sig, _) = kiosk_distribution::publish::sign_detached(&key, &wasm)?;
    let icon = args.icon.as_deref().map(read_icon).transpose()?;
    let mut signatures = vec![manifest_sig, wasm_sig];
    if let Some((_, bytes)) = &icon {
        signatures.push(kiosk_distribution::publish::sign_detached(&key, bytes)?.0);
    }
    let icon_layer = icon.as_ref().map(|(format, bytes)| (*format, bytes.as_slice()));
    let blobs = kiosk_distribution::publish::assemble_with_icon(&manifest_bytes, &wasm, icon_layer, &signatures);
    let digest = match &reference {
        ArtifactRef::Layout { dir, tag } => LayoutSource::new(dir).write_artifact(tag, &blobs)?,
        ArtifactRef::Registry { host, repository, tag } => {
            let config = load_config(&args.registry)?;
            let registry = registry_for(&args.registry, &config, host)?;
            let total = blobs.config.size + blobs.layers.iter().map(|(d, _)| d.size).sum::<u64>();
            let bar = progress_bar(total);
            bar.set_message(format!("pushing {}@{}", manifest.app, manifest.version));
            let digest = kiosk_distribution::publish::push(&registry, repository, tag, &blobs, |n| bar.inc(n)).await?;
            bar.finish_and_clear();
            digest
        }
    };
    println!("published {}@{} as {digest}", manifest.app, manifest.version);
    println!("signed by  {signer}");
    Ok(())
}

/// The icon file of `kiosk publish --icon`: its format from its name, checked as
/// registration checks it (size cap, one image of that format, dimensions).
fn read_icon(path: &Path) -> anyhow::Result<(IconFormat, Vec<u8>)> {
    let format = IconFormat::from_file_name(&path.to_string_lossy())
        .with_context(|| format!("icon {}: name it .png, .jpg or .jpeg (its media type)", path.display()))?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read icon {}", path.display()))?;
    let cap = SizeCaps::default().icon_bytes;
    if bytes.len() as u64 > cap {
        bail!("icon {} is {} bytes, over Kiosk's default cap of {cap} bytes", path.display(), bytes.len());
    }
    check_icon(format, &bytes).with_context(|| format!("icon {} refused", path.display()))?;
    Ok((format, bytes))
}

async fn verify(args: SourceArgs, pull: bool) -> anyhow::Result<()> {
    let reference = ArtifactRef::parse(&args.reference).map_err(anyhow::Error::msg)?;
    let app = args.app.clone().or_else(|| reference.default_app()).context("name the app with --app partner/name")?;
    let config = load_config(&args.registry)?;
    // `pull` keeps `--cert` in the operator's store through the core's use case (as the
    // API's upload); `verify` trusts them for this one check only.
    if pull {
        return pull_into_store(args, reference, app, config).await;
    }
    let mut trust = config.trust_store()?;
    for cert in &args.certs {
        let (partner, path) =
            cert.split_once('=').with_context(|| format!("--cert {cert:?}: expected partner=FILE"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read certificate {path}"))?;
        trust.add(partner, &bytes).with_context(|| format!("certificate {path}"))?;
    }
    let started = Instant::now();
    let artifact: VerifiedArtifact = match &reference {
        ArtifactRef::Layout { dir, tag } => fetch_with(&LayoutSource::new(dir), &app, tag, &trust, &config).await?,
        ArtifactRef::Registry { host, repository, tag } => {
            let registry = registry_for(&args.registry, &config, host)?;
            fetch_with(&registry.repository(repository), &app, tag, &trust, &config).await?
        }
    };
    let fetch_ms = started.elapsed().as_secs_f64() * 1000.0;
    let doc = json!({
        "app": artifact.manifest.app,
        "version": artifact.manifest.version.to_string(),
        "digest": artifact.digest.as_str(),
        "componentDigest": artifact.component_digest.as_str(),
        "manifestSigner": artifact.signers.manifest.fingerprint,
        "componentSigner": artifact.signers.component.fingerprint,
        "partner": artifact.signers.manifest.partner,
        "fetchVerifyMs": fetch_ms,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("app        {}@{}", artifact.manifest.app, artifact.manifest.version);
    println!("digest     {}", artifact.digest);
    println!("component  {}", artifact.component_digest);
    println!("signer     {} (partner {})", artifact.signers.manifest.fingerprint, artifact.signers.manifest.partner);
    if artifact.signers.component.fingerprint != artifact.signers.manifest.fingerprint {
        println!("component signer {}", artifact.signers.component.fingerprint);
    }
    println!("verified   in {fetch_ms:.1} ms");
    Ok(())
}

async fn fetch_with(
    source: &impl BlobSource,
    app: &str,
    tag: &str,
    trust: &kiosk_distribution::trust::TrustStore,
    config: &OperatorConfig,
) -> Result<VerifiedArtifact, ArtifactError> {
    fetch_verified(source, app, tag, trust, &config.artifacts, &HOST_API_VERSION, None).await
}

/// `kiosk pull`: registers the version in the operator's store through the core, exactly
/// as the partner API would (trust reconciled, the tag pinned to its digest by the
/// versions table, the component kept in the database), then compiles it. One pin/blob
/// system: `kiosk serve` on the same store offers what was pulled.
async fn pull_into_store(
    args: SourceArgs,
    reference: ArtifactRef,
    app: String,
    config: OperatorConfig,
) -> anyhow::Result<()> {
    let registry = match &reference {
        ArtifactRef::Registry { host, .. } => Some(registry_for(&args.registry, &config, host)?),
        ArtifactRef::Layout { .. } => None,
    };
    let kiosk = kiosk_core::host::open(config, None, None).await?;
    let id = kiosk_domain::ids::AppId::parse(&app)?;
    let partner = id.partner();
    kiosk.ensure_partner(partner, "cli").await?;
    // `--cert`: the operator trusts these certificates from now on, exactly as if they
    // were added over the API (the same use case: merged with registered copies, one
    // partner per fingerprint, a revoked one quarantining what it signed).
    for cert in &args.certs {
        let (owner, path) = cert.split_once('=').with_context(|| format!("--cert {cert:?}: expected partner=FILE"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read certificate {path}"))?;
        kiosk.ensure_partner(owner, "cli").await?;
        kiosk.add_certificates(owner, &bytes, "cli").await.map_err(|f| anyhow::anyhow!("certificate {path}: {f}"))?;
    }
    let tag = reference.tag().to_string();
    let started = Instant::now();
    let registered = match (&reference, &registry) {
        (ArtifactRef::Registry { repository, .. }, Some(registry)) => {
            kiosk.register(&registry.repository(repository), &app, &tag, &args.reference, "cli").await
        }
        (ArtifactRef::Layout { dir, .. }, _) => {
            kiosk.register(&LayoutSource::new(dir), &app, &tag, &args.reference, "cli").await
        }
        (ArtifactRef::Registry { .. }, None) => unreachable!("a registry reference has its registry"),
    };
    // Registered already with these very bytes (the pin held): nothing to add.
    let already = match registered {
        Ok(_) => false,
        Err(f) if f.kind == Kind::VersionExists => true,
        Err(f) => return Err(failed("pull", f)),
    };
    let fetch_ms = started.elapsed().as_secs_f64() * 1000.0;
    let row = kiosk.version(&app, &tag).await.map_err(|f| failed("pull", f))?;
    let started = Instant::now();
    let loaded = kiosk.app_version(&row).await.map_err(|f| failed("compile", f))?;
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cache = match &loaded.component.outcome {
        CacheOutcome::Hit => "hit".to_string(),
        CacheOutcome::Compiled => "compiled".to_string(),
        CacheOutcome::Rebuilt { reason } => format!("rebuilt ({reason})"),
    };
    if args.json {
        let doc = json!({
            "app": row.app, "version": row.version, "digest": row.manifest_digest,
            "componentDigest": row.component_digest, "signer": row.signer, "fetchVerifyMs": fetch_ms,
            "compileMs": compile_ms, "compileCache": cache, "pinned": true, "alreadyRegistered": already,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("app        {}@{}", row.app, row.version);
    println!("digest     {}", row.manifest_digest);
    println!("component  {}", row.component_digest);
    println!("signer     {}", row.signer);
    println!(
        "{}   in {fetch_ms:.1} ms",
        if already { "verified (already registered)" } else { "verified and registered" }
    );
    println!("compiled   in {compile_ms:.1} ms ({cache}); pinned");
    Ok(())
}
