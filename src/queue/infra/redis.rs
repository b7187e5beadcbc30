//! The waiting rooms in Redis. Every state change is one Lua script over
//! one concert's keys, all hash-tagged `{queue:<concert>}` so a room lives
//! in one Redis Cluster slot; each script also appends its event to the
//! room's own event stream, which the scheduler forwards to the main bus.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use redis::{AsyncCommands, streams::StreamRangeReply};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::kernel::Fault;
use crate::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{
            DEFAULT_ROOM_IDLE, DRAW_RANGE, Entry, Lineup, Place, QueueError, QueueEvent,
            QueueEventKind, QueuePass, QueueSettings, QueueStats, TickOutcome,
        },
        ports::QueueStore,
    },
    redis_client::Conn,
};

mod scripts;

use scripts::{ENTER, FINISH, LEAVE, STATS, STATUS_MANY, TICK};

/// Lists every concert whose room was entered (its own slot; touched only
/// by plain commands, never inside a script).
const ROOMS_KEY: &str = "bo:queue:rooms";

#[derive(Clone)]
pub struct RedisQueueStore {
    conn: Conn,
    prefix: String,
    /// An empty room left alone this long is retired.
    idle_after: TimeDelta,
    /// The status polls waiting for their turn to go to Redis together.
    polls: Arc<OnceLock<mpsc::UnboundedSender<Poll>>>,
    /// Status polls answered, and the script calls that answered them.
    batching: Arc<(AtomicU64, AtomicU64)>,
}

/// One status poll waiting for its batch: the token's room, the token, the
/// poll's own time, and where its answer goes.
struct Poll {
    concert: ConcertId,
    token: Uuid,
    now: i64,
    answer: oneshot::Sender<Result<Status, Shared>>,
}

/// What `STATUS_MANY` answers for one token: {state, n, admitted in the last minute}.
type Status = (String, i64, i64);

/// A failed batch's error, handed to each of its polls.
#[derive(Clone)]
struct Shared {
    outage: bool,
    message: String,
}

impl From<Shared> for QueueError {
    fn from(err: Shared) -> Self {
        let cause = anyhow::anyhow!("{}", err.message);
        if err.outage {
            QueueError::Fault(Fault::Unavailable(cause))
        } else {
            QueueError::Fault(Fault::Unexpected(cause))
        }
    }
}

/// The most polls of one room that go to Redis in one script call.
const POLL_BATCH: usize = 256;

impl RedisQueueStore {
    /// `prefix` namespaces every key (`bo` in production; tests use their own).
    pub fn new(conn: impl Into<Conn>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            idle_after: DEFAULT_ROOM_IDLE,
            polls: Arc::default(),
            batching: Arc::default(),
        }
    }

    /// Retires rooms left empty for `idle` instead of the default.
    pub fn retiring_after(mut self, idle: TimeDelta) -> Self {
        self.idle_after = idle;
        self
    }

    fn keys(&self, concert: ConcertId) -> [String; 8] {
        let tag = format!("{}:{{queue:{}}}", self.prefix, concert.value());
        [
            format!("{tag}:waiting"),
            format!("{tag}:heartbeat"),
            format!("{tag}:active"),
            format!("{tag}:tokens"),
            format!("{tag}:users"),
            format!("{tag}:meta"),
            format!("{tag}:admits"),
            format!("{tag}:events"),
        ]
    }

    fn rooms_key(&self) -> String {
        format!("{}:{ROOMS_KEY}", self.prefix)
    }
}

impl RedisQueueStore {
    /// Starts the task that sends status polls to Redis: it takes every
    /// poll waiting when it is free, and sends each room's polls as one
    /// script call (the rooms' calls side by side). A poll that comes while
    /// a batch is out waits at most that batch's round trip, and under load
    /// one round trip answers many polls. The task ends with the store.
    fn start_polling(&self) -> mpsc::UnboundedSender<Poll> {
        let (polls, mut waiting) = mpsc::unbounded_channel::<Poll>();
        let store = self.clone_without_polls();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while waiting.recv_many(&mut batch, POLL_BATCH * 4).await > 0 {
                let mut rooms: HashMap<ConcertId, Vec<Poll>> = HashMap::new();
                for poll in batch.drain(..) {
                    rooms.entry(poll.concert).or_default().push(poll);
                }
                let calls = rooms.into_iter().flat_map(|(concert, polls)| {
                    let mut chunks = Vec::new();
                    let mut polls = polls.into_iter().peekable();
                    while polls.peek().is_some() {
                        chunks.push((concert, polls.by_ref().take(POLL_BATCH).collect()));
                    }
                    chunks
                });
                futures::future::join_all(
                    calls.map(|(concert, polls)| store.answer(concert, polls)),
                )
                .await;
            }
        });
        polls
    }

    /// The same store without the poller (the poller's own copy: holding
    /// the sender would keep it alive forever).
    fn clone_without_polls(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            idle_after: self.idle_after,
            polls: Arc::default(),
            batching: self.batching.clone(),
        }
    }

    /// How many status polls this store (and its clones) answered, and in
    /// how many script calls.
    pub fn polls_and_calls(&self) -> (u64, u64) {
        (
            self.batching.0.load(Ordering::Relaxed),
            self.batching.1.load(Ordering::Relaxed),
        )
    }

    /// Answers one room's polls with one `STATUS_MANY` call.
    async fn answer(&self, concert: ConcertId, polls: Vec<Poll>) {
        self.batching
            .0
            .fetch_add(polls.len() as u64, Ordering::Relaxed);
        self.batching.1.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("queue_status_polls_per_call").record(polls.len() as f64);
        let mut call = STATUS_MANY.key(&self.keys(concert));
        for poll in &polls {
            call.arg(poll.token.to_string()).arg(poll.now);
        }
        let answers: Result<Vec<redis::Value>, redis::RedisError> =
            call.invoke_async(&mut self.conn.clone()).await;
        match answers {
            Ok(flat) if flat.len() == polls.len() * 3 => {
                let mut flat = flat.into_iter();
                for poll in polls {
                    let one = redis::Value::Array(flat.by_ref().take(3).collect());
                    let _ = poll
                        .answer
                        .send(
                            redis::from_redis_value::<Status>(one).map_err(|err| Shared {
                                outage: false,
                                message: format!("STATUS_MANY answered {err}"),
                            }),
                        );
                }
            }
            Ok(flat) => {
                let err = Shared {
                    outage: false,
                    message: format!(
                        "STATUS_MANY answered {} values for {} polls",
                        flat.len(),
                        polls.len()
                    ),
                };
                for poll in polls {
                    let _ = poll.answer.send(Err(err.clone()));
                }
            }
            Err(err) => {
                let shared = Shared {
                    outage: crate::redis_client::is_outage(&err),
                    message: format!("{err:#}"),
                };
                for poll in polls {
                    let _ = poll.answer.send(Err(shared.clone()));
                }
            }
        }
    }
}

impl RedisQueueStore {
    /// Takes a retired room off the rooms list. The list lives in another
    /// slot than the room, so this cannot be part of the tick's script: an
    /// entry that reopened the room in between (its script ran, its SADD
    /// may come before or after this SREM) is seen by the look that follows
    /// and listed again.
    async fn unlist(&self, concert: ConcertId, meta: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        conn.srem::<_, _, ()>(self.rooms_key(), concert.value())
            .await?;
        let reopened: bool = conn.exists(meta).await?;
        if reopened {
            conn.sadd::<_, _, ()>(self.rooms_key(), concert.value())
                .await?;
        }
        Ok(())
    }
}

crate::redis_client::module_error_from_redis_err!(QueueError);

fn ms(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A script's {state, n}: `waiting` with n = position, `active` with n =
/// until ms, anything else gone.
fn place(state: &str, position_or_until: i64) -> Place {
    match state {
        "waiting" => Place::Waiting {
            position: position_or_until.max(0) as u64,
        },
        "active" => Place::Active {
            until: at(position_or_until),
        },
        _ => Place::Gone,
    }
}

impl QueueStore for RedisQueueStore {
    async fn enter(
        &self,
        newcomer: &QueuePass,
        lineup: Lineup,
        now: DateTime<Utc>,
    ) -> Result<Entry, QueueError> {
        let mut conn = self.conn.clone();
        let (kind, draw) = match lineup {
            Lineup::Fifo => ("fifo", 0),
            Lineup::Draw(draw) => ("draw", draw % DRAW_RANGE),
            Lineup::Refuse => ("refuse", 0),
        };
        let (token, state, n, created): (String, String, i64, i64) = ENTER
            .key(&self.keys(newcomer.concert))
            .arg(newcomer.user.value())
            .arg(newcomer.token_id.to_string())
            .arg(ms(now))
            .arg(kind)
            .arg(draw)
            .arg(DRAW_RANGE)
            .invoke_async(&mut conn)
            .await?;
        if created == 1 {
            conn.sadd::<_, _, ()>(self.rooms_key(), newcomer.concert.value())
                .await?;
        }
        let token_id = token
            .parse()
            .context("the store holds a malformed token id")?;
        Ok(Entry {
            token_id,
            place: place(&state, n),
        })
    }

    async fn status(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> Result<(Place, u64), QueueError> {
        let (answer, answered) = oneshot::channel();
        let poll = Poll {
            concert: pass.concert,
            token: pass.token_id,
            now: ms(now),
            answer,
        };
        self.polls
            .get_or_init(|| self.start_polling())
            .send(poll)
            .map_err(|_| anyhow::anyhow!("the status poller stopped"))?;
        let (state, n, admitted) = answered
            .await
            .map_err(|_| anyhow::anyhow!("the status poller dropped a poll"))??;
        Ok((place(&state, n), admitted.max(0) as u64))
    }

    async fn is_active(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        let [_, _, active, ..] = self.keys(pass.concert);
        let until: Option<i64> = self
            .conn
            .clone()
            .zscore(active, pass.token_id.to_string())
            .await?;
        Ok(until.is_some_and(|until| until > ms(now)))
    }

    async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        let left: i64 = LEAVE
            .key(&self.keys(pass.concert))
            .arg(pass.token_id.to_string())
            .arg(ms(now))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(left == 1)
    }

    async fn finish(
        &self,
        concert: ConcertId,
        user: UserId,
        paid_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let finished: i64 = FINISH
            .key(&self.keys(concert))
            .arg(user.value())
            .arg(ms(now))
            .arg(ms(paid_at))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(finished == 1)
    }

    async fn tick(
        &self,
        concert: ConcertId,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Result<TickOutcome, QueueError> {
        let keys = self.keys(concert);
        let (admitted, dropped, expired, retired, failover): (u64, u64, u64, u8, u8) = TICK
            .key(&keys)
            .arg(ms(now))
            .arg(settings.admit_per_second)
            .arg(settings.max_active)
            .arg(u64::from(settings.active_ttl_seconds) * 1000)
            .arg(u64::from(settings.heartbeat_grace_seconds) * 1000)
            .arg(self.idle_after.num_milliseconds())
            .arg(u8::from(settings.admits(now)))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let retired = retired == 1;
        if retired {
            self.unlist(concert, &keys[5]).await?;
        }
        Ok(TickOutcome {
            admitted,
            dropped_waiting: dropped,
            expired_active: expired,
            retired,
            failover: failover == 1,
        })
    }

    async fn concerts(&self) -> Result<Vec<ConcertId>, QueueError> {
        let ids: Vec<i64> = self.conn.clone().smembers(self.rooms_key()).await?;
        Ok(ids.into_iter().map(ConcertId).collect())
    }

    async fn stats(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, QueueError> {
        let (waiting, active, admitted, oldest, admitted_total): (u64, u64, u64, i64, u64) = STATS
            .key(&self.keys(concert))
            .arg(ms(now))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(QueueStats {
            concert,
            waiting,
            active,
            admitted_last_minute: admitted,
            admitted_total,
            oldest_wait_seconds: if oldest < 0 {
                0
            } else {
                ((ms(now) - oldest).max(0) / 1000) as u64
            },
        })
    }

    async fn pending_events(
        &self,
        concert: ConcertId,
        max: usize,
    ) -> Result<Vec<QueueEvent>, QueueError> {
        let [.., events] = self.keys(concert);
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(events, "-", "+", max)
            .await?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> anyhow::Result<String> {
                    entry
                        .get::<String>(name)
                        .with_context(|| format!("queue event {} lacks {name}", entry.id))
                };
                Ok(QueueEvent {
                    kind: QueueEventKind::parse(&field("kind")?)
                        .context("unknown queue event kind")?,
                    concert,
                    token_id: field("token")?.parse()?,
                    user: UserId(field("user")?.parse()?),
                    at: at(field("at")?.parse()?),
                    id: entry.id,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|cause| QueueError::Fault(Fault::Unexpected(cause)))
    }

    async fn forwarded(&self, concert: ConcertId, ids: &[String]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let [.., events] = self.keys(concert);
        self.conn.clone().xdel::<_, _, ()>(events, ids).await?;
        Ok(())
    }
}
