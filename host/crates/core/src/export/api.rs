//! Sinks the operator sets through the API, beside the config file's `[[sinks]]`: the
//! same settings, checked the same way (the error names the setting), and a signing key
//! that comes with the request, is sealed with the secrets key and is never shown again.
//! Every replica starts, restarts or stops its pushers within `pushers::WATCH` of a change.
//! A config file's sink is changed in the file, never through the API.

use kiosk_store::ApiSinkRow;

use super::settings::SinkSettings;
use crate::error::{Failure, Result};
use crate::kind::Kind;
use crate::lifecycle::Kiosk;

/// Where a sink was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkSource {
    /// The config file's `[[sinks]]` (changed there, with a restart).
    Config,
    /// `PUT /v1/sinks/{sink}`.
    Api,
}

impl SinkSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkSource::Config => "config",
            SinkSource::Api => "api",
        }
    }
}

/// The shortest and longest signing key (or receiver's API key) the API takes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 16..=1024;

/// The sealing context of `sink`'s key: a sealed key opens for that sink only.
pub(super) fn seal_context(sink: &str) -> String {
    format!("sink/{sink}")
}

/// The settings of an API sink as stored (`None`: unreadable, e.g. written by a newer
/// version; logged by the caller).
pub(super) fn stored_settings(row: &ApiSinkRow) -> Option<SinkSettings> {
    serde_json::from_str(&row.settings).ok()
}

/// A setting named as the API names it (camelCase; the name is the path's `sink`).
fn api_field(kebab: &str) -> String {
    if kebab == "name" {
        return "sink".into();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in kebab.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl Kiosk {
    /// Every sink: the config file's, then the API's (by name).
    pub(super) async fn all_sinks(&self) -> Result<Vec<(SinkSettings, SinkSource)>> {
        let mut all: Vec<(SinkSettings, SinkSource)> =
            self.config.sinks.iter().map(|s| (s.clone(), SinkSource::Config)).collect();
        for row in self.store.api_sinks().await? {
            // A name the config file took since wins (the file is the operator's last word).
            if let Some(settings) = stored_settings(&row)
                && !self.config.sinks.iter().any(|s| s.name == row.name)
            {
                all.push((settings, SinkSource::Api));
            }
        }
        Ok(all)
    }

    /// The sink `name`, wherever it was set.
    pub(super) async fn find_sink(&self, name: &str) -> Result<(SinkSettings, SinkSource)> {
        self.all_sinks().await?.into_iter().find(|(s, _)| s.name == name).ok_or_else(|| {
            Failure::not_found(format!("no sink {:?}", kiosk_domain::text::sanitize_capped(name, 64))).field("sink")
        })
    }

    /// Creates or replaces the sink `settings.name` (audited: `sink.put`); whether it is
    /// new. `secret` is its key: needed to create it, kept when absent on a replace.
    pub async fn put_sink(&self, settings: SinkSettings, secret: Option<String>, actor: &str) -> Result<bool> {
        let name = settings.name.clone();
        if self.config.sinks.iter().any(|s| s.name == name) {
            return Err(Failure::conflict(
                Kind::SinkInConfig,
                format!("sink {name:?} is set in the operator config file: change it there and restart"),
            )
            .field("sink"));
        }
        settings.validate_api().map_err(|(field, why)| {
            Failure::unprocessable(Kind::InvalidSink, kiosk_domain::text::sanitize_capped(&why, 400))
                .field(api_field(field))
        })?;
        let host = reqwest::Url::parse(&settings.endpoint).ok().and_then(|u| u.host_str().map(str::to_string));
        let host = host.unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.config.export.allows(bare) {
            return Err(Failure::unprocessable(
                Kind::InvalidSink,
                format!(
                    "endpoint host {:?} is not in the operator config's [export] api-hosts",
                    kiosk_domain::text::sanitize_capped(bare, 255)
                ),
            )
            .field("endpoint"));
        }
        let existing = self.store.api_sinks().await?.into_iter().find(|r| r.name == name);
        let sealed = match (secret, &existing) {
            (Some(key), _) => {
                if !KEY_BYTES.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Failure::unprocessable(
                        Kind::InvalidSink,
                        format!(
                            "secret must be {}-{} visible ASCII characters (it is sent as a header or signs bodies)",
                            KEY_BYTES.start(),
                            KEY_BYTES.end()
                        ),
                    )
                    .field("secret"));
                }
                self.sealer.seal(key.as_bytes(), &seal_context(&name))
            }
            // The kept key goes only where it went: a new endpoint or kind needs the key again
            // (else a changed endpoint would carry a Stripe key to another host).
            (None, Some(row))
                if stored_settings(row).is_some_and(|s| s.endpoint == settings.endpoint && s.kind == settings.kind) =>
            {
                row.secret.clone()
            }
            (None, Some(_)) => {
                return Err(Failure::unprocessable(
                    Kind::InvalidSink,
                    "a new endpoint or kind needs the key again (secret): the stored one goes only where it went",
                )
                .field("secret"));
            }
            (None, None) => {
                return Err(
                    Failure::unprocessable(Kind::InvalidSink, "a new sink needs its secret (its key)").field("secret")
                );
            }
        };
        let text = serde_json::to_string(&settings).map_err(|e| Failure::internal(e.to_string()))?;
        let updated_ms = (kiosk_domain::metering::now_ms() as i64)
            .max(existing.as_ref().map_or(0, |r| r.updated_ms.saturating_add(1)));
        let row = ApiSinkRow { name, settings: text, secret: sealed, updated_ms };
        self.store.put_api_sink(&row, actor).await?;
        Ok(existing.is_none())
    }

    /// Removes the API sink `name` with its cursor and parked events (audited).
    pub async fn delete_sink(&self, name: &str, actor: &str) -> Result<()> {
        if self.config.sinks.iter().any(|s| s.name == name) {
            return Err(Failure::conflict(
                Kind::SinkInConfig,
                format!("sink {name:?} is set in the operator config file: remove it there and restart"),
            )
            .field("sink"));
        }
        if !self.store.delete_api_sink(name, actor).await? {
            return Err(Failure::not_found(format!("no sink {:?}", kiosk_domain::text::sanitize_capped(name, 64)))
                .field("sink"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_hosts_name_hosts_or_their_subdomains() {
        let export =
            crate::config::ExportSettings { api_hosts: vec!["billing.example".into(), "*.stripe.test".into()] };
        assert!(export.allows("billing.example") && export.allows("BILLING.example."));
        assert!(export.allows("api.stripe.test") && export.allows("a.b.stripe.test"));
        assert!(!export.allows("stripe.test"), "a wildcard names subdomains only");
        assert!(!export.allows("evilstripe.test") && !export.allows("billing.example.evil"));
        assert!(!crate::config::ExportSettings::default().allows("billing.example"), "none by default");
    }

    #[test]
    fn settings_are_named_as_the_api_names_them() {
        assert_eq!(super::api_field("aggregate-seconds"), "aggregateSeconds");
        assert_eq!(super::api_field("batch"), "batch");
        assert_eq!(super::api_field("secret-env"), "secretEnv");
        assert_eq!(super::api_field("name"), "sink");
    }
}
