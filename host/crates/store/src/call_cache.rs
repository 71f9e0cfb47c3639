//! A replica's cache of the two read-mostly reads every call makes: its token's
//! principal (`Store::authenticate`) and its installation's call context
//! (`Store::call_context`: the installation, limit layers, switches, licence, egress).
//!
//! Why: on PostgreSQL each read is a round trip, and the two cost PostgreSQL more CPU
//! than the call's share of the group commit (bench/ANALYSES.md); on SQLite they are
//! a third of the server's time above the runtime. Tokens and contexts change on an
//! operator's or tenant's request, not per call.
//!
//! The staleness bound, and what carries it:
//! - **This process**: every write transaction of the store (`Store::begin_write`)
//!   clears the cache when it ends (`WriteTransaction`), after its `COMMIT` (whatever the
//!   commit's answer: a lost reply may still have committed). A read that began before
//!   that end is not kept (`generation`), so a change answered here holds from the next
//!   call here.
//! - **Another process** (another replica, a `kiosk` command on the same file): an entry
//!   is used at most `FRESH` after its read began, so a change made elsewhere holds here
//!   within `FRESH`. Nothing else carries it: no notification to miss, no protocol.
//!
//! Deliberately absent: the key-value snapshot (calls change it; it is read per call),
//! negative answers (an unknown token is read each time, so guessing fills nothing),
//! and anything the ledger writes (its group commits do not clear the cache: they change
//! no token or context).

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::call_context::CallContext;
use crate::tokens::Principal;

/// How long after its read began an entry may answer: the bound within which a change
/// made by another replica holds here (issue 28 asks ≤ 1 s; half leaves room).
pub const FRESH: Duration = Duration::from_millis(500);

/// Entries per map: beyond the hot set of any one replica (a full map is swept of stale
/// entries, then cleared if still full, so memory stays bounded whatever is asked).
const MAX_ENTRIES: usize = 8_192;

/// A cached principal with its token's expiry (checked on every use).
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub principal: Principal,
    pub expires_ms: Option<i64>,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    generation: u64,
    read_at: Instant,
}

/// When a read began: the generation and instant an entry made from it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    generation: u64,
    at: Instant,
}

#[derive(Debug)]
struct Map<K, T>(Mutex<HashMap<K, Entry<T>>>);

impl<K: Eq + Hash, T: Clone> Map<K, T> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &K, generation: u64) -> Option<T> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.get(key)?;
        (entry.generation == generation && entry.read_at.elapsed() < FRESH).then(|| entry.value.clone())
    }

    fn put(&self, key: K, value: T, start: ReadStart, generation: u64) {
        if start.generation != generation {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.generation == generation && e.read_at.elapsed() < FRESH);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, Entry { value, generation: start.generation, read_at: start.at });
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The cache of one `Store` (shared by its clones).
#[derive(Debug)]
pub(crate) struct CallCache {
    /// Bumped by every write transaction's end; an entry of an older one is not used.
    generation: AtomicU64,
    tokens: Map<String, CachedToken>,
    contexts: Map<(String, String), CallContext>,
}

impl CallCache {
    pub(crate) fn new() -> Self {
        Self { generation: AtomicU64::new(0), tokens: Map::new(), contexts: Map::new() }
    }

    /// Taken before a read whose answer may be kept.
    pub(crate) fn start(&self) -> ReadStart {
        ReadStart { generation: self.generation.load(Ordering::Acquire), at: Instant::now() }
    }

    pub(crate) fn token(&self, hash: &str) -> Option<CachedToken> {
        self.tokens.get(&hash.to_string(), self.generation.load(Ordering::Acquire))
    }

    pub(crate) fn keep_token(&self, hash: &str, token: CachedToken, start: ReadStart) {
        self.tokens.put(hash.to_string(), token, start, self.generation.load(Ordering::Acquire));
    }

    pub(crate) fn context(&self, tenant: &str, id: &str) -> Option<CallContext> {
        self.contexts.get(&(tenant.to_string(), id.to_string()), self.generation.load(Ordering::Acquire))
    }

    pub(crate) fn keep_context(&self, tenant: &str, id: &str, context: CallContext, start: ReadStart) {
        let generation = self.generation.load(Ordering::Acquire);
        self.contexts.put((tenant.to_string(), id.to_string()), context, start, generation);
    }

    /// A write transaction ended: nothing read before now is used again.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tokens.clear();
        self.contexts.clear();
    }
}

/// A write transaction of the store (`Store::begin_write`): sqlx's, which clears the
/// call cache when it ends — committed, rolled back or dropped (a request cancelled while
/// it waited for the reply to `COMMIT` may still have committed). Statements run on
/// `&mut *tx` as on sqlx's transaction.
pub struct WriteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// `None` for the writes that change no token or call context
    /// (`Store::begin_write_keeping_calls`).
    clear: Option<ClearOnEnd>,
}

/// Clears the cache when dropped: after the transaction's end, whatever ended it.
struct ClearOnEnd(Arc<CallCache>);

impl Drop for ClearOnEnd {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

impl WriteTransaction {
    pub(crate) fn new(tx: sqlx::Transaction<'static, sqlx::Any>, cache: Option<Arc<CallCache>>) -> Self {
        Self { tx, clear: cache.map(ClearOnEnd) }
    }

    /// Commits, then clears the cache (also when the commit's answer is an error: the
    /// transaction may have committed and only its reply been lost).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self { tx, clear } = self;
        let committed = tx.commit().await;
        drop(clear);
        committed
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Self { tx, clear } = self;
        let rolled_back = tx.rollback().await;
        drop(clear);
        rolled_back
    }

    /// sqlx's transaction, for the statements shared with the ledger (`WriteTx`).
    pub(crate) fn inner(&mut self) -> &mut sqlx::Transaction<'static, sqlx::Any> {
        &mut self.tx
    }
}

impl std::fmt::Debug for WriteTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTransaction").finish_non_exhaustive()
    }
}

impl Deref for WriteTransaction {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_read_before_a_write_ended_is_never_used_after_it() {
        let cache = CallCache::new();
        let token = || CachedToken { principal: Principal::Operator, expires_ms: None };
        let start = cache.start();
        cache.keep_token("h", token(), start);
        assert!(cache.token("h").is_some(), "kept and fresh");
        cache.invalidate();
        assert!(cache.token("h").is_none(), "a write ended: the entry is gone");
        // A read that began before the write ended and is kept after it: not kept.
        let before = cache.start();
        cache.invalidate();
        cache.keep_token("h", token(), before);
        assert!(cache.token("h").is_none(), "a read older than the last write is not kept");
    }

    #[test]
    fn an_entry_older_than_fresh_is_not_used_and_a_full_map_stays_bounded() {
        let cache = CallCache::new();
        let token = || CachedToken { principal: Principal::Operator, expires_ms: None };
        let old = ReadStart { generation: 0, at: Instant::now().checked_sub(FRESH).unwrap() };
        cache.keep_token("old", token(), old);
        assert!(cache.token("old").is_none(), "read FRESH ago: read again");
        for i in 0..MAX_ENTRIES + 10 {
            cache.keep_token(&format!("t{i}"), token(), cache.start());
        }
        let kept = cache.tokens.0.lock().unwrap().len();
        assert!(kept <= MAX_ENTRIES, "{kept} entries kept");
    }
}
