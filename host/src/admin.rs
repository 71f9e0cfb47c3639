//! `kiosk admin`: the operator's command line over the HTTP API. Every command is one
//! API request (lists follow their `next` cursors); answers print as a table, or as the
//! API's JSON with `--json`. Problems print their detail and the exit code is 1.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use kiosk_domain::text::sanitize_capped;

/// Pages a list command follows at most (1,000 items each): an estate bigger than this
/// is read with the API's cursors, not printed.
const MAX_PAGES: usize = 100;
/// A table cell longer than this is cut (the JSON output is never cut).
const MAX_CELL_CHARS: usize = 80;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The Kiosk API's base URL.
    #[arg(long, env = "KIOSK_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// An operator token (`kiosk serve` prints the bootstrap token on first start).
    #[arg(long, env = "KIOSK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Partners: list, show, create, disable, enable.
    #[command(subcommand)]
    Partners(PartnersCmd),
    /// A partner's OpenPGP certificates: list, add, remove.
    #[command(subcommand)]
    Certificates(CertificatesCmd),
    /// Tenants: list, show, create, suspend, resume.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// API tokens: list (never the secret), create, revoke.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Tenants' licences to apps: list, set.
    #[command(subcommand)]
    Entitlements(EntitlementsCmd),
    /// Registries Kiosk may pull from: list, set, remove.
    #[command(subcommand)]
    Registries(RegistriesCmd),
    /// App versions across partners: list, yank, unyank, quarantine, release.
    #[command(subcommand)]
    Versions(VersionsCmd),
    /// Installations across tenants: list, show.
    #[command(subcommand)]
    Installations(InstallationsCmd),
    /// Sandbox limits: the ceilings and defaults, per-app caps, per-tenant overrides.
    #[command(subcommand)]
    Limits(LimitsCmd),
    /// An installation's logs (guest log lines, stderr, failures).
    Logs(LogsArgs),
    /// The audit log, newest first.
    Audit {
        /// How many records (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u16,
    },
    /// Registry repositories watched for new versions: list, show, add, remove.
    #[command(subcommand)]
    Watches(WatchesCmd),
}

#[derive(Debug, Subcommand)]
enum PartnersCmd {
    List,
    Show {
        partner: String,
    },
    Create {
        name: String,
        #[arg(long)]
        display: Option<String>,
    },
    /// Refuses the partner's registrations and its apps' installs and calls.
    Disable {
        partner: String,
    },
    Enable {
        partner: String,
    },
}

#[derive(Debug, Subcommand)]
enum CertificatesCmd {
    List {
        partner: String,
    },
    /// Adds an ASCII-armoured certificate (or a revocation certificate) from a file.
    Add {
        partner: String,
        file: PathBuf,
    },
    Remove {
        partner: String,
        fingerprint: String,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCmd {
    List,
    Show {
        tenant: String,
    },
    Create {
        id: String,
        #[arg(long)]
        display: Option<String>,
    },
    /// Refuses the tenant's installs, changes and calls until resumed.
    Suspend {
        tenant: String,
    },
    Resume {
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCmd {
    List,
    /// Creates a token and prints its secret once.
    Create {
        /// operator, partner or tenant.
        #[arg(long)]
        role: String,
        /// The partner or tenant the token is for.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        label: Option<String>,
        /// When it stops working, ms since the Unix epoch.
        #[arg(long)]
        expires_ms: Option<i64>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum EntitlementsCmd {
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        partner: Option<String>,
    },
    /// Grants (or, with --revoked, revokes) a tenant's licence to an app.
    Set {
        tenant: String,
        /// `partner/name`.
        app: String,
        #[arg(long)]
        expires_ms: Option<i64>,
        #[arg(long)]
        revoked: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RegistriesCmd {
    List,
    /// Adds or replaces the settings of a registry host.
    Set {
        host: String,
        /// Plain HTTP (only for a registry on a trusted path).
        #[arg(long)]
        insecure: bool,
        /// PEM file of CA certificates to trust for this registry.
        #[arg(long)]
        ca_pem: Option<PathBuf>,
        /// Repository prefixes of a partner: `partner=prefix` (repeatable).
        #[arg(long = "partner", value_name = "PARTNER=PREFIX")]
        partners: Vec<String>,
    },
    Remove {
        host: String,
    },
}

#[derive(Debug, Subcommand)]
enum VersionsCmd {
    List {
        /// `partner/name`.
        #[arg(long)]
        app: Option<String>,
        /// active, yanked or quarantined.
        #[arg(long)]
        state: Option<String>,
    },
    Yank {
        app: String,
        version: String,
    },
    Unyank {
        app: String,
        version: String,
    },
    Quarantine {
        app: String,
        version: String,
    },
    Release {
        app: String,
        version: String,
    },
}

#[derive(Debug, Subcommand)]
enum InstallationsCmd {
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// `partner/name`.
        #[arg(long)]
        app: Option<String>,
    },
    /// One installation, with its effective limits and where each came from.
    Show { tenant: String, id: String },
}

#[derive(Debug, Subcommand)]
enum LimitsCmd {
    /// The operator's ceilings and defaults.
    Show,
    /// Sets operator defaults: `timeoutMs=500 memoryMiB=32 …` (`key=` clears one).
    Defaults { settings: Vec<String> },
    /// Per-app caps: list, or show/set/clear one app's.
    #[command(subcommand)]
    App(LayerCmd),
    /// Per-tenant overrides: list, or show/set/clear one tenant's.
    #[command(subcommand)]
    Tenant(LayerCmd),
}

#[derive(Debug, Subcommand)]
enum LayerCmd {
    List,
    Show {
        target: String,
    },
    /// `key=value …`, e.g. `timeoutMs=200`.
    Set {
        target: String,
        settings: Vec<String>,
    },
    Clear {
        target: String,
    },
}

#[derive(Debug, Args)]
struct LogsArgs {
    tenant: String,
    installation: String,
    /// Only lines after this cursor (from a previous `next`).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, Subcommand)]
enum WatchesCmd {
    List,
    Show {
        id: String,
    },
    Add {
        /// `host/repository`.
        reference: String,
        /// `partner/name`.
        #[arg(long)]
        app: String,
        /// Seconds between polls.
        #[arg(long)]
        interval_seconds: Option<u64>,
    },
    Remove {
        id: String,
    },
}

/// What to print of an answer.
enum Shape {
    /// A list: follow `next`, print these columns (header, JSON member).
    List(&'static [(&'static str, &'static str)]),
    /// The first page of a list only (the audit log: the newest records).
    Page(&'static [(&'static str, &'static str)]),
    /// One object: every member, one row each.
    Object,
    /// Log lines: `atMs callId level message`.
    Logs,
    /// Nothing but this line (e.g. a 204).
    Done(String),
}

struct Request {
    method: Method,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    shape: Shape,
}

impl Request {
    fn get(path: &[&str], shape: Shape) -> Self {
        Self::new(Method::GET, path, None, shape)
    }

    fn new(method: Method, path: &[&str], body: Option<Value>, shape: Shape) -> Self {
        Self { method, path: path.iter().map(|s| s.to_string()).collect(), query: Vec::new(), body, shape }
    }

    fn query(mut self, name: &'static str, value: Option<String>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value));
        }
        self
    }
}

const PARTNER_COLUMNS: &[(&str, &str)] =
    &[("NAME", "name"), ("DISPLAY", "display"), ("DISABLED", "disabled"), ("CREATED", "createdMs")];
const TENANT_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("DISPLAY", "display"), ("SUSPENDED", "suspended"), ("CREATED", "createdMs")];
const CERT_COLUMNS: &[(&str, &str)] =
    &[("FINGERPRINT", "fingerprint"), ("STATE", "state"), ("SOURCE", "source"), ("USER IDS", "userIds")];
const TOKEN_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("ROLE", "role"), ("SCOPE", "scope"), ("LABEL", "label"), ("EXPIRES", "expiresMs")];
const ENTITLEMENT_COLUMNS: &[(&str, &str)] =
    &[("TENANT", "tenant"), ("APP", "app"), ("EXPIRES", "expiresMs"), ("REVOKED", "revoked")];
const REGISTRY_COLUMNS: &[(&str, &str)] =
    &[("HOST", "host"), ("INSECURE", "insecure"), ("CREDENTIALS", "credentialsSet"), ("PARTNERS", "partners")];
const VERSION_COLUMNS: &[(&str, &str)] = &[
    ("APP", "app"),
    ("VERSION", "version"),
    ("YANKED", "yanked"),
    ("QUARANTINED", "quarantined"),
    ("SIGNER", "signer"),
];
const INSTALLATION_COLUMNS: &[(&str, &str)] =
    &[("TENANT", "tenant"), ("ID", "id"), ("APP", "app"), ("VERSION", "version"), ("UPDATED", "updatedMs")];
const APP_LIMIT_COLUMNS: &[(&str, &str)] = &[("APP", "app"), ("LIMITS", "limits")];
const TENANT_LIMIT_COLUMNS: &[(&str, &str)] = &[("TENANT", "tenant"), ("APP", "app"), ("LIMITS", "limits")];
const AUDIT_COLUMNS: &[(&str, &str)] =
    &[("AT", "at_ms"), ("ACTOR", "actor"), ("ACTION", "action"), ("TARGET", "target"), ("DETAIL", "detail")];
const WATCH_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("REFERENCE", "reference"),
    ("APP", "app"),
    ("INTERVAL", "intervalSeconds"),
    ("LAST POLL", "lastPollMs"),
    ("LAST ERROR", "lastError"),
];

/// `partner/name` → its two path segments (the API checks the names).
fn app_segments(app: &str) -> anyhow::Result<(&str, &str)> {
    app.split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty() && !n.contains('/'))
        .with_context(|| format!("app {app:?} must be `partner/name`"))
}

/// `key=value` settings → a JSON object of integers (`key=` is null: inherit).
fn settings(pairs: &[String]) -> anyhow::Result<Value> {
    let mut object = Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').with_context(|| format!("setting {pair:?} must be `key=value`"))?;
        if key.is_empty() {
            bail!("setting {pair:?} has no key");
        }
        let value = if value.is_empty() {
            Value::Null
        } else {
            let n: u64 = value.parse().with_context(|| format!("{key}: {value:?} is not a whole number ≥ 0"))?;
            json!(n)
        };
        object.insert(key.to_string(), value);
    }
    if object.is_empty() {
        bail!("give at least one `key=value` setting");
    }
    Ok(Value::Object(object))
}

fn request(command: AdminCommand) -> anyhow::Result<Request> {
    use AdminCommand as C;
    let post = |path: &[&str], body: Option<Value>| Request::new(Method::POST, path, body, Shape::Object);
    Ok(match command {
        C::Partners(c) => match c {
            PartnersCmd::List => Request::get(&["v1", "partners"], Shape::List(PARTNER_COLUMNS)),
            PartnersCmd::Show { partner } => Request::get(&["v1", "partners", &partner], Shape::Object),
            PartnersCmd::Create { name, display } => {
                post(&["v1", "partners"], Some(json!({"name": name, "display": display})))
            }
            PartnersCmd::Disable { partner } => post(&["v1", "partners", &partner, "disable"], None),
            PartnersCmd::Enable { partner } => post(&["v1", "partners", &partner, "enable"], None),
        },
        C::Certificates(c) => match c {
            CertificatesCmd::List { partner } => {
                Request::get(&["v1", "partners", &partner, "certificates"], Shape::List(CERT_COLUMNS))
            }
            CertificatesCmd::Add { partner, file } => {
                let certificate = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read certificate file {}", file.display()))?;
                post(&["v1", "partners", &partner, "certificates"], Some(json!({"certificate": certificate})))
            }
            CertificatesCmd::Remove { partner, fingerprint } => Request::new(
                Method::DELETE,
                &["v1", "partners", &partner, "certificates", &fingerprint],
                None,
                Shape::Done(format!("removed certificate {fingerprint} of {partner}")),
            ),
        },
        C::Tenants(c) => match c {
            TenantsCmd::List => Request::get(&["v1", "tenants"], Shape::List(TENANT_COLUMNS)),
            TenantsCmd::Show { tenant } => Request::get(&["v1", "tenants", &tenant], Shape::Object),
            TenantsCmd::Create { id, display } => post(&["v1", "tenants"], Some(json!({"id": id, "display": display}))),
            TenantsCmd::Suspend { tenant } => post(&["v1", "tenants", &tenant, "suspend"], None),
            TenantsCmd::Resume { tenant } => post(&["v1", "tenants", &tenant, "resume"], None),
        },
        C::Tokens(c) => match c {
            TokensCmd::List => Request::get(&["v1", "tokens"], Shape::List(TOKEN_COLUMNS)),
            TokensCmd::Create { role, scope, label, expires_ms } => post(
                &["v1", "tokens"],
                Some(json!({"role": role, "scope": scope, "label": label, "expiresMs": expires_ms})),
            ),
            TokensCmd::Revoke { id } => {
                Request::new(Method::DELETE, &["v1", "tokens", &id], None, Shape::Done(format!("revoked token {id}")))
            }
        },
        C::Entitlements(c) => match c {
            EntitlementsCmd::List { tenant, partner } => {
                Request::get(&["v1", "entitlements"], Shape::List(ENTITLEMENT_COLUMNS))
                    .query("tenant", tenant)
                    .query("partner", partner)
            }
            EntitlementsCmd::Set { tenant, app, expires_ms, revoked } => {
                let (partner, name) = app_segments(&app)?;
                Request::new(
                    Method::PUT,
                    &["v1", "entitlements", &tenant, partner, name],
                    Some(json!({"expiresMs": expires_ms, "revoked": revoked})),
                    Shape::Object,
                )
            }
        },
        C::Registries(c) => match c {
            RegistriesCmd::List => Request::get(&["v1", "registries"], Shape::List(REGISTRY_COLUMNS)),
            RegistriesCmd::Set { host, insecure, ca_pem, partners } => {
                let ca_pem = match ca_pem {
                    Some(path) => Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read CA file {}", path.display()))?,
                    ),
                    None => None,
                };
                let mut prefixes: Map<String, Value> = Map::new();
                for entry in &partners {
                    let (partner, prefix) = entry
                        .split_once('=')
                        .with_context(|| format!("--partner {entry:?} must be `partner=prefix`"))?;
                    let list = prefixes.entry(partner.to_string()).or_insert_with(|| json!([]));
                    if let Value::Array(items) = list {
                        items.push(json!(prefix));
                    }
                }
                let mut body = json!({"insecure": insecure, "caPem": ca_pem});
                if !prefixes.is_empty() {
                    body["partners"] = Value::Object(prefixes);
                }
                Request::new(Method::PUT, &["v1", "registries", &host], Some(body), Shape::Object)
            }
            RegistriesCmd::Remove { host } => Request::new(
                Method::DELETE,
                &["v1", "registries", &host],
                None,
                Shape::Done(format!("removed registry {host}")),
            ),
        },
        C::Versions(c) => {
            let action = |app: &str, version: &str, verb: &str| -> anyhow::Result<Request> {
                let (partner, name) = app_segments(app)?;
                Ok(post(&["v1", "apps", partner, name, "versions", version, verb], None))
            };
            match c {
                VersionsCmd::List { app, state } => Request::get(&["v1", "versions"], Shape::List(VERSION_COLUMNS))
                    .query("app", app)
                    .query("state", state),
                VersionsCmd::Yank { app, version } => action(&app, &version, "yank")?,
                VersionsCmd::Unyank { app, version } => action(&app, &version, "unyank")?,
                VersionsCmd::Quarantine { app, version } => action(&app, &version, "quarantine")?,
                VersionsCmd::Release { app, version } => action(&app, &version, "release")?,
            }
        }
        C::Installations(c) => match c {
            InstallationsCmd::List { tenant, app } => {
                Request::get(&["v1", "installations"], Shape::List(INSTALLATION_COLUMNS))
                    .query("tenant", tenant)
                    .query("app", app)
            }
            InstallationsCmd::Show { tenant, id } => {
                Request::get(&["v1", "tenants", &tenant, "installations", &id], Shape::Object)
            }
        },
        C::Limits(c) => match c {
            LimitsCmd::Show => Request::get(&["v1", "limits"], Shape::Object),
            LimitsCmd::Defaults { settings: pairs } => {
                Request::new(Method::PUT, &["v1", "limits", "defaults"], Some(settings(&pairs)?), Shape::Object)
            }
            LimitsCmd::App(layer) => layer_request("apps", layer, APP_LIMIT_COLUMNS)?,
            LimitsCmd::Tenant(layer) => layer_request("tenants", layer, TENANT_LIMIT_COLUMNS)?,
        },
        C::Logs(args) => {
            Request::get(&["v1", "tenants", &args.tenant, "installations", &args.installation, "logs"], Shape::Logs)
                .query("since", args.since)
        }
        C::Audit { limit } => {
            Request::get(&["v1", "audit"], Shape::Page(AUDIT_COLUMNS)).query("limit", Some(limit.to_string()))
        }
        C::Watches(c) => match c {
            WatchesCmd::List => Request::get(&["v1", "watches"], Shape::List(WATCH_COLUMNS)),
            WatchesCmd::Show { id } => Request::get(&["v1", "watches", &id], Shape::Object),
            WatchesCmd::Add { reference, app, interval_seconds } => post(
                &["v1", "watches"],
                Some(json!({"reference": reference, "app": app, "intervalSeconds": interval_seconds})),
            ),
            WatchesCmd::Remove { id } => {
                Request::new(Method::DELETE, &["v1", "watches", &id], None, Shape::Done(format!("removed watch {id}")))
            }
        },
    })
}

/// A per-app (`apps`, target `partner/name`) or per-tenant (`tenants`) limits layer.
fn layer_request(
    kind: &str,
    command: LayerCmd,
    columns: &'static [(&'static str, &'static str)],
) -> anyhow::Result<Request> {
    let path = |target: &str| -> anyhow::Result<Vec<String>> {
        let mut path = vec!["v1".to_string(), "limits".to_string(), kind.to_string()];
        if kind == "apps" {
            let (partner, name) = app_segments(target)?;
            path.extend([partner.to_string(), name.to_string()]);
        } else {
            path.push(target.to_string());
        }
        Ok(path)
    };
    let with_path = |method: Method, target: &str, body: Option<Value>, shape: Shape| -> anyhow::Result<Request> {
        Ok(Request { method, path: path(target)?, query: Vec::new(), body, shape })
    };
    match command {
        LayerCmd::List => Ok(Request::get(&["v1", "limits", kind], Shape::List(columns))),
        LayerCmd::Show { target } => with_path(Method::GET, &target, None, Shape::Object),
        LayerCmd::Set { target, settings: pairs } => {
            with_path(Method::PUT, &target, Some(settings(&pairs)?), Shape::Object)
        }
        LayerCmd::Clear { target } => {
            let done = Shape::Done(format!("cleared the {} limits of {target}", kind.trim_end_matches('s')));
            with_path(Method::DELETE, &target, None, done)
        }
    }
}

/// An API problem, printed as the command's error.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
struct ApiProblem {
    detail: String,
}

struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    fn url(&self, path: &[String], query: &[(&str, String)]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One request; a problem answer becomes an `ApiProblem` naming its type.
    async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> anyhow::Result<Option<Value>> {
        let mut request = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach Kiosk at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{url} did not answer JSON"));
        }
        let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |name: &str| problem.get(name).and_then(Value::as_str).map(|s| sanitize_capped(s, 2048));
        let kind = text("type").map(|t| t.trim_start_matches("urn:kiosk:problem:").to_string());
        let mut detail =
            format!("{} {}", status.as_u16(), text("detail").or_else(|| text("title")).unwrap_or_default());
        if let Some(kind) = kind {
            detail.push_str(&format!(" ({kind})"));
        }
        if let Some(field) = text("field") {
            detail.push_str(&format!(" [field: {field}]"));
        }
        Err(ApiProblem { detail }.into())
    }
}

/// Runs `kiosk admin …`.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = args.token.context("no token: pass --token or set KIOSK_TOKEN to an operator token")?;
    let base = Url::parse(&args.url).with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--url {base} must be http:// or https://");
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .context("cannot build an HTTP client")?;
    let client = Client { http, base, token };
    let request = request(args.command)?;
    match request.shape {
        Shape::List(columns) | Shape::Page(columns) => {
            let follow = matches!(request.shape, Shape::List(_));
            let mut items = Vec::new();
            let mut after: Option<String> = None;
            for page in 0.. {
                if page == MAX_PAGES {
                    eprintln!("(stopped after {} items; use the API's cursors for the rest)", items.len());
                    break;
                }
                let mut query = request.query.clone();
                if !request.query.iter().any(|(name, _)| *name == "limit") {
                    query.push(("limit", "1000".into()));
                }
                if let Some(after) = &after {
                    query.push(("after", after.clone()));
                }
                let url = client.url(&request.path, &query)?;
                let answer = client.send(Method::GET, url, None).await?.unwrap_or(Value::Null);
                // The audit log answers a bare array; the other lists are pages.
                match answer {
                    Value::Array(list) => {
                        items.extend(list);
                        break;
                    }
                    answer => {
                        if let Some(list) = answer.get("items").and_then(Value::as_array) {
                            items.extend(list.iter().cloned());
                        }
                        match answer.get("next").and_then(Value::as_str) {
                            Some(next) if follow => after = Some(next.to_string()),
                            _ => break,
                        }
                    }
                }
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print_table(columns, &items);
            }
        }
        Shape::Logs => {
            let url = client.url(&request.path, &request.query)?;
            let answer = client.send(Method::GET, url, None).await?.unwrap_or(Value::Null);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                for line in answer.get("items").and_then(Value::as_array).into_iter().flatten() {
                    let field = |name: &str| line.get(name).map(cell).unwrap_or_default();
                    println!("{} {} {:5} {}", field("atMs"), field("callId"), field("level"), field("message"));
                }
                if let Some(next) = answer.get("next").and_then(Value::as_str) {
                    eprintln!("(more: --since {next})");
                }
            }
        }
        Shape::Object | Shape::Done(_) => {
            let url = client.url(&request.path, &request.query)?;
            let answer = client.send(request.method, url, request.body.as_ref()).await?;
            match (answer, request.shape) {
                (Some(answer), _) if args.json => println!("{}", serde_json::to_string_pretty(&answer)?),
                (Some(Value::Object(members)), _) => {
                    let mut table = new_table();
                    for (name, value) in &members {
                        table.add_row(vec![name.clone(), cell(value)]);
                    }
                    println!("{table}");
                }
                (Some(other), _) => println!("{}", cell(&other)),
                (None, Shape::Done(line)) => println!("{line}"),
                (None, _) => println!("done"),
            }
        }
    }
    Ok(())
}

fn new_table() -> Table {
    let mut table = Table::new();
    // Box drawing for people; plain ASCII when piped into another program.
    table.load_preset(if std::io::stdout().is_terminal() {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_MARKDOWN
    });
    table.set_content_arrangement(ContentArrangement::Dynamic);
    table
}

fn print_table(columns: &[(&str, &str)], items: &[Value]) {
    let mut table = new_table();
    table.set_header(columns.iter().map(|(header, _)| *header));
    for item in items {
        table.add_row(columns.iter().map(|(_, member)| item.get(*member).map(cell).unwrap_or_default()));
    }
    println!("{table}");
    eprintln!("({} {})", items.len(), if items.len() == 1 { "item" } else { "items" });
}

/// A JSON value as one table cell: text as is (sanitised for the terminal), other
/// values as compact JSON, cut at `MAX_CELL_CHARS`.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = sanitize_capped(&text, 4096);
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_whole_numbers_named_by_key() {
        assert_eq!(
            settings(&["timeoutMs=200".into(), "fuel=".into()]).unwrap(),
            json!({"timeoutMs": 200, "fuel": null})
        );
        let err = settings(&["timeoutMs=-1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("timeoutMs"), "{err:#}");
        assert!(settings(&["=5".into()]).is_err());
        assert!(settings(&[]).is_err());
    }

    #[test]
    fn app_must_be_partner_slash_name() {
        assert_eq!(app_segments("acme/pacing").unwrap(), ("acme", "pacing"));
        for bad in ["acme", "/x", "acme/", "a/b/c"] {
            assert!(app_segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        let client = Client {
            http: reqwest::Client::new(),
            base: Url::parse("http://127.0.0.1:8080/").unwrap(),
            token: String::new(),
        };
        let url = client.url(&["v1".into(), "registries".into(), "reg.local:5000/../x".into()], &[]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/registries/reg.local:5000%2F..%2Fx");
    }
}
