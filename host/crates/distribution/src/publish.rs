//! The partner side: sign an app's manifest and component with an OpenPGP secret key and
//! push them as the SPEC §2 artifact, to a registry or an OCI image layout.

use openpgp::Cert;
use openpgp::armor;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Serialize as _;
use openpgp::types::SignatureType;
use sequoia_openpgp as openpgp;

use crate::artifact::{ArtifactError, Descriptor, OCI_MANIFEST, OciManifest};
use crate::icon::IconFormat;
use crate::registry::Registry;
use kiosk_domain::digest::Digest;

/// Signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the key file is not an OpenPGP secret key: {0}")]
    Parse(String),
    #[error(
        "certificate {0} has no usable signing key with unencrypted secret material (export it without a passphrase, or use gpg --detach-sign)"
    )]
    NoSigningKey(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Makes an ASCII-armoured detached signature of `data` with the first valid signing key
/// of the secret key `tsk`. Returns the signature and the certificate's fingerprint.
pub fn sign_detached(tsk: &[u8], data: &[u8]) -> Result<(Vec<u8>, String), SignError> {
    let cert = Cert::from_bytes(tsk).map_err(|e| SignError::Parse(e.to_string()))?;
    let fingerprint = cert.fingerprint().to_hex();
    let policy = StandardPolicy::new();
    let key = cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .unencrypted_secret()
        .next()
        .ok_or_else(|| SignError::NoSigningKey(fingerprint.clone()))?;
    let mut keypair = key.key().clone().into_keypair().map_err(|e| SignError::Sign(e.to_string()))?;
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .sign_message(&mut keypair, data)
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let mut out = Vec::new();
    let mut writer =
        armor::Writer::new(&mut out, armor::Kind::Signature).map_err(|e| SignError::Sign(e.to_string()))?;
    openpgp::Packet::from(sig).serialize(&mut writer).map_err(|e| SignError::Sign(e.to_string()))?;
    writer.finalize().map_err(|e| SignError::Sign(e.to_string()))?;
    Ok((out, fingerprint))
}

/// The blobs of one artifact, ready to push (or to write into a layout).
#[derive(Debug, Clone)]
pub struct ArtifactBlobs {
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    /// Layers with their bytes: wasm first, then the icon if any, then signatures.
    pub layers: Vec<(Descriptor, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// Assembles the artifact: config = app manifest, one wasm layer, signature layers.
pub fn assemble(app_manifest: &[u8], component: &[u8], signatures: &[Vec<u8>]) -> ArtifactBlobs {
    assemble_with_icon(app_manifest, component, None, signatures)
}

/// Assembles the artifact: config = app manifest, one wasm layer, the icon layer if
/// `icon` (its format and bytes) is given, then the signature layers (by convention
/// those of the manifest, the component and the icon, in that order).
pub fn assemble_with_icon(
    app_manifest: &[u8],
    component: &[u8],
    icon: Option<(IconFormat, &[u8])>,
    signatures: &[Vec<u8>],
) -> ArtifactBlobs {
    use crate::artifact::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE, WASM_MEDIA_TYPE};
    let describe = |bytes: &[u8], media_type: &str, title: Option<&str>| Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::of(bytes).to_string(),
        size: bytes.len() as u64,
        annotations: title
            .map(|t| [("org.opencontainers.image.title".to_string(), t.to_string())].into_iter().collect())
            .unwrap_or_default(),
    };
    let config = describe(app_manifest, CONFIG_MEDIA_TYPE, None);
    let mut layers = vec![(describe(component, WASM_MEDIA_TYPE, Some("app.wasm")), component.to_vec())];
    let mut names = vec!["manifest.json.asc".to_string(), "app.wasm.asc".to_string()];
    if let Some((format, bytes)) = icon {
        layers.push((describe(bytes, format.media_type(), Some(format.file_name())), bytes.to_vec()));
        names.push(format!("{}.asc", format.file_name()));
    }
    for (i, sig) in signatures.iter().enumerate() {
        let name = names.get(i).cloned().unwrap_or_else(|| format!("signature-{i}.asc"));
        layers.push((describe(sig, SIGNATURE_MEDIA_TYPE, Some(&name)), sig.clone()));
    }
    let oci = OciManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: config.clone(),
        layers: layers.iter().map(|(d, _)| d.clone()).collect(),
        annotations: Default::default(),
    };
    let manifest = serde_json::to_vec(&oci).unwrap_or_default();
    let manifest_digest = Digest::of(&manifest);
    ArtifactBlobs { config, config_bytes: app_manifest.to_vec(), layers, manifest, manifest_digest }
}

/// Pushes `blobs` to `repository:tag` of `registry`; `progress` is told each blob's size
/// once it is pushed. Returns the manifest digest.
pub async fn push(
    registry: &Registry,
    repository: &str,
    tag: &str,
    blobs: &ArtifactBlobs,
    mut progress: impl FnMut(u64),
) -> Result<Digest, ArtifactError> {
    let reference =
        oci_client::Reference::with_tag(registry.host().to_string(), repository.to_string(), tag.to_string());
    let client = registry.client();
    // Pushing needs push credentials on the reference first.
    registry
        .with_retries("authenticate for push", || {
            client.auth(&reference, registry.auth(), oci_client::RegistryOperation::Push)
        })
        .await?;
    let all = std::iter::once((&blobs.config, &blobs.config_bytes)).chain(blobs.layers.iter().map(|(d, b)| (d, b)));
    for (desc, bytes) in all {
        let data = bytes::Bytes::from(bytes.clone());
        registry
            .with_retries(&format!("push blob {}", desc.digest), || {
                client.push_blob(&reference, data.clone(), &desc.digest)
            })
            .await?;
        progress(desc.size);
    }
    let content_type = http::HeaderValue::from_static(OCI_MANIFEST);
    let body = bytes::Bytes::from(blobs.manifest.clone());
    registry
        .with_retries("push manifest", || client.push_manifest_raw(&reference, body.clone(), content_type.clone()))
        .await?;
    Ok(blobs.manifest_digest.clone())
}
