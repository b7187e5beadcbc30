//! The waiting rooms in Redis. Every state change is one Lua script over
//! one concert's keys, all hash-tagged `{queue:<concert>}` so a room lives
//! in one Redis Cluster slot; each script also appends its event to the
//! room's own event stream, which the scheduler forwards to the main bus.

use std::{
    collections::HashMap,
    future::Future,
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

use scripts::{ENTER_MANY, FINISH, LEAVE, STATS, STATUS_MANY, TICK};

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
    polls: Arc<OnceLock<Batcher<(Uuid, i64), Status>>>,
    /// The arrivals waiting for theirs.
    enters: Arc<OnceLock<Batcher<Arrival, Entered>>>,
    /// Status polls answered, and the script calls that answered them.
    batching: Arc<Counts>,
    /// Arrivals placed, and the script calls that placed them.
    entering: Arc<Counts>,
}

/// Requests answered, and the script calls that answered them.
type Counts = (AtomicU64, AtomicU64);

/// One request waiting for its batch: its room, what it asks, and where
/// its answer goes.
struct Pending<Q, A> {
    concert: ConcertId,
    ask: Q,
    answer: oneshot::Sender<Result<A, Shared>>,
}

/// Where requests queue for the task that sends them to Redis together.
type Batcher<Q, A> = mpsc::UnboundedSender<Pending<Q, A>>;

/// What `STATUS_MANY` answers for one token: {state, n, admitted in the last minute}.
type Status = (String, i64, i64);

/// One arrival for `ENTER_MANY`: user, new token, now ms, lineup, number drawn.
type Arrival = (i64, Uuid, i64, &'static str, u64);

/// What `ENTER_MANY` answers for one arrival: {token, state, n, created}.
type Entered = (String, String, i64, i64);

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

/// The most requests of one room that go to Redis in one script call.
const BATCH: usize = 256;

impl RedisQueueStore {
    /// `prefix` namespaces every key (`bo` in production; tests use their own).
    pub fn new(conn: impl Into<Conn>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            idle_after: DEFAULT_ROOM_IDLE,
            polls: Arc::default(),
            enters: Arc::default(),
            batching: Arc::default(),
            entering: Arc::default(),
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

/// Starts the task that sends requests to Redis together: it takes every
/// request waiting when it is free, and sends each room's requests as one
/// script call by `send` (the rooms' calls side by side). A request that
/// comes while a batch is out waits at most that batch's round trip, and
/// under load one round trip answers many. The task ends with the last
/// sender.
fn start_batching<Q, A, F, Fut>(send: F) -> Batcher<Q, A>
where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(ConcertId, Vec<Pending<Q, A>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (requests, mut waiting) = mpsc::unbounded_channel::<Pending<Q, A>>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while waiting.recv_many(&mut batch, BATCH * 4).await > 0 {
            let mut rooms: HashMap<ConcertId, Vec<Pending<Q, A>>> = HashMap::new();
            for request in batch.drain(..) {
                rooms.entry(request.concert).or_default().push(request);
            }
            let calls = rooms.into_iter().flat_map(|(concert, requests)| {
                let mut chunks = Vec::new();
                let mut requests = requests.into_iter().peekable();
                while requests.peek().is_some() {
                    chunks.push((concert, requests.by_ref().take(BATCH).collect()));
                }
                chunks
            });
            futures::future::join_all(calls.map(|(concert, requests)| send(concert, requests)))
                .await;
        }
    });
    requests
}

/// Queues one request for its batch and waits for its answer.
async fn batched<Q, A>(
    batcher: &Batcher<Q, A>,
    concert: ConcertId,
    ask: Q,
) -> Result<A, QueueError> {
    let (answer, answered) = oneshot::channel();
    batcher
        .send(Pending {
            concert,
            ask,
            answer,
        })
        .map_err(|_| anyhow::anyhow!("the Redis batcher stopped"))?;
    Ok(answered
        .await
        .map_err(|_| anyhow::anyhow!("the Redis batcher dropped a request"))??)
}

/// Hands each request its part of a script's flat answer (`width` values
/// each, in the requests' order), or the script's error to every one.
fn hand_out<Q, A: redis::FromRedisValue>(
    script: &str,
    requests: Vec<Pending<Q, A>>,
    answers: redis::RedisResult<Vec<redis::Value>>,
    width: usize,
) {
    let failed = match answers {
        Ok(flat) if flat.len() == requests.len() * width => {
            let mut flat = flat.into_iter();
            for request in requests {
                let one = redis::Value::Array(flat.by_ref().take(width).collect());
                let _ = request
                    .answer
                    .send(redis::from_redis_value::<A>(one).map_err(|err| Shared {
                        outage: false,
                        message: format!("{script} answered {err}"),
                    }));
            }
            return;
        }
        Ok(flat) => Shared {
            outage: false,
            message: format!(
                "{script} answered {} values for {} requests",
                flat.len(),
                requests.len()
            ),
        },
        Err(err) => Shared {
            outage: crate::redis_client::is_outage(&err),
            message: format!("{err:#}"),
        },
    };
    for request in requests {
        let _ = request.answer.send(Err(failed.clone()));
    }
}

fn counted(counts: &Counts, requests: usize, histogram: &'static str) {
    counts.0.fetch_add(requests as u64, Ordering::Relaxed);
    counts.1.fetch_add(1, Ordering::Relaxed);
    metrics::histogram!(histogram).record(requests as f64);
}

impl RedisQueueStore {
    /// The same store without the batchers (their tasks' own copy: holding
    /// a sender would keep its task alive forever).
    fn clone_without_batchers(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            idle_after: self.idle_after,
            polls: Arc::default(),
            enters: Arc::default(),
            batching: self.batching.clone(),
            entering: self.entering.clone(),
        }
    }

    fn polls(&self) -> &Batcher<(Uuid, i64), Status> {
        self.polls.get_or_init(|| {
            let store = self.clone_without_batchers();
            start_batching(move |concert, polls| {
                let store = store.clone();
                async move { store.answer(concert, polls).await }
            })
        })
    }

    fn enters(&self) -> &Batcher<Arrival, Entered> {
        self.enters.get_or_init(|| {
            let store = self.clone_without_batchers();
            start_batching(move |concert, arrivals| {
                let store = store.clone();
                async move { store.place(concert, arrivals).await }
            })
        })
    }

    /// How many status polls this store (and its clones) answered, and in
    /// how many script calls.
    pub fn polls_and_calls(&self) -> (u64, u64) {
        (
            self.batching.0.load(Ordering::Relaxed),
            self.batching.1.load(Ordering::Relaxed),
        )
    }

    /// How many arrivals this store (and its clones) placed, and in how
    /// many script calls.
    pub fn enters_and_calls(&self) -> (u64, u64) {
        (
            self.entering.0.load(Ordering::Relaxed),
            self.entering.1.load(Ordering::Relaxed),
        )
    }

    /// Answers one room's polls with one `STATUS_MANY` call.
    async fn answer(&self, concert: ConcertId, polls: Vec<Pending<(Uuid, i64), Status>>) {
        counted(&self.batching, polls.len(), "queue_status_polls_per_call");
        let mut call = STATUS_MANY.key(&self.keys(concert));
        for poll in &polls {
            let (token, now) = poll.ask;
            call.arg(token.to_string()).arg(now);
        }
        let answers = call.invoke_async(&mut self.conn.clone()).await;
        hand_out("STATUS_MANY", polls, answers, 3);
    }

    /// Places one room's arrivals with one `ENTER_MANY` call, and lists the
    /// room (another slot: a plain command after it) when one took a new
    /// place, before any of them is answered.
    async fn place(&self, concert: ConcertId, arrivals: Vec<Pending<Arrival, Entered>>) {
        counted(&self.entering, arrivals.len(), "queue_enters_per_call");
        let mut call = ENTER_MANY.key(&self.keys(concert));
        call.arg(DRAW_RANGE);
        for arrival in &arrivals {
            let (user, token, now, lineup, draw) = arrival.ask;
            call.arg(user)
                .arg(token.to_string())
                .arg(now)
                .arg(lineup)
                .arg(draw);
        }
        let mut answers: redis::RedisResult<Vec<redis::Value>> =
            call.invoke_async(&mut self.conn.clone()).await;
        let created = answers.as_ref().is_ok_and(|flat| {
            flat.chunks(4)
                .any(|one| matches!(one.get(3), Some(redis::Value::Int(1))))
        });
        if created {
            let listed: redis::RedisResult<()> = self
                .conn
                .clone()
                .sadd(self.rooms_key(), concert.value())
                .await;
            if let Err(err) = listed {
                answers = Err(err);
            }
        }
        hand_out("ENTER_MANY", arrivals, answers, 4);
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
        let (kind, draw) = match lineup {
            Lineup::Fifo => ("fifo", 0),
            Lineup::Draw(draw) => ("draw", draw % DRAW_RANGE),
            Lineup::Refuse => ("refuse", 0),
        };
        let arrival = (
            newcomer.user.value(),
            newcomer.token_id,
            ms(now),
            kind,
            draw,
        );
        let (token, state, n, _created) = batched(self.enters(), newcomer.concert, arrival).await?;
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
        let (state, n, admitted) =
            batched(self.polls(), pass.concert, (pass.token_id, ms(now))).await?;
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
