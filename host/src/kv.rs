//! Key-value storage of installations, scoped to (tenant, installation).
//!
//! A call never does storage I/O while its Store is alive: the host loads the
//! installation's snapshot before the call, the guest reads and writes a `KvSession`
//! in memory, and the host commits the session's changes after the call completes
//! (and drops them if it trapped). The quota bounds the snapshot's size.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The owner of a key-value namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvScope {
    pub tenant: String,
    pub installation: String,
}

/// All entries of one scope.
pub type KvEntries = BTreeMap<String, Vec<u8>>;

/// A change set: `Some` = put, `None` = delete.
pub type KvChanges = BTreeMap<String, Option<Vec<u8>>>;

/// Storage failed.
#[derive(Debug, thiserror::Error)]
pub enum KvStoreError {
    #[error("key-value quota of {quota} bytes exceeded for installation {installation} of tenant {tenant}")]
    QuotaExceeded { tenant: String, installation: String, quota: u64 },
    #[error("key-value storage unavailable: {0}")]
    Unavailable(String),
}

/// Durable key-value storage behind the `key-value` import. Called only before a call's
/// Store exists and after it is gone, so implementations may do I/O.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// A consistent snapshot of the scope's entries.
    async fn load(&self, scope: &KvScope) -> Result<Arc<KvEntries>, KvStoreError>;
    /// Applies `changes` atomically, refusing them if the scope would exceed `quota`.
    async fn commit(&self, scope: &KvScope, changes: KvChanges, quota: u64) -> Result<(), KvStoreError>;
    /// Removes every entry of the scope (uninstall).
    async fn purge(&self, scope: &KvScope) -> Result<(), KvStoreError>;
}

/// Bytes an entry counts against the quota.
pub fn entry_size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// An in-memory `KvStore` (CLI and tests; the server stores entries in its database).
#[derive(Debug, Default)]
pub struct MemoryKv {
    scopes: Mutex<HashMap<KvScope, Arc<KvEntries>>>,
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn load(&self, scope: &KvScope) -> Result<Arc<KvEntries>, KvStoreError> {
        let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        Ok(scopes.get(scope).cloned().unwrap_or_default())
    }

    async fn commit(&self, scope: &KvScope, changes: KvChanges, quota: u64) -> Result<(), KvStoreError> {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let current = scopes.entry(scope.clone()).or_default();
        let mut next = (**current).clone();
        for (key, value) in changes {
            match value {
                Some(v) => next.insert(key, v),
                None => next.remove(&key),
            };
        }
        if next.iter().map(|(k, v)| entry_size(k, v)).sum::<u64>() > quota {
            return Err(KvStoreError::QuotaExceeded {
                tenant: scope.tenant.clone(),
                installation: scope.installation.clone(),
                quota,
            });
        }
        *current = Arc::new(next);
        Ok(())
    }

    async fn purge(&self, scope: &KvScope) -> Result<(), KvStoreError> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner()).remove(scope);
        Ok(())
    }
}

/// One call's view of its installation's storage: the snapshot plus the call's changes.
#[derive(Debug)]
pub(crate) struct KvSession {
    snapshot: Arc<KvEntries>,
    changes: KvChanges,
    used: u64,
    pub(crate) quota: u64,
    pub(crate) max_key: u32,
}

impl KvSession {
    pub(crate) fn new(snapshot: Arc<KvEntries>, quota: u64, max_key: u32) -> Self {
        let used = snapshot.iter().map(|(k, v)| entry_size(k, v)).sum();
        Self { snapshot, changes: KvChanges::new(), used, quota, max_key }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        match self.changes.get(key) {
            Some(change) => change.as_deref(),
            None => self.snapshot.get(key).map(Vec::as_slice),
        }
    }

    fn current_size(&self, key: &str) -> u64 {
        self.get(key).map_or(0, |v| entry_size(key, v))
    }

    /// Puts `value`; `Err(quota)` if the installation would exceed its quota.
    pub(crate) fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), u64> {
        let after = self.used - self.current_size(key) + entry_size(key, &value);
        if after > self.quota {
            return Err(self.quota);
        }
        self.used = after;
        self.changes.insert(key.to_string(), Some(value));
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: &str) -> bool {
        let existed = self.get(key).is_some();
        if existed {
            self.used -= self.current_size(key);
            self.changes.insert(key.to_string(), None);
        }
        existed
    }

    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .snapshot
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .filter(|k| !self.changes.contains_key(k))
            .collect();
        keys.extend(self.changes.iter().filter(|(k, v)| v.is_some() && k.starts_with(prefix)).map(|(k, _)| k.clone()));
        keys.sort_unstable();
        keys
    }

    pub(crate) fn into_changes(self) -> KvChanges {
        self.changes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_overlays_changes_and_keeps_quota() {
        let mut base = KvEntries::new();
        base.insert("a/1".into(), b"xx".to_vec());
        base.insert("b/1".into(), b"yy".to_vec());
        let mut s = KvSession::new(Arc::new(base), 20, 64);
        assert_eq!(s.get("a/1"), Some(&b"xx"[..]));
        s.set("a/2", b"zz".to_vec()).unwrap();
        assert!(s.delete("a/1"));
        assert_eq!(s.keys("a/"), ["a/2"]);
        assert_eq!(s.set("c/1", b"0123456789".to_vec()), Err(20));
        s.set("a/2", b"z".to_vec()).unwrap();
        assert_eq!(s.into_changes().len(), 2);
    }

    #[tokio::test]
    async fn memory_store_commit_refuses_over_quota_and_keeps_old_data() {
        let kv = MemoryKv::default();
        let scope = KvScope { tenant: "t".into(), installation: "i".into() };
        kv.commit(&scope, [("k".to_string(), Some(b"v".to_vec()))].into(), 10).await.unwrap();
        let err = kv.commit(&scope, [("big".to_string(), Some(vec![0; 20]))].into(), 10).await.unwrap_err();
        assert!(err.to_string().contains("quota of 10 bytes"), "{err}");
        assert_eq!(kv.load(&scope).await.unwrap().get("k").map(Vec::as_slice), Some(&b"v"[..]));
        kv.purge(&scope).await.unwrap();
        assert!(kv.load(&scope).await.unwrap().is_empty());
    }
}
