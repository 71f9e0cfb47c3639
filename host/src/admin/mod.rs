//! `kiosk admin`: the operator's command line over the HTTP API. Every command is one
//! API request (lists follow their `next` cursors); answers print as a table, or as the
//! API's JSON with `--json`. Problems print their detail and the exit code is 1.

mod api;
mod limits;
mod partners;
mod registries;
mod table;
mod tenants;
mod tokens;
mod versions;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, Url};
use serde_json::Value;

pub(crate) use api::Client;
use api::{Request, Shape};
use limits::LimitsCmd;
use partners::{CertificatesCmd, PartnersCmd};
use registries::{RegistriesCmd, WatchesCmd};
use table::{cell, new_table, print_table};
use tenants::{EntitlementsCmd, InstallationsCmd, LogsArgs, TenantsCmd};
use tokens::TokensCmd;
use versions::VersionsCmd;

/// Pages a list command follows at most (1,000 items each): an estate bigger than this
/// is read with the API's cursors, not printed.
const MAX_PAGES: usize = 100;

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
    /// Tenants: list, show, create, suspend, resume; their own apps' switch.
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

const AUDIT_COLUMNS: &[(&str, &str)] =
    &[("AT", "at_ms"), ("ACTOR", "actor"), ("ACTION", "action"), ("TARGET", "target"), ("DETAIL", "detail")];

fn request(command: AdminCommand) -> anyhow::Result<Request> {
    use AdminCommand as C;
    Ok(match command {
        C::Partners(c) => c.request(),
        C::Certificates(c) => c.request()?,
        C::Tenants(c) => c.request(),
        C::Tokens(c) => c.request(),
        C::Entitlements(c) => c.request()?,
        C::Registries(c) => c.request()?,
        C::Versions(c) => c.request()?,
        C::Installations(c) => c.request(),
        C::Limits(c) => c.request()?,
        C::Logs(args) => args.request(),
        C::Audit { limit } => {
            Request::get(&["v1", "audit"], Shape::Page(AUDIT_COLUMNS)).query("limit", Some(limit.to_string()))
        }
        C::Watches(c) => c.request(),
    })
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
