//! The on-disk cache of compiled components, keyed by component digest and engine
//! settings. Entries are written atomically (temp file, fsync, rename) and carry a
//! checksum that is verified before wasmtime deserialises them.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;
use kiosk_domain::digest::Digest;

const MAGIC: &[u8; 8] = b"KIOSKCC1";
const HEADER: usize = MAGIC.len() + 32;

/// How a component became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the disk cache; nothing was compiled.
    Hit,
    /// Compiled and, if a cache directory is set, stored.
    Compiled,
    /// A cache entry existed but was unusable (reason given); compiled and replaced.
    Rebuilt { reason: String },
}

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash is stable
/// across processes (std's hashers make no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// A cache in `dir` (created if absent) for artefacts of `engine`, whose pooling
    /// allocator is configured as `pool` says. wasmtime's compatibility hash leaves the
    /// pooling limits out, but a component is validated against them when it is loaded:
    /// with them in the key, a host whose limits a component exceeds finds no entry
    /// (and reports the compile error) instead of "discarding" another host's valid one.
    pub fn open(dir: &Path, engine: &Engine, pool: &str) -> Result<Self, LoadError> {
        fs::create_dir_all(dir).map_err(|e| cache_err(dir, format!("cannot create directory: {e}")))?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.write(pool.as_bytes());
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        Ok(Self { dir: dir.to_path_buf(), engine_key })
    }

    /// Where the entry for `digest` lives.
    pub fn entry_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", digest.hex(), self.engine_key))
    }

    /// The compiled component for `wasm` (whose digest is `digest`), from the cache or
    /// freshly compiled and stored.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &Digest,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let path = self.entry_path(digest);
        let rebuilt = match fs::read(&path) {
            Ok(bytes) => match load_entry(engine, &bytes) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(reason) => {
                    tracing::warn!(%digest, path = %path.display(), %reason, "discarding unusable compile-cache entry");
                    Some(reason)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("unreadable: {e}")),
        };
        let component = compile(engine, wasm, digest)?;
        let serialized =
            component.serialize().map_err(|e| cache_err(&path, format!("cannot serialise compiled component: {e}")))?;
        self.store(&path, &serialized)?;
        let outcome = match rebuilt {
            Some(reason) => CacheOutcome::Rebuilt { reason },
            None => CacheOutcome::Compiled,
        };
        Ok((component, outcome))
    }

    /// Removes the entry of `digest` (a component refused after it was compiled, so
    /// its artefact does not stay on disk for nothing); a missing entry is fine.
    pub fn remove(&self, digest: &Digest) {
        let path = self.entry_path(digest);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%digest, path = %path.display(), error = %e, "cannot remove a compile-cache entry");
        }
    }

    fn store(&self, path: &Path, serialized: &[u8]) -> Result<(), LoadError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(|e| cache_err(&self.dir, format!("cannot create temp file: {e}")))?;
        let checksum = Sha256::digest(serialized);
        let written = tmp
            .write_all(MAGIC)
            .and_then(|()| tmp.write_all(&checksum))
            .and_then(|()| tmp.write_all(serialized))
            .and_then(|()| tmp.as_file().sync_all());
        written.map_err(|e| cache_err(path, format!("cannot write entry: {e}")))?;
        tmp.persist(path).map_err(|e| cache_err(path, format!("cannot move entry into place: {}", e.error)))?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Compiles a component (no cache).
pub fn compile(engine: &Engine, wasm: &[u8], digest: &Digest) -> Result<Component, LoadError> {
    Component::new(engine, wasm).map_err(|e| LoadError::Compile { digest: digest.clone(), message: format!("{e:#}") })
}

fn load_entry(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a Kiosk compile-cache entry (bad header)".into());
    }
    let (checksum, payload) = bytes[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != checksum {
        return Err("checksum mismatch (entry corrupted)".into());
    }
    // SAFETY: `payload` was produced by `Component::serialize` of this host (the file
    // name carries the engine's compatibility hash and Kiosk's version) and its SHA-256
    // checksum matched, so it is the exact artefact wasmtime wrote. wasmtime also checks
    // its own header for engine compatibility.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, payload) };
    component.map_err(|e| format!("wasmtime refused it: {e}"))
}

fn cache_err(path: &Path, message: String) -> LoadError {
    LoadError::Cache { path: path.display().to_string(), message }
}
