//! The one in-process cache every module uses: bounded in size (a count of
//! entries, or bytes by [`Weighed::weight`] for values a client chooses the
//! size of), each entry kept for a time to live at most, the least recently
//! used evicted first. It wraps `moka` so that every cache here is sized and
//! aged the same way, and so a cache is a typed map: no `dyn Any` inside.

use std::{borrow::Borrow, hash::Hash, sync::Arc, time::Duration};

use moka::{policy::EvictionPolicy, sync::Cache as Moka};

/// What a cached value weighs, roughly, in bytes of memory: caches keyed
/// by what a client asks for are bounded by weight, not count, since one
/// entry may be a thousand seats and another none.
pub trait Weighed {
    fn weight(&self) -> usize;
}

impl<V: Weighed> Weighed for Arc<V> {
    fn weight(&self) -> usize {
        V::weight(self)
    }
}

/// What an entry costs beyond its value (key, bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

/// A bounded cache of `V` by `K`; cheap to clone (clones share entries).
pub struct Cache<K, V> {
    entries: Moka<K, V>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> Cache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `capacity` entries, each kept `ttl` at most.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: Moka::builder()
                .max_capacity(capacity)
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(ttl)
                .build(),
        }
    }

    /// At most `budget` bytes by [`Weighed::weight`] together, each entry
    /// kept `ttl` at most.
    pub fn weighed(budget: usize, ttl: Duration) -> Self
    where
        V: Weighed,
    {
        Self {
            entries: Moka::builder()
                .max_capacity(budget as u64)
                .weigher(|_, value: &V| {
                    u32::try_from(value.weight().saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX)
                })
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.contains_key(key)
    }

    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.invalidate(key);
    }

    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Applies the evictions the cache defers (it settles its bounds in
    /// batches): after a costly insert, so a cache of large values does not
    /// overshoot its budget by many entries before the next batch.
    pub fn settle(&self) {
        self.entries.run_pending_tasks();
    }

    /// Entries held, once the deferred evictions are applied.
    pub fn len(&self) -> u64 {
        self.settle();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight held, once the deferred evictions are applied.
    pub fn weighed_size(&self) -> u64 {
        self.settle();
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Page(usize);

    impl Weighed for Page {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_count_bounded_cache_keeps_the_newest_within_its_capacity() {
        let cache = Cache::<u32, &str>::new(2, Duration::from_secs(60));
        for key in 0..100 {
            cache.insert(key, "v");
            assert_eq!(cache.get(&key), Some("v"), "a new entry is always kept");
        }
        assert!(cache.len() <= 2, "{}", cache.len());
        cache.remove(&99);
        assert_eq!(cache.get(&99), None);
    }

    #[test]
    fn a_weighed_cache_stays_within_its_budget_of_bytes() {
        let cache =
            Cache::<u32, Page>::weighed(3 * (1_000 + ENTRY_OVERHEAD), Duration::from_secs(60));
        for key in 0..1_000 {
            cache.insert(key, Page(1_000));
            cache.settle();
        }
        assert!(cache.len() <= 3, "{}", cache.len());
        assert!(
            cache.weighed_size() <= 3 * 1_256,
            "{}",
            cache.weighed_size()
        );
    }

    #[test]
    fn an_entry_lives_its_time_to_live_at_most() {
        let cache = Cache::<u32, u32>::new(10, Duration::from_millis(20));
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), Some(1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get(&1), None);
    }
}
