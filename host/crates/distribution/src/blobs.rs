//! Local state of distribution: a content-addressed blob cache (only verified artifacts
//! enter it) and pins, the (app, version) → manifest digest + signer record of SPEC §2
//! step 4.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactError, BlobSource, Descriptor, Part, VerifiedArtifact, check_cap, write_atomic};
use kiosk_domain::digest::Digest;

/// Blobs by digest under `<dir>/sha256/<hex>`; written atomically, re-checked on read.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir.join("sha256"))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| self.dir.join("sha256").join(hex))
    }

    /// The blob, if cached and still matching its digest (a bad entry is removed).
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes = fs::read(&path).ok()?;
        if Digest::of(&bytes).as_str() == digest {
            return Some(bytes);
        }
        tracing::warn!(%digest, path = %path.display(), "cached blob does not match its digest; removing it");
        let _ = fs::remove_file(&path);
        None
    }

    /// Stores every blob of a verified artifact.
    pub fn put_artifact(&self, artifact: &VerifiedArtifact) -> std::io::Result<()> {
        for (digest, bytes) in &artifact.blobs {
            if let Some(path) = self.path(digest)
                && !path.exists()
            {
                write_atomic(&path, bytes)?;
            }
        }
        Ok(())
    }
}

/// A source that serves blobs from the cache when it has them. Tags are always resolved
/// at the inner source (a tag is resolved once per pull, and pins catch moves).
#[derive(Debug)]
pub struct Cached<'a, S> {
    pub inner: &'a S,
    pub cache: &'a BlobCache,
}

impl<S: BlobSource> BlobSource for Cached<'_, S> {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn resolve(&self, tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        self.inner.resolve(tag, cap).await
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        check_cap(part, desc, cap)?;
        match self.cache.get(&desc.digest) {
            Some(bytes) if bytes.len() as u64 == desc.size => Ok(bytes),
            _ => self.inner.fetch(part, desc, cap).await,
        }
    }
}

/// What a version is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub digest: String,
    pub signer: String,
}

/// Pins, persisted as a JSON file written atomically.
#[derive(Debug)]
pub struct PinStore {
    path: PathBuf,
    pins: BTreeMap<String, Pin>,
}

impl PinStore {
    pub fn open(path: &Path) -> Result<Self, String> {
        let pins = match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("pin file {} is not valid: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read pin file {}: {e}", path.display())),
        };
        Ok(Self { path: path.to_path_buf(), pins })
    }

    fn key(app: &str, version: &str) -> String {
        format!("{app}@{version}")
    }

    pub fn get(&self, app: &str, version: &str) -> Option<&Pin> {
        self.pins.get(&Self::key(app, version))
    }

    /// Records the pin of a verified artifact (a no-op if already pinned to it).
    pub fn record(&mut self, artifact: &VerifiedArtifact) -> std::io::Result<()> {
        let key = Self::key(&artifact.manifest.app, &artifact.manifest.version.to_string());
        let pin = Pin { digest: artifact.digest.to_string(), signer: artifact.signers.manifest.fingerprint.clone() };
        if self.pins.get(&key) == Some(&pin) {
            return Ok(());
        }
        self.pins.insert(key, pin);
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&self.pins).map_err(std::io::Error::other)?)
    }
}
