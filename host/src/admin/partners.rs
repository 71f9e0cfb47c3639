//! `kiosk admin partners` and `kiosk admin certificates` (a partner's OpenPGP
//! certificates).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::api::{Request, Shape};

#[derive(Debug, Subcommand)]
pub(super) enum PartnersCmd {
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
pub(super) enum CertificatesCmd {
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

const PARTNER_COLUMNS: &[(&str, &str)] =
    &[("NAME", "name"), ("DISPLAY", "display"), ("DISABLED", "disabled"), ("CREATED", "createdMs")];
const CERT_COLUMNS: &[(&str, &str)] =
    &[("FINGERPRINT", "fingerprint"), ("STATE", "state"), ("SOURCE", "source"), ("USER IDS", "userIds")];

impl PartnersCmd {
    pub(super) fn request(self) -> Request {
        match self {
            PartnersCmd::List => Request::get(&["v1", "partners"], Shape::List(PARTNER_COLUMNS)),
            PartnersCmd::Show { partner } => Request::get(&["v1", "partners", &partner], Shape::Object),
            PartnersCmd::Create { name, display } => {
                Request::post(&["v1", "partners"], Some(json!({"name": name, "display": display})))
            }
            PartnersCmd::Disable { partner } => Request::post(&["v1", "partners", &partner, "disable"], None),
            PartnersCmd::Enable { partner } => Request::post(&["v1", "partners", &partner, "enable"], None),
        }
    }
}

impl CertificatesCmd {
    pub(super) fn request(self) -> anyhow::Result<Request> {
        Ok(match self {
            CertificatesCmd::List { partner } => {
                Request::get(&["v1", "partners", &partner, "certificates"], Shape::List(CERT_COLUMNS))
            }
            CertificatesCmd::Add { partner, file } => {
                let certificate = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read certificate file {}", file.display()))?;
                Request::post(&["v1", "partners", &partner, "certificates"], Some(json!({"certificate": certificate})))
            }
            CertificatesCmd::Remove { partner, fingerprint } => Request::new(
                Method::DELETE,
                &["v1", "partners", &partner, "certificates", &fingerprint],
                None,
                Shape::Done(format!("removed certificate {fingerprint} of {partner}")),
            ),
        })
    }
}
