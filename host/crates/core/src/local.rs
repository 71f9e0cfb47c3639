//! Versions built on this machine (the demo seed, `kiosk run`): signed with a local
//! partner key kept in a directory, written to an OCI layout, and registered through the
//! same verification path as a partner's registry reference. There is no unsigned path
//! into the catalog.

use std::path::Path;

use anyhow::Context as _;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::parse::Parse as _;
use sequoia_openpgp::serialize::SerializeInto as _;

use kiosk_distribution::artifact::LayoutSource;
use kiosk_domain::manifest::Manifest;
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::VersionRow;

use crate::lifecycle::Kiosk;

/// Registers `manifest_bytes` + `wasm` (unless that app@version is registered already,
/// in which case the local build must be the registered one), signing them with the
/// partner's local key in `key_dir` (created on first use and registered as the
/// partner's certificate). Returns the registered version.
pub async fn register_local_build(
    kiosk: &Kiosk,
    manifest_bytes: &[u8],
    wasm: &[u8],
    key_dir: &Path,
    actor: &str,
) -> anyhow::Result<VersionRow> {
    let manifest = Manifest::parse(manifest_bytes, &HOST_API_VERSION)?;
    let id = manifest.app_id().context("manifest app is not partner/name")?;
    let partner = id.partner();
    let key_path = key_dir.join(format!("local-{partner}.key"));
    let tsk = match std::fs::read(&key_path) {
        Ok(bytes) => bytes,
        Err(_) => {
            let (cert, _) =
                CertBuilder::general_purpose(Some(format!("{partner} local <local@{partner}.example>"))).generate()?;
            let bytes = cert.as_tsk().armored().to_vec()?;
            std::fs::create_dir_all(key_dir).with_context(|| format!("cannot create {}", key_dir.display()))?;
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            std::io::Write::write_all(&mut file.open(&key_path)?, &bytes)
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            bytes
        }
    };
    let cert = sequoia_openpgp::Cert::from_bytes(&tsk)?;
    let public = cert.armored().to_vec()?;
    kiosk.store.create_partner(partner, partner, actor).await?;
    if !kiosk.store.add_certificate(partner, &cert.fingerprint().to_hex(), &public, actor).await? {
        anyhow::bail!("the local key of {partner} ({}) is registered for another partner", key_path.display());
    }
    let version = manifest.version.to_string();
    let layout_dir = key_dir.join("layout");
    if kiosk.store.version(&manifest.app, &version).await?.is_none() {
        let (m_sig, _) = kiosk_distribution::publish::sign_detached(&tsk, manifest_bytes)?;
        let (w_sig, _) = kiosk_distribution::publish::sign_detached(&tsk, wasm)?;
        LayoutSource::new(&layout_dir).write(&version, manifest_bytes, wasm, &[m_sig, w_sig])?;
        let reference = format!("oci-layout:{}:{version}", layout_dir.display());
        kiosk
            .register_and_keep(&LayoutSource::new(&layout_dir), &manifest.app, &version, &reference, actor)
            .await
            .map_err(|e| {
                let named = format!("{}@{version}", manifest.app);
                if e.detail.contains(&named) {
                    anyhow::anyhow!("{}", e.detail)
                } else {
                    anyhow::anyhow!("{named}: {}", e.detail)
                }
            })?;
    }
    let row = kiosk.store.version(&manifest.app, &version).await?.context("registered version missing")?;
    let local = kiosk_domain::digest::Digest::of(wasm);
    if row.component_digest != local.as_str() {
        anyhow::bail!(
            "{}@{version} is registered with component {} but the local build is {local}: bump the version in the \
             manifest, or use another database",
            manifest.app,
            row.component_digest
        );
    }
    Ok(row)
}
