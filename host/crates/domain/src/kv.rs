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
    /// The changes would take the key-value bytes of all the tenant's installations
    /// together over the tenant's quota.
    #[error("the key-value quota of tenant {tenant} ({quota} bytes over all its installations) would be exceeded")]
    TenantQuotaExceeded { tenant: String, quota: u64 },
    #[error("key-value storage unavailable: {0}")]
    Unavailable(String),
}

/// Which key-value quota a call's changes would pass (nothing of the call is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaHit {
    /// The installation's quota, bytes.
    Installation(u64),
    /// The tenant's quota over all its installations, bytes.
    Tenant(u64),
}

impl QuotaHit {
    /// As the error the runtime's key-value storage reports for `scope`.
    pub fn into_error(self, scope: &KvScope) -> KvStoreError {
        match self {
            QuotaHit::Installation(quota) => KvStoreError::QuotaExceeded {
                tenant: scope.tenant.clone(),
                installation: scope.installation.clone(),
                quota,
            },
            QuotaHit::Tenant(quota) => KvStoreError::TenantQuotaExceeded { tenant: scope.tenant.clone(), quota },
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
