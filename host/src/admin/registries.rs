//! `kiosk admin registries` (the registries Kiosk may pull from) and `kiosk admin
//! watches` (registry repositories watched for new versions).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Request, Shape};

#[derive(Debug, Subcommand)]
pub(super) enum RegistriesCmd {
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
pub(super) enum WatchesCmd {
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

const REGISTRY_COLUMNS: &[(&str, &str)] =
    &[("HOST", "host"), ("INSECURE", "insecure"), ("CREDENTIALS", "credentialsSet"), ("PARTNERS", "partners")];
const WATCH_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("REFERENCE", "reference"),
    ("APP", "app"),
    ("INTERVAL", "intervalSeconds"),
    ("LAST POLL", "lastPollMs"),
    ("LAST ERROR", "lastError"),
];

impl RegistriesCmd {
    pub(super) fn request(self) -> anyhow::Result<Request> {
        Ok(match self {
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
        })
    }
}

impl WatchesCmd {
    pub(super) fn request(self) -> Request {
        match self {
            WatchesCmd::List => Request::get(&["v1", "watches"], Shape::List(WATCH_COLUMNS)),
            WatchesCmd::Show { id } => Request::get(&["v1", "watches", &id], Shape::Object),
            WatchesCmd::Add { reference, app, interval_seconds } => Request::post(
                &["v1", "watches"],
                Some(json!({"reference": reference, "app": app, "intervalSeconds": interval_seconds})),
            ),
            WatchesCmd::Remove { id } => {
                Request::new(Method::DELETE, &["v1", "watches", &id], None, Shape::Done(format!("removed watch {id}")))
            }
        }
    }
}
