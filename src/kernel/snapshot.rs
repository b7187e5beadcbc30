//! Short-lived read snapshots for the hottest reads of an on-sale (the
//! seat map), and the in-process signal that retires them.
//!
//! Every commit on this instance that changed a schedule's seats bumps that
//! schedule's generation ([`touch`], called by the database transaction
//! after it commits events naming a `scheduleId`). A snapshot is served
//! while its schedule's generation is the one it was read at and it is
//! younger than its time to live; other instances' changes are seen within
//! that time to live. Concurrent misses of one key share one read (single
//! flight), so a rush of readers costs the database one query per key at a
//! time, whatever the read rate.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use super::{
    ScheduleId,
    cache::{Cache, Weighed},
    keyed::KeyedLocks,
};

fn generations() -> &'static RwLock<HashMap<ScheduleId, u64>> {
    static GENERATIONS: OnceLock<RwLock<HashMap<ScheduleId, u64>>> = OnceLock::new();
    GENERATIONS.get_or_init(RwLock::default)
}

/// Seats of `schedule` changed on this instance (called after the commit).
pub fn touch(schedule: ScheduleId) {
    if let Ok(mut gens) = generations().write() {
        *gens.entry(schedule).or_default() += 1;
    }
}

/// How many times seats of `schedule` changed on this instance.
pub fn generation(schedule: ScheduleId) -> u64 {
    generations()
        .read()
        .map_or(0, |gens| gens.get(&schedule).copied().unwrap_or(0))
}

struct Entry<V> {
    generation: u64,
    value: Arc<V>,
}

impl<V: Weighed> Weighed for Entry<V> {
    fn weight(&self) -> usize {
        self.value.weight()
    }
}

/// Snapshots of reads about one schedule each, keyed by `K`, within a
/// budget of bytes.
pub struct Snapshots<K, V> {
    /// None when snapshots are off (a time to live of zero).
    entries: Option<Cache<K, Arc<Entry<V>>>>,
    locks: KeyedLocks<K>,
}

impl<K, V> Clone for Snapshots<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            locks: self.locks.clone(),
        }
    }
}

impl<K, V> Snapshots<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Weighed + Send + Sync + 'static,
{
    /// Snapshots kept `ttl` at most (zero: none, every read goes through),
    /// weighing `budget` bytes at most together.
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            entries: (!ttl.is_zero()).then(|| Cache::weighed(budget, ttl)),
            locks: KeyedLocks::default(),
        }
    }

    /// Whether snapshots are kept at all.
    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    fn fresh(&self, key: &K, generation: u64) -> Option<Arc<V>> {
        let entry = self.entries.as_ref()?.get(key)?;
        (entry.generation == generation).then(|| entry.value.clone())
    }

    /// The snapshot of `key` (about `schedule`), or `read` once for every
    /// caller waiting on the same key.
    pub async fn get_or_read<E, Fut>(
        &self,
        schedule: ScheduleId,
        key: K,
        read: impl FnOnce() -> Fut,
    ) -> Result<Arc<V>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let Some(entries) = &self.entries else {
            return read().await.map(Arc::new);
        };
        if let Some(value) = self.fresh(&key, generation(schedule)) {
            return Ok(value);
        }
        let _turn = self.locks.lock(key.clone()).await;
        // Whoever held the turn before may have just read it.
        let before = generation(schedule);
        if let Some(value) = self.fresh(&key, before) {
            return Ok(value);
        }
        let value = Arc::new(read().await?);
        // Read at the generation before the read: a change committed
        // meanwhile retires it at once.
        entries.insert(
            key,
            Arc::new(Entry {
                generation: before,
                value: value.clone(),
            }),
        );
        // Entries a thousand seats each would overshoot the budget by
        // hundreds before the cache's next batch of evictions. A miss
        // already paid for a read, so it settles the budget now.
        entries.settle();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    impl Weighed for u32 {
        fn weight(&self) -> usize {
            4
        }
    }

    async fn counting(reads: &AtomicU32, value: u32) -> Result<u32, ()> {
        reads.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    #[tokio::test]
    async fn a_snapshot_is_served_until_its_schedule_changes() {
        let snapshots = Snapshots::<&str, u32>::new(Duration::from_secs(60), 1 << 20);
        let schedule = ScheduleId(9_001);
        let reads = AtomicU32::new(0);
        let first = snapshots
            .get_or_read(schedule, "page", || counting(&reads, 1))
            .await
            .unwrap();
        let again = snapshots
            .get_or_read(schedule, "page", || counting(&reads, 2))
            .await
            .unwrap();
        assert_eq!((*first, *again, reads.load(Ordering::SeqCst)), (1, 1, 1));
        touch(ScheduleId(9_002));
        let other = snapshots
            .get_or_read(schedule, "page", || counting(&reads, 3))
            .await
            .unwrap();
        assert_eq!(*other, 1, "another schedule's change leaves it");
        touch(schedule);
        let after = snapshots
            .get_or_read(schedule, "page", || counting(&reads, 4))
            .await
            .unwrap();
        assert_eq!((*after, reads.load(Ordering::SeqCst)), (4, 2));
    }

    #[tokio::test]
    async fn a_snapshot_lives_its_ttl_at_most_and_zero_keeps_none() {
        let snapshots = Snapshots::<&str, u32>::new(Duration::from_millis(30), 1 << 20);
        let schedule = ScheduleId(9_003);
        let reads = AtomicU32::new(0);
        snapshots
            .get_or_read(schedule, "page", || counting(&reads, 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let later = snapshots
            .get_or_read(schedule, "page", || counting(&reads, 2))
            .await
            .unwrap();
        assert_eq!(*later, 2);
        let off = Snapshots::<&str, u32>::new(Duration::ZERO, 1 << 20);
        for n in 0..3 {
            off.get_or_read(schedule, "page", || counting(&reads, n))
                .await
                .unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read_and_errors_are_not_kept() {
        let snapshots = Snapshots::<&str, u32>::new(Duration::from_secs(60), 1 << 20);
        let schedule = ScheduleId(9_004);
        let reads = Arc::new(AtomicU32::new(0));
        let slow = |reads: Arc<AtomicU32>| async move {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>(7)
        };
        let all = futures::future::join_all((0..20).map(|_| {
            let reads = reads.clone();
            let snapshots = snapshots.clone();
            async move {
                *snapshots
                    .get_or_read(schedule, "page", || slow(reads))
                    .await
                    .unwrap()
            }
        }))
        .await;
        assert!(all.iter().all(|v| *v == 7));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for the rush");
        let failed: Result<Arc<u32>, &str> = snapshots
            .get_or_read(schedule, "other", || async { Err("down") })
            .await;
        assert!(failed.is_err());
        let ok = snapshots
            .get_or_read(schedule, "other", || async { Ok::<_, &str>(8) })
            .await
            .unwrap();
        assert_eq!(*ok, 8);
    }

    #[tokio::test]
    async fn it_stays_within_its_budget_of_bytes() {
        // Three entries' worth (value and overhead) of budget.
        let snapshots = Snapshots::<u32, u32>::new(Duration::from_secs(60), 3 * (4 + 256));
        for key in 0..1_000 {
            snapshots
                .get_or_read(ScheduleId(9_005), key, || async move { Ok::<_, ()>(key) })
                .await
                .unwrap();
        }
        let entries = snapshots.entries.as_ref().unwrap();
        assert!(entries.len() <= 3, "{}", entries.len());
        assert!(
            entries.weighed_size() <= 3 * 260,
            "{}",
            entries.weighed_size()
        );
    }
}
