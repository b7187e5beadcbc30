//! Two in-process helpers a flood for one key (one seat, one campaign)
//! needs: a lock per key, so one request at a time does the expensive
//! thing while the rest wait in memory rather than in the database; and a
//! short memory of refusals, so the rest of the rush is answered without a
//! round trip. Both are per instance: the stores still decide between
//! instances.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use super::cache::Cache;

/// One async lock per key, dropped again once nobody holds or awaits it.
pub struct KeyedLocks<K> {
    locks: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K> Clone for KeyedLocks<K> {
    fn clone(&self) -> Self {
        Self {
            locks: self.locks.clone(),
        }
    }
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Arc::default(),
        }
    }
}

/// The lock of one key, held until dropped.
pub struct KeyedGuard<K: Eq + Hash> {
    locks: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
    key: Option<K>,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone + Send + 'static> KeyedLocks<K> {
    /// Waits for the key's turn.
    pub async fn lock(&self, key: K) -> KeyedGuard<K> {
        let lock = self
            .locks
            .lock()
            .map(|mut locks| locks.entry(key.clone()).or_default().clone())
            .unwrap_or_default();
        let guard = lock.clone().lock_owned().await;
        KeyedGuard {
            locks: self.locks.clone(),
            key: Some(key),
            lock,
            guard: Some(guard),
        }
    }

    /// Keys with a lock held or awaited (for tests and metrics).
    pub fn len(&self) -> usize {
        self.locks.lock().map_or(0, |locks| locks.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash> Drop for KeyedGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let (Ok(mut locks), Some(key)) = (self.locks.lock(), self.key.take())
            // Ours and the map's: nobody else holds or awaits it.
            && Arc::strong_count(&self.lock) <= 2
        {
            locks.remove(&key);
        }
    }
}

/// The longest an instance keeps anything it learned, whatever the entry
/// said: a bound on memory, not on freshness.
const MEMO_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// What an instance just learned about keys, each until a moment (by the
/// use case's clock); read only while fresh. Bounded to `capacity` keys,
/// the least recently used forgotten first (forgetting only costs a round
/// trip).
pub struct ExpiringMemo<K, V> {
    entries: Cache<K, (DateTime<Utc>, V)>,
}

impl<K, V> Clone for ExpiringMemo<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> ExpiringMemo<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity as u64, MEMO_LIFETIME),
        }
    }

    /// The value remembered for `key`, if still fresh at `now`.
    pub fn get(&self, key: &K, now: DateTime<Utc>) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, value)| value)
    }

    pub fn is_fresh(&self, key: &K, now: DateTime<Utc>) -> bool {
        self.get(key, now).is_some()
    }

    /// Remembers `value` for `key` until `until`.
    pub fn remember(&self, key: K, value: V, until: DateTime<Utc>) {
        self.entries.insert(key, (until, value));
    }

    pub fn forget(&self, key: &K) {
        self.entries.remove(key);
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        usize::try_from(self.entries.len()).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Token buckets per key (`governor`), keyed by what a client sends (a
/// user, an address, a queue token), that forget the keys whose bucket is
/// full again every [`Buckets::SWEEP_EVERY`] checks, so a stream of new
/// keys does not grow the map for good.
pub struct Buckets<K: Eq + Hash + Clone> {
    limiter: governor::DefaultKeyedRateLimiter<K>,
    checks: std::sync::atomic::AtomicU64,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// How often (in checks) the idle keys are forgotten.
    pub const SWEEP_EVERY: u64 = 4_096;

    pub fn new(quota: governor::Quota) -> Self {
        Self {
            limiter: governor::RateLimiter::keyed(quota),
            checks: Default::default(),
        }
    }

    /// Ok, or how long until `key`'s next request counts.
    pub fn check(&self, key: &K) -> Result<(), std::time::Duration> {
        use governor::clock::Clock;
        let checks = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks % Self::SWEEP_EVERY == Self::SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        // The limiter's own clock: making a new one reads the CPU's
        // features (CPUID), which a VM traps.
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Keys remembered now.
    pub fn remembered(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buckets_forget_the_keys_that_stopped_asking() {
        // Buckets that are full again a nanosecond after a request.
        let quota = governor::Quota::with_period(std::time::Duration::from_nanos(1)).unwrap();
        let buckets = super::Buckets::new(quota);
        // A stream of new addresses, each asking once.
        for key in 0..super::Buckets::<u64>::SWEEP_EVERY * 3 {
            let _ = buckets.check(&key);
        }
        assert!(
            buckets.remembered() < super::Buckets::<u64>::SWEEP_EVERY as usize,
            "{} keys kept",
            buckets.remembered()
        );
    }
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_the_lock_goes_when_nobody_waits() {
        let locks = KeyedLocks::<u32>::default();
        let first = locks.lock(1).await;
        let other_key = tokio::time::timeout(Duration::from_millis(50), locks.lock(2)).await;
        assert!(other_key.is_ok(), "another key is not blocked");
        drop(other_key);
        let same = locks.clone();
        let waiter = tokio::spawn(async move {
            let _turn = same.lock(1).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the same key waits for its turn");
        drop(first);
        waiter.await.unwrap();
        assert!(locks.is_empty(), "no lock is kept for keys nobody wants");
    }

    #[test]
    fn a_memo_answers_only_while_fresh_and_stays_bounded() {
        let now = Utc::now();
        let memo = ExpiringMemo::<u32, &str>::new(2);
        memo.remember(1, "taken", now + TimeDelta::seconds(1));
        assert_eq!(memo.get(&1, now), Some("taken"));
        assert_eq!(memo.get(&1, now + TimeDelta::seconds(1)), None);
        memo.remember(2, "taken", now + TimeDelta::seconds(1));
        memo.remember(3, "taken", now + TimeDelta::seconds(1));
        assert!(memo.len() <= 2, "capacity holds: {}", memo.len());
        assert_eq!(memo.get(&3, now), Some("taken"));
        memo.forget(&3);
        assert_eq!(memo.get(&3, now), None);
    }
}
