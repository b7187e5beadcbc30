//! The waiting rooms in Redis. Every state change is one Lua script over
//! one concert's keys, all hash-tagged `{queue:<concert>}` so a room lives
//! in one Redis Cluster slot; each script also appends its event to the
//! room's own event stream, which the scheduler forwards to the main bus.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use redis::{AsyncCommands, Script, streams::StreamRangeReply};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    kernel::{ConcertId, UserId},
    kv::Conn,
    queue::{
        domain::{
            DEFAULT_ROOM_IDLE, DRAW_RANGE, Entry, Lineup, Place, QueueError, QueueEvent,
            QueueEventKind, QueuePass, QueueSettings, QueueStats, TickOutcome,
        },
        ports::QueueStore,
    },
};

/// Lists every concert whose room was entered (its own slot; touched only
/// by plain commands, never inside a script).
const ROOMS_KEY: &str = "bo:queue:rooms";
/// Recorded events kept at most, should forwarding stall.
const EVENTS_MAX_LEN: usize = 1_000_000;

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
            QueueError::Unavailable(cause)
        } else {
            QueueError::Unexpected(cause)
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
                    outage: crate::kv::is_outage(&err),
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

crate::kv::module_error_from_redis_err!(QueueError);

/// Shared Lua: `forget(token)` removes a token from every structure of its
/// room; `record(kind, token, user, now)` appends an event.
const PRELUDE: &str = r#"
local waiting, heartbeat, active, tokens, users, meta, admits, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local function forget(tok)
  local owner = redis.call('HGET', tokens, tok)
  redis.call('ZREM', waiting, tok)
  redis.call('ZREM', heartbeat, tok)
  redis.call('ZREM', active, tok)
  redis.call('HDEL', tokens, tok)
  if owner then
    local user = string.match(owner, '^([^|]+)')
    if redis.call('HGET', users, user) == tok then redis.call('HDEL', users, user) end
    return user
  end
  return false
end
local function record(kind, tok, user, now)
  redis.call('XADD', events, 'MAXLEN', '~', ARGV_EVENTS_MAX, '*', 'kind', kind, 'token', tok, 'user', user, 'at', now)
  redis.call('HSET', meta, 'touched', now)
end
"#;

fn script(body: &str) -> Script {
    let prelude = PRELUDE.replace("ARGV_EVENTS_MAX", &EVENTS_MAX_LEN.to_string());
    Script::new(&format!("{prelude}\n{body}"))
}

/// ARGV: user, new token, now ms, lineup (`fifo`, `draw` or `refuse`),
/// number drawn, DRAW_RANGE. Returns {token, state, n, created}: state
/// `waiting` with n = position, `active` with n = until ms, or `gone`
/// (refused).
///
/// The line and the draw share one sorted set. A score is `band *
/// DRAW_RANGE + key`: the key is the arrival's sequence number in arrival
/// order, or the number drawn in the draw; the band goes up whenever the
/// arrivals switch between the two, so a draw stands behind the FIFO
/// arrivals before it and ahead of those after it (the in-process store's
/// line and pool, in one order).
static ENTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local user, now = ARGV[1], tonumber(ARGV[3])
local lineup, range = ARGV[4], tonumber(ARGV[6])
local tok = redis.call('HGET', users, user)
if tok then
  local until_ms = redis.call('ZSCORE', active, tok)
  if until_ms and tonumber(until_ms) > now then
    return {tok, 'active', until_ms, 0}
  end
  local rank = redis.call('ZRANK', waiting, tok)
  if rank then
    redis.call('ZADD', heartbeat, now, tok)
    return {tok, 'waiting', rank + 1, 0}
  end
  forget(tok)
  record('expired', tok, user, now)
end
if lineup == 'refuse' then return {ARGV[2], 'gone', 0, 0} end
tok = ARGV[2]
local mode = redis.call('HGET', meta, 'mode')
local band = tonumber(redis.call('HGET', meta, 'band') or '1')
if mode ~= lineup then
  if mode then band = band + 1 end
  redis.call('HSET', meta, 'mode', lineup, 'band', band)
end
local key
if lineup == 'draw' then key = tonumber(ARGV[5]) else key = redis.call('HINCRBY', meta, 'seq', 1) end
redis.call('ZADD', waiting, string.format('%.0f', band * range + key), tok)
redis.call('ZADD', heartbeat, now, tok)
redis.call('HSET', tokens, tok, user .. '|' .. now)
redis.call('HSET', users, user, tok)
record('entered', tok, user, now)
return {tok, 'waiting', redis.call('ZRANK', waiting, tok) + 1, 1}
"#,
    )
});

/// ARGV: token, now ms, token, now ms, … (one room's polls). Returns, for
/// each poll in order, state, n, admitted in the last minute (flat): each
/// poll is the heartbeat and the read a single poll would be, at its own
/// time.
static STATUS_MANY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for i = 1, #ARGV, 2 do
  local tok, now = ARGV[i], tonumber(ARGV[i + 1])
  local admitted = redis.call('ZCOUNT', admits, now - 60000, '+inf')
  local until_ms = redis.call('ZSCORE', active, tok)
  if until_ms and tonumber(until_ms) > now then
    out[#out + 1] = 'active'; out[#out + 1] = tonumber(until_ms)
  else
    local rank = redis.call('ZRANK', waiting, tok)
    if rank then
      redis.call('ZADD', heartbeat, 'XX', now, tok)
      out[#out + 1] = 'waiting'; out[#out + 1] = rank + 1
    else
      out[#out + 1] = 'gone'; out[#out + 1] = 0
    end
  end
  out[#out + 1] = admitted
end
return out
"#,
    )
});

/// ARGV: token, now ms. Returns 1 when the token held a place.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local user = forget(ARGV[1])
if user then record('left', ARGV[1], user, ARGV[2]) return 1 end
return 0
"#,
    )
});

/// ARGV: user, now ms, paid at ms. Returns 1 when the user held a place
/// entered before the payment.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local tok = redis.call('HGET', users, ARGV[1])
if not tok then return 0 end
-- A place entered after the payment is a later visit: it stays.
local owner = redis.call('HGET', tokens, tok)
local entered = owner and tonumber(string.match(owner, '|(%d+)$'))
if entered and entered > tonumber(ARGV[3]) then return 0 end
local user = forget(tok)
record('expired', tok, user or ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// ARGV: now ms, admit per second, max active, active ttl ms, grace ms,
/// idle ms, 1 when the room admits now (open, not paused) else 0. Returns {admitted, dropped waiting, expired active, retired}.
/// The admission part is `QueueSettings::admission` (the domain's rule) in
/// Lua, so that the read of the room, the decision and the admissions are
/// one atomic step however many schedulers run; the retirement at the end
/// is `RoomActivity::retires`. The contract tests hold both stores to them.
static TICK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now, rate, max_active = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5])
-- The room's epoch is the replication id of its primary. Another id means
-- a replica took over (or Redis restarted) and may lack the old primary's
-- last writes; the admission credit it remembers may be one that was
-- already spent, so it starts again from nothing rather than admit a burst.
local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local stamped = redis.call('HGET', meta, 'epoch')
local failover = 0
if stamped ~= epoch and redis.call('EXISTS', meta) == 1 then
  if stamped then
    failover = 1
    redis.call('HSET', meta, 'credit', '0', 'last_tick', now)
  end
  redis.call('HSET', meta, 'epoch', epoch)
end
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, 5000)
for _, tok in ipairs(expired) do
  local user = forget(tok)
  if user then record('expired', tok, user, now) end
end
local stale = redis.call('ZRANGEBYSCORE', heartbeat, '-inf', '(' .. (now - grace), 'LIMIT', 0, 5000)
for _, tok in ipairs(stale) do
  local user = forget(tok)
  if user then record('expired', tok, user, now) end
end
local last = tonumber(redis.call('HGET', meta, 'last_tick'))
local credit = tonumber(redis.call('HGET', meta, 'credit')) or 0
local elapsed = 0
if last and now > last then elapsed = now - last end
credit = math.min(credit + elapsed * rate / 1000, math.max(rate, 1))
if not last or now > last then redis.call('HSET', meta, 'last_tick', now) end
local free = max_active - redis.call('ZCARD', active)
local line = 0
if ARGV[7] == '1' then line = redis.call('ZCARD', waiting) end
local n = math.min(math.floor(credit), free, line)
local admitted = 0
if n > 0 then
  local popped = redis.call('ZPOPMIN', waiting, n)
  for i = 1, #popped, 2 do
    local tok = popped[i]
    redis.call('ZREM', heartbeat, tok)
    redis.call('ZADD', active, now + ttl, tok)
    redis.call('ZADD', admits, now, tok)
    local owner = redis.call('HGET', tokens, tok)
    record('admitted', tok, string.match(owner or '0|', '^([^|]+)'), now)
    admitted = admitted + 1
  end
end
-- Credit nobody could use (the room was full, or empty) is not banked:
-- banking it would release a burst above the rate when slots free up.
if admitted < math.floor(credit) then credit = credit - math.floor(credit) else credit = credit - admitted end
redis.call('HSET', meta, 'credit', tostring(credit))
if admitted > 0 then redis.call('HINCRBY', meta, 'admitted_total', admitted) end
redis.call('ZREMRANGEBYSCORE', admits, '-inf', '(' .. (now - 60000))
local retired = 0
if redis.call('ZCARD', waiting) == 0 and redis.call('ZCARD', active) == 0
  and redis.call('XLEN', events) == 0 then
  local touched = tonumber(redis.call('HGET', meta, 'touched')) or 0
  if now - touched >= tonumber(ARGV[6]) then
    redis.call('DEL', waiting, heartbeat, active, tokens, users, meta, admits, events)
    retired = 1
  end
end
return {admitted, #stale, #expired, retired, failover}
"#,
    )
});

/// ARGV: now ms. Returns {waiting, active, admitted last minute, oldest
/// entered ms or -1, admitted in all}.
static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = tonumber(ARGV[1])
local head = redis.call('ZRANGE', waiting, 0, 0)
local oldest = -1
if head[1] then
  local owner = redis.call('HGET', tokens, head[1])
  if owner then oldest = tonumber(string.match(owner, '|(%d+)$')) end
end
return {
  redis.call('ZCARD', waiting),
  redis.call('ZCOUNT', active, '(' .. now, '+inf'),
  redis.call('ZCOUNT', admits, now - 60000, '+inf'),
  oldest,
  tonumber(redis.call('HGET', meta, 'admitted_total') or '0')
}
"#,
    )
});

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn place(state: &str, n: i64) -> Place {
    match state {
        "waiting" => Place::Waiting {
            position: n.max(0) as u64,
        },
        "active" => Place::Active { until: at(n) },
        _ => Place::Gone,
    }
}

impl QueueStore for RedisQueueStore {
    async fn enter(
        &self,
        concert: ConcertId,
        user: UserId,
        new_token: Uuid,
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
            .key(&self.keys(concert))
            .arg(user.value())
            .arg(new_token.to_string())
            .arg(ms(now))
            .arg(kind)
            .arg(draw)
            .arg(DRAW_RANGE)
            .invoke_async(&mut conn)
            .await?;
        if created == 1 {
            conn.sadd::<_, _, ()>(self.rooms_key(), concert.value())
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
            .map_err(QueueError::Unexpected)
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
