//! One call's key-value session: the installation's snapshot plus the call's changes.

use std::sync::Arc;

use kiosk_domain::kv::{KvChanges, KvEntries, entry_size};

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
}
