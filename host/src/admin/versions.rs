//! `kiosk admin versions`: app versions across partners (list, yank, unyank,
//! quarantine, release).

use clap::Subcommand;

use super::api::{Request, Shape, app_segments};

#[derive(Debug, Subcommand)]
pub(super) enum VersionsCmd {
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

const VERSION_COLUMNS: &[(&str, &str)] = &[
    ("APP", "app"),
    ("VERSION", "version"),
    ("YANKED", "yanked"),
    ("QUARANTINED", "quarantined"),
    ("SIGNER", "signer"),
];

impl VersionsCmd {
    pub(super) fn request(self) -> anyhow::Result<Request> {
        let action = |app: &str, version: &str, verb: &str| -> anyhow::Result<Request> {
            let (partner, name) = app_segments(app)?;
            Ok(Request::post(&["v1", "apps", partner, name, "versions", version, verb], None))
        };
        Ok(match self {
            VersionsCmd::List { app, state } => {
                Request::get(&["v1", "versions"], Shape::List(VERSION_COLUMNS)).query("app", app).query("state", state)
            }
            VersionsCmd::Yank { app, version } => action(&app, &version, "yank")?,
            VersionsCmd::Unyank { app, version } => action(&app, &version, "unyank")?,
            VersionsCmd::Quarantine { app, version } => action(&app, &version, "quarantine")?,
            VersionsCmd::Release { app, version } => action(&app, &version, "release")?,
        })
    }
}
