//! The in-process event bus of the embedded shape: Redis Streams semantics
//! (groups, pending entries, delivery counts, reclaiming) inside one process.
//!
//! Nothing here is durable. Instead, every entry remembers its outbox row,
//! and once every group has acknowledged an entry the bus reports the row as
//! finished, so the relay only then marks it published; after a crash the
//! unfinished rows are relayed again and the consumers' inboxes drop what
//! they had already applied.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc};

use crate::{
    kernel::events::BusMessage,
    outbox::{
        domain::{Delivery, GroupStatus, retry_after},
        ports::EventBus,
    },
};

#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
    published: Arc<Notify>,
    finished: mpsc::UnboundedSender<i64>,
}

#[derive(Default)]
struct State {
    /// Sequence number of `entries[0]`; entries before it were finished by
    /// every group and dropped.
    first_seq: u64,
    entries: VecDeque<Entry>,
    groups: BTreeMap<String, Group>,
}

struct Entry {
    message: BusMessage,
    acked_by: usize,
}

#[derive(Default)]
struct Group {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u32,
}

impl MemoryBus {
    /// The receiver yields the outbox id of every entry all groups have
    /// acknowledged.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<i64>) {
        let (finished, rx) = mpsc::unbounded_channel();
        let bus = Self {
            state: Arc::default(),
            published: Arc::new(Notify::new()),
            finished,
        };
        (bus, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

impl State {
    fn entry(&self, seq: u64) -> Option<&Entry> {
        self.entries
            .get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
    }

    fn deliver(&mut self, group: &str, consumer: &str, count: usize) -> Vec<Delivery> {
        let end = self.first_seq + self.entries.len() as u64;
        let Some(g) = self.groups.get_mut(group) else {
            return Vec::new();
        };
        let start = g.next_seq.max(self.first_seq);
        let seqs: Vec<u64> = (start..end).take(count).collect();
        if let Some(last) = seqs.last() {
            g.next_seq = last + 1;
        }
        for seq in &seqs {
            g.pending.insert(
                *seq,
                Pending {
                    consumer: consumer.to_owned(),
                    delivered_at: Instant::now(),
                    deliveries: 1,
                },
            );
        }
        seqs.into_iter()
            .filter_map(|seq| {
                Some(Delivery {
                    id: entry_id(seq),
                    deliveries: 1,
                    message: Ok(self.entry(seq)?.message.clone()),
                })
            })
            .collect()
    }

    /// Drops entries every group has finished.
    fn trim(&mut self) {
        let groups = self.groups.len();
        while groups > 0 && self.entries.front().is_some_and(|e| e.acked_by >= groups) {
            self.entries.pop_front();
            self.first_seq += 1;
        }
    }
}

impl EventBus for MemoryBus {
    fn is_durable(&self) -> bool {
        false
    }

    async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<Vec<Option<String>>> {
        let mut state = self.lock();
        for message in messages {
            state.entries.push_back(Entry {
                message: message.clone(),
                acked_by: 0,
            });
        }
        drop(state);
        self.published.notify_waiters();
        Ok(vec![None; messages.len()])
    }

    async fn ensure_group(&self, group: &str) -> anyhow::Result<()> {
        let mut state = self.lock();
        let first = state.first_seq;
        state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                next_seq: first,
                pending: BTreeMap::new(),
            });
        Ok(())
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.published.notified();
            tokio::pin!(notified);
            // Register interest before looking, so a publish between the
            // look and the wait still wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                anyhow::ensure!(
                    state.groups.contains_key(group),
                    "no such consumer group {group:?}"
                );
                let delivered = state.deliver(group, consumer, count);
                if !delivered.is_empty() {
                    return Ok(delivered);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut state = self.lock();
        let now = Instant::now();
        let state = &mut *state;
        let Some(g) = state.groups.get_mut(group) else {
            anyhow::bail!("no such consumer group {group:?}");
        };
        let mut claimed = Vec::new();
        for (seq, pending) in g.pending.iter_mut() {
            if claimed.len() >= count {
                break;
            }
            if pending.consumer == consumer
                || now.duration_since(pending.delivered_at)
                    < retry_after(min_idle, pending.deliveries)
            {
                continue;
            }
            pending.consumer = consumer.to_owned();
            pending.delivered_at = now;
            pending.deliveries += 1;
            claimed.push((*seq, pending.deliveries));
        }
        Ok(claimed
            .into_iter()
            .filter_map(|(seq, deliveries)| {
                let offset = usize::try_from(seq.checked_sub(state.first_seq)?).ok()?;
                Some(Delivery {
                    id: entry_id(seq),
                    deliveries,
                    message: Ok(state.entries.get(offset)?.message.clone()),
                })
            })
            .collect())
    }

    async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()> {
        let mut state = self.lock();
        let groups = state.groups.len();
        let mut finished = Vec::new();
        for seq in ids.iter().filter_map(|id| parse_id(id)) {
            let removed = state
                .groups
                .get_mut(group)
                .and_then(|g| g.pending.remove(&seq))
                .is_some();
            if !removed {
                continue;
            }
            let first = state.first_seq;
            if let Some(entry) = seq
                .checked_sub(first)
                .and_then(|offset| usize::try_from(offset).ok())
                .and_then(|offset| state.entries.get_mut(offset))
            {
                entry.acked_by += 1;
                if entry.acked_by == groups
                    && let Some(outbox_id) = entry.message.outbox_id
                {
                    finished.push(outbox_id);
                }
            }
        }
        state.trim();
        drop(state);
        for outbox_id in finished {
            // The receiver is gone only while the app shuts down.
            let _ = self.finished.send(outbox_id);
        }
        Ok(())
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        let state = self.lock();
        let end = state.first_seq + state.entries.len() as u64;
        Ok(state
            .groups
            .iter()
            .map(|(name, g)| GroupStatus {
                name: name.clone(),
                partition: 0,
                stream: "in-process".into(),
                pending: g.pending.len() as u64,
                lag: end.saturating_sub(g.next_seq.max(state.first_seq)),
                // Its rows count as published only once every group
                // finished them: nothing published is ever out of reach.
                horizon: None,
            })
            .collect())
    }
}
