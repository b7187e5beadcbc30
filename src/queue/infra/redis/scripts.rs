//! The Lua scripts of the Redis waiting rooms: each runs over one room's
//! eight keys (in the order `RedisQueueStore::keys` gives them) as one
//! atomic step, and appends the event it records to the room's stream.

use std::sync::LazyLock;

use redis::Script;

/// Recorded events kept at most, should forwarding stall.
const EVENTS_MAX_LEN: usize = 1_000_000;

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

/// ARGV: DRAW_RANGE, then per arrival: user, new token, now ms, lineup
/// (`fifo`, `draw` or `refuse`), number drawn (one room's arrivals, in
/// the order they came). Returns, for each arrival in order (flat): token,
/// state, n, created: state `waiting` with n = position, `active` with n =
/// until ms, or `gone` (refused); created 1 when it took a new place. Each
/// arrival is placed as it would be alone, after the ones before it, so
/// positions are exact.
///
/// The line and the draw share one sorted set. A score is `band *
/// DRAW_RANGE + key`: the key is the arrival's sequence number in arrival
/// order, or the number drawn in the draw; the band goes up whenever the
/// arrivals switch between the two, so a draw stands behind the FIFO
/// arrivals before it and ahead of those after it (the in-process store's
/// line and pool, in one order).
pub(super) static ENTER_MANY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local range = tonumber(ARGV[1])
local function enter(user, new_tok, now, lineup, draw)
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
  if lineup == 'refuse' then return {new_tok, 'gone', 0, 0} end
  tok = new_tok
  local mode = redis.call('HGET', meta, 'mode')
  local band = tonumber(redis.call('HGET', meta, 'band') or '1')
  if mode ~= lineup then
    if mode then band = band + 1 end
    redis.call('HSET', meta, 'mode', lineup, 'band', band)
  end
  local key
  if lineup == 'draw' then key = tonumber(draw) else key = redis.call('HINCRBY', meta, 'seq', 1) end
  redis.call('ZADD', waiting, string.format('%.0f', band * range + key), tok)
  redis.call('ZADD', heartbeat, now, tok)
  redis.call('HSET', tokens, tok, user .. '|' .. now)
  redis.call('HSET', users, user, tok)
  record('entered', tok, user, now)
  return {tok, 'waiting', redis.call('ZRANK', waiting, tok) + 1, 1}
end
local out = {}
for i = 2, #ARGV, 5 do
  local one = enter(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4])
  for _, v in ipairs(one) do out[#out + 1] = v end
end
return out
"#,
    )
});

/// ARGV: token, now ms, token, now ms, … (one room's polls). Returns, for
/// each poll in order, state, n, admitted in the last minute (flat): each
/// poll is the heartbeat and the read a single poll would be, at its own
/// time.
pub(super) static STATUS_MANY: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static FINISH: LazyLock<Script> = LazyLock::new(|| {
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
/// idle ms, 1 when the room admits now (open, not paused) else 0.
/// Returns {admitted, dropped waiting, expired active, retired, failover}.
/// The admission part is `QueueSettings::admission` (the domain's rule) in
/// Lua, so that the read of the room, the decision and the admissions are
/// one atomic step however many schedulers run; the retirement at the end
/// is `RoomActivity::retires`. The contract tests hold both stores to them.
pub(super) static TICK: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static STATS: LazyLock<Script> = LazyLock::new(|| {
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
