//! The production event bus: the event stream (`bo:events`), or N
//! partition streams spread over a Redis Cluster
//! (`--event-stream-partitions`), with one consumer group per listener on
//! each.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use futures::future::try_join_all;
use redis::{
    AsyncCommands,
    aio::ConnectionLike,
    streams::{
        StreamClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply,
        StreamPendingReply, StreamRangeReply, StreamReadOptions, StreamReadReply,
    },
};
use tokio::sync::Mutex;

use crate::{
    kernel::events::{BusMessage, EventEnvelope},
    outbox::{
        domain::{Delivery, EntryId, GroupStatus, ReadHorizon, partition_of, retry_after},
        ports::EventBus,
    },
    redis_client::{Conn, RedisTarget},
};

mod keys;

pub use keys::{key_slot, stream_keys};

/// Takes the partition when free, extends it when the caller holds it.
static OWN: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local holder = redis.call('GET', KEYS[1])
        if not holder then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        if holder == ARGV[1] then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return 1
        end
        return 0
        ",
    )
});

/// Lets go of the partition if the caller holds it.
static DISOWN: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
        end
        return 0
        ",
    )
});

/// Which end of a stream.
#[derive(Clone, Copy)]
enum End {
    Oldest,
    Newest,
}

#[derive(Clone)]
pub struct RedisBus {
    target: RedisTarget,
    conn: Conn,
    /// One stream per partition.
    streams: Arc<[String]>,
    /// The partition this view reads, acknowledges and reclaims.
    partition: u16,
    max_len: usize,
    /// A blocking XREADGROUP holds its connection until it returns, so each
    /// reader (stream, group, consumer) gets a connection of its own: two
    /// readers sharing one would wait for each other's block to run out.
    readers: Arc<Mutex<HashMap<(u16, String), Conn>>>,
}

impl RedisBus {
    /// One stream, `stream`; see [`RedisBus::partitioned`].
    pub fn new(
        target: impl Into<RedisTarget>,
        conn: impl Into<Conn>,
        stream: &str,
        max_len: usize,
    ) -> Self {
        Self {
            target: target.into(),
            conn: conn.into(),
            streams: stream_keys(stream, 1).into(),
            partition: 0,
            max_len,
            readers: Arc::default(),
        }
    }

    /// Spreads events over `partitions` streams named after the base stream
    /// ([`stream_keys`]); 1 keeps the base stream itself.
    pub fn partitioned(mut self, partitions: u16) -> Self {
        let base = self.streams[0].clone();
        self.streams = stream_keys(&base, partitions.max(1)).into();
        self.partition = 0;
        self
    }

    /// Every partition's stream key, by partition number.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    fn stream(&self) -> &str {
        &self.streams[usize::from(self.partition)]
    }

    /// Who reads this partition for `group` (in the stream's slot).
    fn owner_key(&self, group: &str) -> String {
        format!("{}:owner:{group}", self.stream())
    }

    async fn reader(&self, group: &str, consumer: &str, block: Duration) -> anyhow::Result<Conn> {
        let key = (self.partition, format!("{group}\u{0}{consumer}"));
        let mut readers = self.readers.lock().await;
        if let Some(conn) = readers.get(&key) {
            return Ok(conn.clone());
        }
        let conn = self
            .target
            .dedicated(block + Duration::from_secs(5))
            .await
            .context("opening a Redis connection for a consumer")?;
        readers.insert(key, conn.clone());
        Ok(conn)
    }

    async fn forget_reader(&self, group: &str, consumer: &str) {
        let key = (self.partition, format!("{group}\u{0}{consumer}"));
        self.readers.lock().await.remove(&key);
    }

    async fn ensure_group_on(&self, stream: &str, group: &str) -> anyhow::Result<()> {
        let created: redis::RedisResult<()> = self
            .conn
            .clone()
            .xgroup_create_mkstream(stream, group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => {
                Err(err).with_context(|| format!("creating the consumer group on {stream}"))
            }
        }
    }

    /// The id of the stream's oldest or newest entry; `None` while it is
    /// empty.
    async fn end_entry(&self, stream: &str, end: End) -> anyhow::Result<Option<EntryId>> {
        let mut conn = self.conn.clone();
        let (command, from, to) = match end {
            End::Oldest => ("XRANGE", "-", "+"),
            End::Newest => ("XREVRANGE", "+", "-"),
        };
        let reply: redis::RedisResult<StreamRangeReply> = match end {
            End::Oldest => conn.xrange_count(stream, from, to, 1).await,
            End::Newest => conn.xrevrange_count(stream, from, to, 1).await,
        };
        let reply = reply.with_context(|| format!("{command} {stream} {from} {to} COUNT 1"))?;
        Ok(reply.ids.first().and_then(|e| EntryId::parse(&e.id)))
    }

    async fn groups_on(&self, partition: u16, stream: &str) -> anyhow::Result<Vec<GroupStatus>> {
        let reply: redis::RedisResult<StreamInfoGroupsReply> =
            self.conn.clone().xinfo_groups(stream).await;
        let reply = match reply {
            Ok(reply) => reply,
            // The stream does not exist until the first group or event.
            Err(err) if err.to_string().contains("no such key") => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("XINFO GROUPS {stream}")),
        };
        if reply.groups.is_empty() {
            return Ok(Vec::new());
        }
        // What the stream holds and how far each group read: what the
        // delivery audit needs to tell an entry still on its way from one
        // lost.
        let first_entry = self.end_entry(stream, End::Oldest).await?;
        let last_entry = self.end_entry(stream, End::Newest).await?;
        let mut statuses = Vec::with_capacity(reply.groups.len());
        for g in reply.groups {
            let oldest_pending = if g.pending > 0 {
                let summary: StreamPendingReply = self
                    .conn
                    .clone()
                    .xpending(stream, &g.name)
                    .await
                    .with_context(|| format!("XPENDING {stream} {}", g.name))?;
                match summary {
                    StreamPendingReply::Data(data) => EntryId::parse(&data.start_id),
                    _ => None,
                }
            } else {
                None
            };
            let last_delivered =
                EntryId::parse(&g.last_delivered_id).unwrap_or(EntryId { ms: 0, seq: 0 });
            // Behind: the first entry it was not handed yet (its time is
            // how long it has been behind).
            let next_undelivered = if last_entry.is_some_and(|last| last_delivered < last) {
                let next: StreamRangeReply = self
                    .conn
                    .clone()
                    .xrange_count(stream, format!("({last_delivered}"), "+", 1)
                    .await
                    .with_context(|| format!("XRANGE {stream} ({last_delivered} + COUNT 1"))?;
                next.ids.first().and_then(|e| EntryId::parse(&e.id))
            } else {
                None
            };
            statuses.push(GroupStatus {
                horizon: Some(ReadHorizon {
                    first_entry,
                    last_entry,
                    last_delivered,
                    oldest_pending,
                    next_undelivered,
                }),
                name: g.name,
                partition,
                stream: stream.to_owned(),
                pending: g.pending as u64,
                lag: g.lag.unwrap_or(0) as u64,
            });
        }
        Ok(statuses)
    }
}

/// A stream id as (milliseconds, sequence), for ordering.
fn stream_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

const FIELD_OUTBOX_ID: &str = "outboxId";
const FIELD_TARGET: &str = "target";
const FIELD_TRACEPARENT: &str = "traceparent";

fn encode(message: &BusMessage) -> Vec<(&'static str, String)> {
    let e = &message.event;
    let mut fields = vec![
        ("eventId", e.event_id.to_string()),
        ("type", e.event_type.clone()),
        ("aggregateType", e.aggregate_type.clone()),
        ("aggregateId", e.aggregate_id.clone()),
        ("occurredAt", e.occurred_at.to_rfc3339()),
        ("payload", e.payload.to_string()),
    ];
    if let Some(outbox_id) = message.outbox_id {
        fields.push((FIELD_OUTBOX_ID, outbox_id.to_string()));
    }
    if let Some(target) = &message.target {
        fields.push((FIELD_TARGET, target.clone()));
    }
    if let Some(traceparent) = &e.traceparent {
        fields.push((FIELD_TRACEPARENT, traceparent.clone()));
    }
    fields
}

fn decode(entry: &StreamId) -> Result<BusMessage, String> {
    let field = |name: &str| -> Result<String, String> {
        entry
            .get::<String>(name)
            .ok_or_else(|| format!("stream entry {} has no {name:?} field", entry.id))
    };
    let parse_err = |name: &str, err: &dyn std::fmt::Display| {
        format!(
            "stream entry {}: field {name:?} is invalid: {err}",
            entry.id
        )
    };
    Ok(BusMessage {
        outbox_id: entry
            .get::<String>(FIELD_OUTBOX_ID)
            .map(|id| id.parse().map_err(|e| parse_err(FIELD_OUTBOX_ID, &e)))
            .transpose()?,
        target: entry.get::<String>(FIELD_TARGET),
        event: EventEnvelope {
            event_id: field("eventId")?
                .parse()
                .map_err(|e| parse_err("eventId", &e))?,
            event_type: field("type")?,
            aggregate_type: field("aggregateType")?,
            aggregate_id: field("aggregateId")?,
            occurred_at: chrono::DateTime::parse_from_rfc3339(&field("occurredAt")?)
                .map_err(|e| parse_err("occurredAt", &e))?
                .to_utc(),
            payload: serde_json::from_str(&field("payload")?)
                .map_err(|e| parse_err("payload", &e))?,
            traceparent: entry.get::<String>(FIELD_TRACEPARENT),
        },
    })
}

impl EventBus for RedisBus {
    fn is_durable(&self) -> bool {
        true
    }

    fn partitions(&self) -> u16 {
        self.streams.len() as u16
    }

    fn partition(&self, p: u16) -> Self {
        assert!(usize::from(p) < self.streams.len(), "no partition {p}");
        Self {
            partition: p,
            ..self.clone()
        }
    }

    async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<Vec<Option<String>>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline per partition (a cluster cannot take one pipeline
        // over several slots), sent together; each keeps its order.
        let partitions = self.partitions();
        let mut pipes: Vec<Option<(redis::Pipeline, Vec<usize>)>> =
            vec![None; usize::from(partitions)];
        for (at, message) in messages.iter().enumerate() {
            let p = partition_of(
                &message.event.aggregate_type,
                &message.event.aggregate_id,
                partitions,
            );
            let (pipe, order) =
                pipes[usize::from(p)].get_or_insert_with(|| (redis::pipe(), Vec::new()));
            pipe.cmd("XADD")
                .arg(&self.streams[usize::from(p)])
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg(encode(message));
            order.push(at);
        }
        let answers = try_join_all(pipes.into_iter().enumerate().filter_map(|(p, pipe)| {
            let (pipe, order) = pipe?;
            let mut conn = self.conn.clone();
            let stream = &self.streams[p];
            Some(async move {
                let ids: Vec<String> = pipe
                    .query_async(&mut conn)
                    .await
                    .with_context(|| format!("XADD to the event stream {stream}"))?;
                anyhow::Ok(order.into_iter().zip(ids).collect::<Vec<_>>())
            })
        }))
        .await?;
        let mut ids = vec![None; messages.len()];
        for (at, id) in answers.into_iter().flatten() {
            ids[at] = Some(id);
        }
        Ok(ids)
    }

    async fn ensure_group(&self, group: &str) -> anyhow::Result<()> {
        try_join_all(
            self.streams
                .iter()
                .map(|stream| self.ensure_group_on(stream, group)),
        )
        .await
        .map(drop)
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut conn = self.reader(group, consumer, block).await?;
        let mut options = StreamReadOptions::default()
            .group(group, consumer)
            .count(count);
        let block_ms = block.as_millis() as usize;
        if block_ms > 0 {
            options = options.block(block_ms);
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> =
            conn.xread_options(&[self.stream()], &[">"], &options).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                // Drop the connection so the next call reconnects.
                self.forget_reader(group, consumer).await;
                // A Redis that came back empty lost the group with the
                // stream: make it again, and the next call reads on.
                if err.code() == Some("NOGROUP")
                    && let Err(again) = self.ensure_group(group).await
                {
                    tracing::warn!(group, error = %again, "cannot re-create the consumer group");
                }
                return Err(err).with_context(|| format!("XREADGROUP on {}", self.stream()));
            }
        };
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| Delivery {
                deliveries: 1,
                message: decode(&entry),
                id: entry.id,
            })
            .collect())
    }

    async fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut conn = self.conn.clone();
        // Pending entries idle at least `min_idle`, with their delivery
        // counts; the ones whose backoff has run out are claimed.
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(self.stream())
            .arg(group)
            .arg("IDLE")
            .arg(min_idle.as_millis() as u64)
            .arg("-")
            .arg("+")
            .arg(count * 4)
            .query_async(&mut conn)
            .await
            .context("XPENDING")?;
        let due: HashMap<String, u32> = pending
            .ids
            .into_iter()
            .filter(|p| {
                // The caller's own are still in its hands, in order.
                if p.consumer == consumer {
                    return false;
                }
                let deliveries = u32::try_from(p.times_delivered).unwrap_or(u32::MAX);
                p.last_delivered_ms as u128 >= retry_after(min_idle, deliveries).as_millis()
            })
            .take(count)
            .map(|p| (p.id, u32::try_from(p.times_delivered).unwrap_or(u32::MAX)))
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = due.keys().collect();
        // XCLAIM checks the idle time again, so an entry another consumer
        // claimed meanwhile is left to it.
        let claimed: StreamClaimReply = conn
            .xclaim(
                self.stream(),
                group,
                consumer,
                min_idle.as_millis() as u64,
                &ids,
            )
            .await
            .context("XCLAIM")?;
        let mut deliveries: Vec<Delivery> = claimed
            .ids
            .into_iter()
            .map(|entry| Delivery {
                deliveries: due.get(&entry.id).copied().unwrap_or(0).saturating_add(1),
                message: decode(&entry),
                id: entry.id,
            })
            .collect();
        deliveries.sort_by_key(|d| stream_order(&d.id));
        Ok(deliveries)
    }

    async fn own(&self, group: &str, consumer: &str, ttl: Duration) -> anyhow::Result<bool> {
        let owned: i64 = OWN
            .key(self.owner_key(group))
            .arg(consumer)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .with_context(|| format!("taking {} for {group}", self.stream()))?;
        Ok(owned == 1)
    }

    async fn disown(&self, group: &str, consumer: &str) -> anyhow::Result<()> {
        let _: i64 = DISOWN
            .key(self.owner_key(group))
            .arg(consumer)
            .invoke_async(&mut self.conn.clone())
            .await
            .with_context(|| format!("letting go of {} for {group}", self.stream()))?;
        Ok(())
    }

    async fn take_over(&self, group: &str, consumer: &str) -> anyhow::Result<Vec<Delivery>> {
        let mut conn = self.conn.clone();
        let mut taken = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let pending: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(self.stream())
                .arg(group)
                .arg(&start)
                .arg("+")
                .arg(1_000)
                .query_async(&mut conn)
                .await
                .context("XPENDING")?;
            let Some(last) = pending.ids.last().map(|p| p.id.clone()) else {
                break;
            };
            let counts: HashMap<String, u32> = (pending.ids.into_iter())
                .map(|p| (p.id, u32::try_from(p.times_delivered).unwrap_or(u32::MAX)))
                .collect();
            let ids: Vec<&String> = counts.keys().collect();
            let claimed: StreamClaimReply = conn
                .xclaim(self.stream(), group, consumer, 0, &ids)
                .await
                .context("XCLAIM")?;
            taken.extend(claimed.ids.into_iter().map(|entry| {
                Delivery {
                    deliveries: counts
                        .get(&entry.id)
                        .copied()
                        .unwrap_or(0)
                        .saturating_add(1),
                    message: decode(&entry),
                    id: entry.id,
                }
            }));
            start = format!("({last}");
        }
        taken.sort_by_key(|d| stream_order(&d.id));
        Ok(taken)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.conn
            .clone()
            .xack::<_, _, _, ()>(self.stream(), group, ids)
            .await
            .context("XACK")
    }

    async fn trim(&self) -> anyhow::Result<Vec<String>> {
        let mut lagging = Vec::new();
        for (partition, stream) in self.streams.iter().enumerate() {
            let groups = self.groups_on(partition as u16, stream).await?;
            // The lowest entry any group may still need: its oldest
            // pending one, or the one after the last it was delivered.
            let keep = groups
                .iter()
                .filter_map(|g| {
                    let horizon = g.horizon?;
                    Some(horizon.oldest_pending.unwrap_or(EntryId {
                        seq: horizon.last_delivered.seq + 1,
                        ..horizon.last_delivered
                    }))
                })
                .min();
            if let Some(keep) = keep {
                let trimmed: u64 = redis::cmd("XTRIM")
                    .arg(stream)
                    .arg("MINID")
                    .arg(keep.to_string())
                    .query_async(&mut self.conn.clone())
                    .await
                    .with_context(|| format!("XTRIM {stream} MINID {keep}"))?;
                metrics::counter!("stream_entries_trimmed_total").increment(trimmed);
            }
            let len: usize = self
                .conn
                .clone()
                .xlen(stream)
                .await
                .with_context(|| format!("XLEN {stream}"))?;
            if len >= self.max_len {
                // Behind: not yet handed the newest entry (Redis's own lag
                // is unknown once entries it had not read were dropped).
                lagging.extend(
                    groups
                        .into_iter()
                        .filter(|g| {
                            g.horizon.is_some_and(|h| {
                                h.last_entry.is_some_and(|last| h.last_delivered < last)
                            })
                        })
                        .map(|g| g.name),
                );
            }
        }
        lagging.sort();
        lagging.dedup();
        Ok(lagging)
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        let per_partition = try_join_all(
            self.streams
                .iter()
                .enumerate()
                .map(|(p, stream)| self.groups_on(p as u16, stream)),
        )
        .await?;
        Ok(per_partition.into_iter().flatten().collect())
    }
}

/// Reads the whole stream (tests and the benchmark check what was published),
/// a page at a time small enough to answer within the response timeout
/// even on a loaded machine.
pub async fn read_all(
    conn: &mut (impl ConnectionLike + Send + Sync),
    stream: &str,
) -> anyhow::Result<Vec<BusMessage>> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: redis::streams::StreamRangeReply =
            conn.xrange_count(stream, &start, "+", 1_000).await?;
        let Some(last) = reply.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        for entry in &reply.ids {
            out.push(decode(entry).map_err(anyhow::Error::msg)?);
        }
        start = format!("({last}");
    }
    Ok(out)
}
