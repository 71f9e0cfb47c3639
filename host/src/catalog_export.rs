//! `kiosk catalog export DIR`: the public catalog as static files, signed, so that a
//! marketplace can be mirrored on any static host and checked with stock tools
//! (`gpg --verify SHA256SUMS.asc SHA256SUMS && sha256sum -c SHA256SUMS`).
//!
//! Like `kiosk admin`, it reads through the HTTP API with an operator token
//! (`KIOSK_URL`, `KIOSK_TOKEN`): every file is the document the catalog API answers
//! (lists without their page envelope), so the export holds exactly what the API lists
//! for everyone — no tenant's private apps, no disabled partner's apps. Layout:
//!
//! ```text
//! catalog/categories.json                          GET /v1/catalog/categories (items)
//! catalog/apps.json                                GET /v1/catalog/apps (items)
//! catalog/categories/{category}.json               the apps of that category
//! catalog/apps/{partner}/{name}.json               GET /v1/catalog/apps/{partner}/{name}
//! catalog/apps/{partner}/{name}/versions.json      GET …/versions (items)
//! catalog/apps/{partner}/{name}/versions/{v}.json  GET …/versions/{v}
//! catalog/apps/{partner}/{name}/versions/{v}.icon.png|jpg   GET …/versions/{v}/icon
//! SHA256SUMS                                       every file above, by path
//! SHA256SUMS.asc                                   detached, armoured, the operator's key
//! ```
//!
//! JSON is written with sorted member names, indented, with a final newline: the same
//! catalog gives the same bytes. The export is written to a temporary directory beside
//! DIR and renamed into place, so DIR never holds half an export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};

use kiosk_domain::digest::Digest;
use kiosk_domain::manifest::is_slug;
use kiosk_domain::text::sanitize_capped;

use crate::admin::Client;

/// Items per catalog page asked for (the API's largest page).
const PAGE: &str = "1000";

/// Pages of one list followed at most: a server whose cursor never ends is an error,
/// not an endless export (10,000,000 items).
const MAX_PAGES: usize = 10_000;

/// One request's bound: the catalog's answers are small; a stalled server is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Writes the public catalog to DIR as JSON files, with SHA256SUMS and its detached
    /// OpenPGP signature (SHA256SUMS.asc) by the operator's key.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The directory to write: created, or replaced when empty (with --force: whatever
    /// it holds).
    dir: PathBuf,
    /// The operator's OpenPGP secret key, armoured and unencrypted (`gpg --export-secret-keys
    /// --armor FPR`), that signs SHA256SUMS.
    #[arg(long)]
    key: PathBuf,
    /// Replace DIR even if it holds files (a previous export): the old one is moved
    /// aside, the new one moved in, then the old one removed.
    #[arg(long)]
    force: bool,
    /// The Kiosk API's base URL.
    #[arg(long, env = "KIOSK_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An operator token.
    #[arg(long, env = "KIOSK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs `kiosk catalog …`.
pub async fn run(cmd: CatalogCmd) -> anyhow::Result<()> {
    match cmd {
        CatalogCmd::Export(args) => export(args).await,
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let key = std::fs::read(&args.key).with_context(|| format!("cannot read --key {}", args.key.display()))?;
    let fingerprint = check_signing_key(&key).with_context(|| format!("--key {}", args.key.display()))?;
    check_target(&args.dir, args.force)?;
    let token = args.token.context("no token: pass --token or set KIOSK_TOKEN to an operator token")?;
    let base = Url::parse(&args.url).with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--url {base} must be http:// or https://");
    }
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().context("cannot set up the HTTP client")?;
    let api = Api { client: Client { http, base, token } };
    let identity = api.get(&["v1", "whoami"], &[]).await?.unwrap_or_default();
    let role = identity["role"].as_str().unwrap_or("unknown");
    if role != "operator" {
        bail!("the export needs an operator token (this one is a {} token)", sanitize_capped(role, 32));
    }

    let files = read_catalog(&api).await?;
    let mut sums = String::new();
    for (path, bytes) in &files {
        sums.push_str(&format!("{}  {path}\n", Digest::of(bytes).hex()));
    }
    let (signature, _) = kiosk_distribution::publish::sign_detached(&key, sums.as_bytes())
        .with_context(|| format!("signing SHA256SUMS with --key {}", args.key.display()))?;
    let count = files.len();
    let written = write_export(&args.dir, args.force, files, sums.as_bytes(), &signature)?;
    println!("exported {count} files to {} (SHA256SUMS signed by {fingerprint})", written.display());
    Ok(())
}

/// The catalog's files by path (relative, `/`-separated), each as its bytes.
async fn read_catalog(api: &Api) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let categories = api.walk(&["v1", "catalog", "categories"]).await?;
    let apps = api.walk(&["v1", "catalog", "apps"]).await?;
    files.insert("catalog/categories.json".to_string(), json_file(&Value::Array(categories.clone())));
    files.insert("catalog/apps.json".to_string(), json_file(&Value::Array(apps.clone())));
    for category in &categories {
        let category = category.as_str().filter(|c| is_slug(c)).with_context(|| {
            format!("the catalog lists category {} that is not a slug", sanitize_capped(&category.to_string(), 80))
        })?;
        // As `GET /v1/catalog/apps?category=` filters: the apps declaring it.
        let listed: Vec<Value> = apps
            .iter()
            .filter(|a| a["categories"].as_array().is_some_and(|c| c.iter().any(|c| c == category)))
            .cloned()
            .collect();
        files.insert(format!("catalog/categories/{category}.json"), json_file(&Value::Array(listed)));
    }
    for app in &apps {
        let id = app["app"].as_str().unwrap_or_default();
        let (partner, name) = id
            .split_once('/')
            .filter(|(p, n)| is_slug(p) && is_slug(n))
            .with_context(|| format!("the catalog lists app {} that is not partner/name", sanitize_capped(id, 140)))?;
        let at = ["v1", "catalog", "apps", partner, name];
        let detail = api.get(&at, &[]).await?.with_context(|| changed(id))?;
        files.insert(format!("catalog/apps/{partner}/{name}.json"), json_file(&detail));
        let versions = api.walk(&[&at[..], &["versions"]].concat()).await?;
        files
            .insert(format!("catalog/apps/{partner}/{name}/versions.json"), json_file(&Value::Array(versions.clone())));
        for summary in &versions {
            let version = summary["version"].as_str().filter(|v| file_safe_version(v)).with_context(|| {
                format!(
                    "app {id}: version {} is not a semantic version",
                    sanitize_capped(&summary["version"].to_string(), 80)
                )
            })?;
            let at = [&at[..], &["versions", version]].concat();
            let document = api.get(&at, &[]).await?.with_context(|| changed(&format!("{id}@{version}")))?;
            let stem = format!("catalog/apps/{partner}/{name}/versions/{version}");
            files.insert(format!("{stem}.json"), json_file(&document));
            // ICONS: the one place a version's icon is written (`GET …/versions/{v}/icon`,
            // the core's `Kiosk::catalog_icon`): PNG or JPEG as signed by the partner;
            // none (404) for a version without one.
            if let Some((extension, bytes)) = api.icon(&[&at[..], &["icon"]].concat()).await? {
                files.insert(format!("{stem}.icon.{extension}"), bytes);
            }
        }
    }
    Ok(files)
}

fn changed(what: &str) -> String {
    format!("{what} left the catalog during the export: run it again")
}

/// A version that is safe as a file name: what semantic versions are made of
/// (`1.4.0-rc.1+build.5`), not `.` or `..`.
fn file_safe_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-".contains(&b))
}

/// `value` as an export file: member names sorted at every depth, indented, a final
/// newline. The same document gives the same bytes.
fn json_file(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut names: Vec<&String> = map.keys().collect();
                names.sort();
                Value::Object(names.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect::<Map<_, _>>())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&sorted(value)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The key signs: an OpenPGP secret key, valid, not revoked, with a signing-capable
/// (sub)key that is alive, not revoked, and whose secret part is not encrypted. Returns
/// the key's fingerprint.
fn check_signing_key(tsk: &[u8]) -> anyhow::Result<String> {
    use sequoia_openpgp::Cert;
    use sequoia_openpgp::parse::Parse;
    use sequoia_openpgp::policy::StandardPolicy;
    use sequoia_openpgp::types::RevocationStatus;

    let cert = Cert::from_bytes(tsk).context("not an OpenPGP key (give `gpg --export-secret-keys --armor FPR`)")?;
    let fingerprint = cert.fingerprint().to_hex();
    if !cert.is_tsk() {
        bail!("{fingerprint} is a public certificate: give the secret key (`gpg --export-secret-keys --armor`)");
    }
    let policy = StandardPolicy::new();
    let valid = cert.with_policy(&policy, None).map_err(|e| anyhow::anyhow!("key {fingerprint} is not valid: {e}"))?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        bail!("key {fingerprint} is revoked");
    }
    valid.alive().map_err(|e| anyhow::anyhow!("key {fingerprint} is not alive (expired?): {e}"))?;
    let signing = || valid.keys().supported().alive().revoked(false).for_signing();
    if signing().secret().next().is_none() {
        bail!(
            "key {fingerprint} has no valid, unrevoked signing-capable key with its secret part (export the key \
             that signs, with `gpg --export-secret-keys --armor`)"
        );
    }
    if signing().unencrypted_secret().next().is_none() {
        bail!(
            "key {fingerprint} is encrypted (passphrase-protected): give an unencrypted export of the signing key \
             and keep that file as safe as the key"
        );
    }
    Ok(fingerprint)
}

/// DIR may be written: absent, an empty directory, or (with `force`) a directory.
fn check_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
        Ok(meta) if !meta.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            let empty =
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_none();
            if !empty && !force {
                bail!("{} is not empty: pass --force to replace it (a previous export)", dir.display());
            }
            Ok(())
        }
    }
}

/// Writes the export into a temporary directory beside `dir`, then renames it to `dir`
/// (an existing `dir` is first renamed aside, then removed). Returns `dir`.
fn write_export(
    dir: &Path,
    force: bool,
    files: BTreeMap<String, Vec<u8>>,
    sums: &[u8],
    signature: &[u8],
) -> anyhow::Result<PathBuf> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir.file_name().with_context(|| format!("{} names no directory", dir.display()))?.to_string_lossy();
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.export-"))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))?;
    let extra = [("SHA256SUMS".to_string(), sums.to_vec()), ("SHA256SUMS.asc".to_string(), signature.to_vec())];
    for (path, bytes) in files.into_iter().chain(extra) {
        let file = staging.path().join(&path);
        if let Some(folder) = file.parent() {
            std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
        }
        std::fs::write(&file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
    }
    // Checked again at the last moment: another process may have written there since.
    check_target(dir, force)?;
    let old = match std::fs::rename(staging.path(), dir) {
        Ok(()) => None,
        Err(_) if dir.is_dir() => {
            // A directory with files (--force): swap it aside, then move the export in.
            let aside = tempfile::Builder::new()
                .prefix(&format!(".{name}.old-"))
                .tempdir_in(&parent)
                .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))?;
            let old = aside.path().join("export");
            std::fs::rename(dir, &old).with_context(|| format!("cannot move {} aside", dir.display()))?;
            if let Err(e) = std::fs::rename(staging.path(), dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(e).with_context(|| format!("cannot move the export to {}", dir.display()));
            }
            Some(aside)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot move the export to {}", dir.display())),
    };
    // The staging directory is now `dir`: it must not be removed with its guard.
    let _ = staging.keep();
    drop(old);
    Ok(dir.to_path_buf())
}

/// The API, read with the operator's token.
struct Api {
    client: Client,
}

impl Api {
    async fn send(&self, path: &[&str], query: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        let url = self.client.url(path, query)?;
        self.client
            .http
            .get(url)
            .bearer_auth(&self.client.token)
            .send()
            .await
            .with_context(|| format!("cannot reach Kiosk at {}", self.client.base))
    }

    /// A JSON document; `None` for 404; another failure is an error with the problem's
    /// detail.
    async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Option<Value>> {
        let response = self.send(path, query).await?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("reading the answer of /{}", path.join("/")))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let detail = problem["detail"].as_str().map(|d| sanitize_capped(d, 2048)).unwrap_or_default();
            bail!("GET /{}: {} {detail}", path.join("/"), status.as_u16());
        }
        serde_json::from_slice(&bytes).map(Some).with_context(|| format!("/{} did not answer JSON", path.join("/")))
    }

    /// Every item of a list, following `next`.
    async fn walk(&self, path: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", PAGE)];
            if let Some(after) = &after {
                query.push(("after", after.as_str()));
            }
            let page = self.get(path, &query).await?.with_context(|| changed(&format!("/{}", path.join("/"))))?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) if after.as_deref() != Some(next) => after = Some(next.to_string()),
                Some(_) => bail!("/{}: the server repeated its page cursor", path.join("/")),
                None => return Ok(items),
            }
        }
        bail!("/{}: more than {MAX_PAGES} pages", path.join("/"))
    }

    /// A version's icon: (file extension, bytes), `None` when it has none (404).
    async fn icon(&self, path: &[&str]) -> anyhow::Result<Option<(&'static str, Vec<u8>)>> {
        let response = self.send(path, &[]).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("GET /{}: {}", path.join("/"), status.as_u16());
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let extension = match media_type.split(';').next().unwrap_or_default().trim() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            other => {
                bail!("/{}: an icon of type {} (PNG or JPEG expected)", path.join("/"), sanitize_capped(other, 80))
            }
        };
        let bytes = response.bytes().await.with_context(|| format!("reading /{}", path.join("/")))?;
        Ok(Some((extension, bytes.to_vec())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_files_are_canonical() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": [2, {"z": 0, "y": 1}], "c": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": null, "d": [2, {"y": 1, "z": 0}]}, "b": 1}"#).unwrap();
        assert_eq!(json_file(&a), json_file(&b));
        let text = String::from_utf8(json_file(&a)).unwrap();
        assert!(text.ends_with("}\n") && text.find("\"a\"") < text.find("\"b\""), "{text}");
    }

    #[test]
    fn versions_are_file_names() {
        for ok in ["1.0.0", "1.4.0-rc.1+build.5"] {
            assert!(file_safe_version(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "1.0.0/x", "v1", "1.0.0\0"] {
            assert!(!file_safe_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_non_empty_directory_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        check_target(&dir.path().join("absent"), false).unwrap();
        check_target(dir.path(), false).unwrap();
        std::fs::write(dir.path().join("x"), "x").unwrap();
        assert!(check_target(dir.path(), false).unwrap_err().to_string().contains("--force"));
        check_target(dir.path(), true).unwrap();
        assert!(check_target(&dir.path().join("x"), true).is_err());
    }
}
