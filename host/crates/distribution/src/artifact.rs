//! The app artifact of SPEC §2: an OCI image manifest whose config is the app manifest,
//! with exactly one `application/wasm` layer and OpenPGP signature layers. This module
//! checks the contract, fetches every blob by digest with size caps enforced before
//! reading, verifies signatures and the manifest, and only then hands out the bytes.
//!
//! Sources implement `BlobSource`; `LayoutSource` reads an OCI image layout directory
//! (air-gapped installs, the demo). Registry pulls come with the OCI client.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::icon::{IconError, VerifiedIcon};
use crate::trust::{Blob, SignatureError, TrustStore, Verified};
use kiosk_domain::digest::Digest;
use kiosk_domain::manifest::{Manifest, ManifestError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.alli-marketplace.app+type";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.alli-marketplace.manifest.v1+json";
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
pub const SIGNATURE_MEDIA_TYPE: &str = "application/pgp-signature";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (unknown fields, e.g. `subject`, are allowed: registries add them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Operator caps on artifact parts, checked against descriptors before any download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SizeCaps {
    pub oci_manifest_bytes: u64,
    pub app_manifest_bytes: u64,
    pub component_bytes: u64,
    pub signature_bytes: u64,
    pub icon_bytes: u64,
}

impl Default for SizeCaps {
    fn default() -> Self {
        Self {
            // An artifact manifest lists 3-5 descriptors: a few KiB; 64 KiB is generous.
            oci_manifest_bytes: 64 * 1024,
            // SKUs and a config schema; 256 KiB leaves room for long descriptions.
            app_manifest_bytes: 256 * 1024,
            // Rust components are 0.1-5 MiB; 50 MiB bounds memory and compile time.
            component_bytes: 50 * 1024 * 1024,
            // A detached signature is < 1 KiB; a few signatures per layer at most.
            signature_bytes: 64 * 1024,
            icon_bytes: crate::icon::DEFAULT_ICON_BYTES,
        }
    }
}

/// Which part of the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    OciManifest,
    AppManifest,
    Component,
    Signature,
    Icon,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::OciManifest => "OCI manifest",
            Part::AppManifest => "app manifest (config blob)",
            Part::Component => "component (wasm layer)",
            Part::Signature => "signature layer",
            Part::Icon => "icon (image layer)",
        })
    }
}

/// Why an artifact was refused. Nothing is cached for a refused artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("tag {tag:?} not found in {source_name}")]
    TagNotFound { tag: String, source_name: String },
    #[error("{part} is {size} bytes, over the operator's cap of {cap} bytes")]
    TooLarge { part: Part, size: u64, cap: u64 },
    #[error("{part} {digest}: content does not match its digest (got {actual})")]
    DigestMismatch { part: Part, digest: String, actual: String },
    #[error("{part} {digest}: expected {expected} bytes, found {actual}")]
    SizeMismatch { part: Part, digest: String, expected: u64, actual: u64 },
    #[error("{part}: digest {digest} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
    BadDigest { part: Part, digest: String },
    #[error("the OCI manifest is not valid: {0}")]
    OciManifest(String),
    #[error("{part} has media type {found:?}, expected {expected:?}")]
    MediaType { part: Part, found: String, expected: &'static str },
    #[error("artifactType is {found:?}, expected {ARTIFACT_TYPE:?} (or absent)")]
    ArtifactType { found: String },
    #[error(
        "the artifact has a layer of undeclared media type {found:?} (allowed: {WASM_MEDIA_TYPE}, {SIGNATURE_MEDIA_TYPE}, and one icon: image/png or image/jpeg)"
    )]
    UndeclaredLayer { found: String },
    #[error("the artifact must have exactly one {WASM_MEDIA_TYPE} layer, found {found}")]
    WasmLayers { found: usize },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Icon(#[from] IconError),
    #[error("manifest version {version} does not equal the tag {tag:?}")]
    VersionTag { version: String, tag: String },
    #[error("manifest app {found:?} is not the app being registered, {expected:?}")]
    AppMismatch { found: String, expected: String },
    #[error("{source_name}: {message}")]
    Source { source_name: String, message: String },
    /// A registry request failed; in Kiosk's words (remote text only in the server log).
    #[error("{0}")]
    Remote(crate::registry::RemoteError),
    #[error(
        "tag {tag} of {app} now resolves to {found}, but {app}@{tag} is pinned to {pinned}: \
         a published version never changes, so this is refused"
    )]
    MovedTag { app: String, tag: String, pinned: String, found: String },
}

/// Where artifacts come from.
pub trait BlobSource: Sync {
    /// A name for messages (`oci-layout:/path`, `registry.example/acme/app`).
    fn name(&self) -> String;
    /// Resolves `tag` once: the manifest's descriptor and its bytes (at most `cap`,
    /// checked against the descriptor's digest).
    fn resolve(&self, tag: &str, cap: u64)
    -> impl Future<Output = Result<(Descriptor, Vec<u8>), ArtifactError>> + Send;
    /// The blob `desc` describes, fetched by digest, at most `cap` bytes, checked
    /// against its digest while streaming.
    fn fetch(
        &self,
        part: Part,
        desc: &Descriptor,
        cap: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ArtifactError>> + Send;
}

/// Checks `desc` against `cap` before a download.
pub fn check_cap(part: Part, desc: &Descriptor, cap: u64) -> Result<(), ArtifactError> {
    if desc.size > cap {
        return Err(ArtifactError::TooLarge { part, size: desc.size, cap });
    }
    Ok(())
}

/// Refuses a descriptor whose digest is not `sha256:` + 64 lowercase hex digits, before
/// the digest is used in a path or a URL.
pub fn check_digest(part: Part, desc: &Descriptor) -> Result<(), ArtifactError> {
    match Digest::parse(&desc.digest) {
        Some(_) => Ok(()),
        None => Err(ArtifactError::BadDigest { part, digest: shown_digest(&desc.digest) }),
    }
}

/// A malformed digest, for a message: its algorithm only (`md5:…`), since the rest is
/// remote (or file) content that must not be echoed.
fn shown_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, _))
            if !alg.is_empty()
                && alg.len() <= 32
                && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)) =>
        {
            format!("{alg}:…")
        }
        _ => "(malformed)".to_string(),
    }
}

/// A media type found in a manifest, for a message: shown if it is one (RFC 6838
/// characters, type/subtype, at most 127 each), else a placeholder, so a manifest
/// cannot carry arbitrary text into an answer.
pub(crate) fn shown_media_type(found: &str) -> String {
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match found.split_once('/') {
        Some((kind, subtype)) if token(kind) && token(subtype) => found.to_string(),
        _ => "(not a media type)".to_string(),
    }
}

/// Why a JSON document did not parse, without quoting it: the document is remote (or
/// local file) content, and serde's messages can echo values.
pub fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not well-formed JSON",
        Category::Eof => "ends early",
        Category::Data => "has a missing field or a field of the wrong type",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// Reads `reader` (which claims to hold `desc`) to the end, refusing more than
/// `desc.size` bytes and checking the digest.
pub fn read_verified(part: Part, desc: &Descriptor, reader: impl Read) -> Result<Vec<u8>, ArtifactError> {
    check_digest(part, desc)?;
    let mut bytes = Vec::with_capacity(desc.size.min(1 << 20) as usize);
    reader
        .take(desc.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArtifactError::Source { source_name: format!("{part}"), message: e.to_string() })?;
    if bytes.len() as u64 != desc.size {
        return Err(ArtifactError::SizeMismatch {
            part,
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(&bytes);
    if actual.as_str() != desc.digest {
        return Err(ArtifactError::DigestMismatch { part, digest: desc.digest.clone(), actual: actual.to_string() });
    }
    Ok(bytes)
}

/// An artifact whose signatures, contract and manifest all checked out.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    /// Digest of the OCI manifest: the identity that gets pinned.
    pub digest: Digest,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub component: Vec<u8>,
    pub component_digest: Digest,
    pub signers: Verified,
    /// The icon layer, if the artifact has one (signed and checked like the rest).
    pub icon: Option<VerifiedIcon>,
    /// Every blob read (OCI manifest included), by digest: what a blob cache may keep.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Pulls `tag` of `app` (`partner/name`) from `source` and verifies it (SPEC §2).
pub async fn fetch_verified(
    source: &impl BlobSource,
    app: &str,
    tag: &str,
    trust: &TrustStore,
    caps: &SizeCaps,
    host_api: &semver::Version,
    pinned: Option<&Digest>,
) -> Result<VerifiedArtifact, ArtifactError> {
    let (desc, oci_bytes) = source.resolve(tag, caps.oci_manifest_bytes).await?;
    if let Some(pinned) = pinned
        && pinned.as_str() != desc.digest
    {
        return Err(ArtifactError::MovedTag {
            app: app.to_string(),
            tag: tag.to_string(),
            pinned: pinned.to_string(),
            found: desc.digest.clone(),
        });
    }
    if desc.media_type != OCI_MANIFEST {
        return Err(ArtifactError::MediaType {
            part: Part::OciManifest,
            found: shown_media_type(&desc.media_type),
            expected: OCI_MANIFEST,
        });
    }
    let oci: OciManifest =
        serde_json::from_slice(&oci_bytes).map_err(|e| ArtifactError::OciManifest(json_error(&e)))?;
    if let Some(mt) = &oci.media_type
        && mt != OCI_MANIFEST
    {
        return Err(ArtifactError::MediaType {
            part: Part::OciManifest,
            found: shown_media_type(mt),
            expected: OCI_MANIFEST,
        });
    }
    if let Some(at) = &oci.artifact_type
        && at != ARTIFACT_TYPE
    {
        return Err(ArtifactError::ArtifactType { found: shown_media_type(at) });
    }
    if oci.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(ArtifactError::MediaType {
            part: Part::AppManifest,
            found: shown_media_type(&oci.config.media_type),
            expected: CONFIG_MEDIA_TYPE,
        });
    }
    let (mut wasm, mut sigs, mut images) = (Vec::new(), Vec::new(), Vec::new());
    for layer in &oci.layers {
        match layer.media_type.as_str() {
            WASM_MEDIA_TYPE => wasm.push(layer),
            SIGNATURE_MEDIA_TYPE => sigs.push(layer),
            image if crate::icon::is_image(image) => images.push(layer),
            other => {
                return Err(ArtifactError::UndeclaredLayer { found: shown_media_type(other) });
            }
        }
    }
    let [wasm] = wasm.as_slice() else {
        return Err(ArtifactError::WasmLayers { found: wasm.len() });
    };
    let icon = crate::icon::icon_layer(&images)?;
    // Every digest is well-formed before any is used to fetch.
    check_digest(Part::AppManifest, &oci.config)?;
    check_digest(Part::Component, wasm)?;
    for s in &sigs {
        check_digest(Part::Signature, s)?;
    }
    if let Some((icon, _)) = icon {
        check_digest(Part::Icon, icon)?;
    }
    // Every cap is checked before any blob is downloaded.
    check_cap(Part::AppManifest, &oci.config, caps.app_manifest_bytes)?;
    check_cap(Part::Component, wasm, caps.component_bytes)?;
    for s in &sigs {
        check_cap(Part::Signature, s, caps.signature_bytes)?;
    }
    if let Some((icon, _)) = icon {
        check_cap(Part::Icon, icon, caps.icon_bytes)?;
    }
    let manifest_bytes = source.fetch(Part::AppManifest, &oci.config, caps.app_manifest_bytes).await?;
    let component = source.fetch(Part::Component, wasm, caps.component_bytes).await?;
    let mut signatures = Vec::with_capacity(sigs.len());
    for s in &sigs {
        signatures.push(source.fetch(Part::Signature, s, caps.signature_bytes).await?);
    }
    let icon_bytes = match icon {
        Some((icon, _)) => Some(source.fetch(Part::Icon, icon, caps.icon_bytes).await?),
        None => None,
    };
    let mut blobs = vec![(desc.digest.clone(), oci_bytes.clone()), (oci.config.digest.clone(), manifest_bytes.clone())];
    blobs.push((wasm.digest.clone(), component.clone()));
    blobs.extend(sigs.iter().map(|d| d.digest.clone()).zip(signatures.iter().cloned()));
    let partner = app.split_once('/').map_or(app, |(p, _)| p);
    let mut signed = vec![(Blob::Manifest, &manifest_bytes[..]), (Blob::Component, &component[..])];
    signed.extend(icon_bytes.as_deref().map(|bytes| (Blob::Icon, bytes)));
    let mut signers = trust.verify_blobs(partner, &signed, &signatures)?.into_iter();
    let (Some(manifest_signer), Some(component_signer)) = (signers.next(), signers.next()) else {
        return Err(SignatureError::Unsigned.into());
    };
    let icon_signer = signers.next();
    let signers = Verified { manifest: manifest_signer, component: component_signer };
    let manifest = Manifest::parse(&manifest_bytes, host_api)?;
    if manifest.version.to_string() != tag {
        return Err(ArtifactError::VersionTag { version: manifest.version.to_string(), tag: tag.to_string() });
    }
    if manifest.app != app {
        return Err(ArtifactError::AppMismatch { found: manifest.app.clone(), expected: app.to_string() });
    }
    let icon = match (icon, icon_bytes, icon_signer) {
        (Some((desc, format)), Some(bytes), Some(signer)) => {
            blobs.push((desc.digest.clone(), bytes.clone()));
            Some(crate::icon::verified(desc, format, bytes, signer)?)
        }
        _ => None,
    };
    Ok(VerifiedArtifact {
        digest: Digest::of(&oci_bytes),
        manifest,
        manifest_bytes,
        component_digest: Digest::of(&component),
        component,
        signers,
        icon,
        blobs,
    })
}

/// Where an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    Layout { dir: PathBuf, tag: String },
    Registry { host: String, repository: String, tag: String },
}

impl ArtifactRef {
    /// Parses `host[:port]/repository:tag` or `oci-layout:<dir>:<tag>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("oci-layout:") {
            let (dir, tag) =
                rest.rsplit_once(':').ok_or_else(|| format!("reference {text:?}: expected oci-layout:<dir>:<tag>"))?;
            if !valid_tag(tag) {
                return Err(format!("reference {text:?}: {tag:?} is not a valid tag"));
            }
            return Ok(Self::Layout { dir: dir.into(), tag: tag.into() });
        }
        let (name, tag) = match text.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => return Err(format!("reference {text:?} has no tag: expected host/repository:tag")),
        };
        let (host, repository) = name
            .split_once('/')
            .filter(|(host, _)| host.contains('.') || host.contains(':') || *host == "localhost")
            .ok_or_else(|| format!("reference {text:?} must name its registry host: host[:port]/repository:tag"))?;
        if !valid_host(host) {
            return Err(format!("reference {text:?}: {host:?} is not a valid host[:port]"));
        }
        if !valid_repository(repository) {
            return Err(format!(
                "reference {text:?}: {repository:?} is not a valid repository name (lowercase path components \
                 of letters and digits joined by '.', '_', '__' or dashes)"
            ));
        }
        if !valid_tag(tag) {
            return Err(format!(
                "reference {text:?}: {tag:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-], at most 128)"
            ));
        }
        Ok(Self::Registry { host: host.into(), repository: repository.into(), tag: tag.into() })
    }

    /// Parses `host[:port]/repository` (no tag: what a watch names), with the same
    /// grammar as `parse`; returns (host, repository).
    pub fn parse_repository(text: &str) -> Result<(String, String), String> {
        let (host, repository) = text
            .split_once('/')
            .filter(|(host, _)| host.contains('.') || host.contains(':') || *host == "localhost")
            .ok_or_else(|| format!("reference {text:?} must name its registry host: host[:port]/repository"))?;
        if repository.contains(':') || repository.contains('@') {
            return Err(format!(
                "reference {text:?} names a tag or digest: a watch names a repository, host/repository"
            ));
        }
        if !valid_host(host) {
            return Err(format!("reference {text:?}: {host:?} is not a valid host[:port]"));
        }
        if !valid_repository(repository) {
            return Err(format!(
                "reference {text:?}: {repository:?} is not a valid repository name (lowercase path components \
                 of letters and digits joined by '.', '_', '__' or dashes)"
            ));
        }
        Ok((host.to_string(), repository.to_string()))
    }

    pub fn tag(&self) -> &str {
        match self {
            Self::Layout { tag, .. } | Self::Registry { tag, .. } => tag,
        }
    }

    /// `partner/name` from the last two path segments of a registry repository.
    pub fn default_app(&self) -> Option<String> {
        match self {
            Self::Layout { .. } => None,
            Self::Registry { repository, .. } => {
                let parts: Vec<&str> = repository.rsplitn(3, '/').collect();
                (parts.len() >= 2).then(|| format!("{}/{}", parts[1], parts[0]))
            }
        }
    }
}

/// `host[:port]`: letters, digits, dots, dashes, a port, or a bracketed IPv6 literal.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// An OCI repository name (distribution spec): `/`-separated components of lowercase
/// letters and digits joined by `.`, `_`, `__` or runs of `-`. No empty or `..`
/// components, so a name can be neither a path trick nor a prefix escape.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            if bytes.first().is_none_or(|b| !alnum(b)) || bytes.last().is_none_or(|b| !alnum(b)) {
                return false;
            }
            // Separators between alphanumeric runs: ".", "_", "__" or "-"+.
            component
                .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                .filter(|sep| !sep.is_empty())
                .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-'))
                && bytes.iter().all(|b| alnum(b) || b"._-".contains(b))
        })
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// An OCI image layout directory (https://github.com/opencontainers/image-spec/blob/main/image-layout.md).
#[derive(Debug, Clone)]
pub struct LayoutSource {
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl LayoutSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The blob's file; only for a well-formed digest (index.json and manifests are
    /// input: a digest like `sha256:../../etc/passwd` never becomes a path).
    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Digest::parse(digest).map(|d| self.dir.join("blobs").join("sha256").join(d.hex()))
    }

    fn read_blob(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        check_cap(part, desc, cap)?;
        check_digest(part, desc)?;
        let path = self
            .blob_path(&desc.digest)
            .ok_or_else(|| ArtifactError::BadDigest { part, digest: shown_digest(&desc.digest) })?;
        let file =
            fs::File::open(&path).map_err(|e| self.source_err(format!("{part} {}: {}", desc.digest, e.kind())))?;
        read_verified(part, desc, file)
    }

    fn source_err(&self, message: impl Into<String>) -> ArtifactError {
        ArtifactError::Source { source_name: self.name(), message: message.into() }
    }

    fn index(&self) -> Result<Index, ArtifactError> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(|e| self.source_err(format!("cannot read index.json: {}", e.kind())))?;
        serde_json::from_slice(&bytes).map_err(|e| self.source_err(format!("index.json {}", json_error(&e))))
    }

    /// Writes an artifact into the layout under `tag` (replacing the tag if present);
    /// returns the manifest's digest. Used by the demo seed, `kiosk run` and tests.
    pub fn write(
        &self,
        tag: &str,
        app_manifest: &[u8],
        component: &[u8],
        signatures: &[Vec<u8>],
    ) -> std::io::Result<Digest> {
        self.write_artifact(tag, &crate::publish::assemble(app_manifest, component, signatures))
    }

    /// Writes the assembled artifact `blobs` (`publish::assemble_with_icon`) into the
    /// layout under `tag`, as it would be pushed (replacing the tag if present); returns
    /// the manifest's digest. Used by `kiosk publish` to an `oci-layout:` reference.
    pub fn write_artifact(&self, tag: &str, blobs: &crate::publish::ArtifactBlobs) -> std::io::Result<Digest> {
        let dir = self.dir.join("blobs").join("sha256");
        fs::create_dir_all(&dir)?;
        let put = |bytes: &[u8]| write_atomic(&dir.join(Digest::of(bytes).hex()), bytes);
        put(&blobs.config_bytes)?;
        for (_, bytes) in &blobs.layers {
            put(bytes)?;
        }
        put(&blobs.manifest)?;
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: blobs.manifest_digest.to_string(),
            size: blobs.manifest.len() as u64,
            annotations: [(REF_NAME.to_string(), tag.to_string())].into_iter().collect(),
        };
        write_atomic(&self.dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut index = self.index().unwrap_or(Index { schema_version: 2, manifests: Vec::new() });
        index.manifests.retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        index.manifests.push(desc);
        write_atomic(&self.dir.join("index.json"), &serde_json::to_vec_pretty(&index).map_err(std::io::Error::other)?)?;
        Ok(blobs.manifest_digest.clone())
    }
}

impl BlobSource for LayoutSource {
    fn name(&self) -> String {
        format!("oci-layout:{}", self.dir.display())
    }

    async fn resolve(&self, tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        let desc = self
            .index()?
            .manifests
            .into_iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
            .ok_or_else(|| ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() })?;
        let bytes = self.read_blob(Part::OciManifest, &desc, cap)?;
        Ok((desc, bytes))
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        self.read_blob(part, desc, cap)
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            ArtifactRef::parse("127.0.0.1:5000/acme/budget-pacing:1.4.34").unwrap(),
            ArtifactRef::Registry {
                host: "127.0.0.1:5000".into(),
                repository: "acme/budget-pacing".into(),
                tag: "1.4.34".into()
            }
        );
        let r = ArtifactRef::parse("registry.example/market/acme/budget-pacing:1.4.34").unwrap();
        assert_eq!(r.default_app().as_deref(), Some("acme/budget-pacing"));
        assert_eq!(
            ArtifactRef::parse("oci-layout:/tmp/x:1.0.0").unwrap(),
            ArtifactRef::Layout { dir: "/tmp/x".into(), tag: "1.0.0".into() }
        );
        assert!(
            ArtifactRef::parse("acme/budget-pacing:1.0")
                .unwrap_err()
                .to_string()
                .contains("must name its registry host")
        );
        assert!(ArtifactRef::parse("localhost:5000/acme/app").unwrap_err().contains("has no tag"));
    }
}
