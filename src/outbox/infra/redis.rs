//! The production event bus: one Redis stream (`bo:events`), one consumer
//! group per listener.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use redis::{
    AsyncCommands,
    aio::ConnectionLike,
    streams::{
        StreamClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply,
        StreamReadOptions, StreamReadReply,
    },
};
use tokio::sync::Mutex;

use crate::{
    kernel::events::{BusMessage, EventEnvelope},
    kv::{Conn, RedisTarget},
    outbox::{
        domain::{Delivery, GroupStatus, retry_after},
        ports::EventBus,
    },
};

#[derive(Clone)]
pub struct RedisBus {
    target: RedisTarget,
    conn: Conn,
    stream: Arc<str>,
    max_len: usize,
    /// A blocking XREADGROUP holds its connection until it returns, so each
    /// reading consumer gets a connection of its own.
    readers: Arc<Mutex<HashMap<String, Conn>>>,
}

impl RedisBus {
    pub fn new(
        target: impl Into<RedisTarget>,
        conn: impl Into<Conn>,
        stream: &str,
        max_len: usize,
    ) -> Self {
        Self {
            target: target.into(),
            conn: conn.into(),
            stream: stream.into(),
            max_len,
            readers: Arc::default(),
        }
    }

    async fn reader(&self, consumer: &str, block: Duration) -> anyhow::Result<Conn> {
        let mut readers = self.readers.lock().await;
        if let Some(conn) = readers.get(consumer) {
            return Ok(conn.clone());
        }
        let conn = self
            .target
            .dedicated(block + Duration::from_secs(5))
            .await
            .context("opening a Redis connection for a consumer")?;
        readers.insert(consumer.to_owned(), conn.clone());
        Ok(conn)
    }
}

/// A stream id as (milliseconds, sequence), for ordering.
fn stream_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

const FIELD_OUTBOX_ID: &str = "outboxId";
const FIELD_TARGET: &str = "target";

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
        },
    })
}

impl EventBus for RedisBus {
    fn is_durable(&self) -> bool {
        true
    }

    async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.cmd("XADD")
                .arg(&*self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg(encode(message))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .context("XADD to the event stream")
    }

    async fn ensure_group(&self, group: &str) -> anyhow::Result<()> {
        let created: redis::RedisResult<()> = self
            .conn
            .clone()
            .xgroup_create_mkstream(&*self.stream, group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err).context("creating the consumer group"),
        }
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut conn = self.reader(consumer, block).await?;
        let mut options = StreamReadOptions::default()
            .group(group, consumer)
            .count(count);
        let block_ms = block.as_millis() as usize;
        if block_ms > 0 {
            options = options.block(block_ms);
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> =
            conn.xread_options(&[&*self.stream], &[">"], &options).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                // Drop the connection so the next call reconnects.
                self.readers.lock().await.remove(consumer);
                // A Redis that came back empty lost the group with the
                // stream: make it again, and the next call reads on.
                if err.code() == Some("NOGROUP")
                    && let Err(again) = self.ensure_group(group).await
                {
                    tracing::warn!(group, error = %again, "cannot re-create the consumer group");
                }
                return Err(err).context("XREADGROUP");
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
            .arg(&*self.stream)
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
                &*self.stream,
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

    async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.conn
            .clone()
            .xack::<_, _, _, ()>(&*self.stream, group, ids)
            .await
            .context("XACK")
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        let reply: redis::RedisResult<StreamInfoGroupsReply> =
            self.conn.clone().xinfo_groups(&*self.stream).await;
        let reply = match reply {
            Ok(reply) => reply,
            // The stream does not exist until the first group or event.
            Err(err) if err.to_string().contains("no such key") => return Ok(Vec::new()),
            Err(err) => return Err(err).context("XINFO GROUPS"),
        };
        Ok(reply
            .groups
            .into_iter()
            .map(|g| GroupStatus {
                name: g.name,
                pending: g.pending as u64,
                lag: g.lag.unwrap_or(0) as u64,
            })
            .collect())
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
