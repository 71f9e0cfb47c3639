//! `kiosk admin limits`: the operator's ceilings and defaults, per-app caps and
//! per-tenant overrides, set as `key=value` settings.

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Request, Shape, app_segments};

#[derive(Debug, Subcommand)]
pub(super) enum LimitsCmd {
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
pub(super) enum LayerCmd {
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

const APP_LIMIT_COLUMNS: &[(&str, &str)] = &[("APP", "app"), ("LIMITS", "limits")];
const TENANT_LIMIT_COLUMNS: &[(&str, &str)] = &[("TENANT", "tenant"), ("APP", "app"), ("LIMITS", "limits")];

impl LimitsCmd {
    pub(super) fn request(self) -> anyhow::Result<Request> {
        Ok(match self {
            LimitsCmd::Show => Request::get(&["v1", "limits"], Shape::Object),
            LimitsCmd::Defaults { settings: pairs } => {
                Request::new(Method::PUT, &["v1", "limits", "defaults"], Some(settings(&pairs)?), Shape::Object)
            }
            LimitsCmd::App(layer) => layer_request("apps", layer, APP_LIMIT_COLUMNS)?,
            LimitsCmd::Tenant(layer) => layer_request("tenants", layer, TENANT_LIMIT_COLUMNS)?,
        })
    }
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
}
