//! The issue ledger in Redis. Each step is one Lua script over one
//! campaign's keys, hash-tagged `{coupon:<id>}` so a campaign lives in one
//! Redis Cluster slot:
//!
//! - `meta`: hash with `quantity`, `seq` (the highest number handed out)
//!   and `epoch` (the replication id of the Redis it was written on); its
//!   absence means the ledger was lost and must be rebuilt;
//! - `holders`: hash user → `number:issuedAtMs` (`number:-` when loaded
//!   from the database);
//! - `free`: numbers given back by revocations, smallest at the right end.

use std::sync::LazyLock;

use chrono::DateTime;
use redis::Script;

use crate::{
    coupon::{
        domain::{
            Campaign, CouponError, LedgerDrift, LedgerEntry, LedgerSnapshot, LedgerStep, Winner,
        },
        ports::{CouponLedger, IssueRequest},
    },
    kernel::{CouponId, UserId},
    redis_client::Conn,
};

crate::redis_client::module_error_from_redis_err!(CouponError);

/// The ledger's epoch: the replication id of the primary it lives on.
/// A replica promoted by a failover starts a new replication history (a new
/// id), and asynchronous replication may have lost the old primary's last
/// writes: a ledger stamped with another id is dropped and rebuilt from the
/// database. (A restart without the old history does the same: one rebuild.)
const EPOCH: &str = r#"
local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
"#;

static ISSUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{EPOCH}
local quantity = tonumber(redis.call('HGET', KEYS[1], 'quantity'))
if not quantity then return {{'missing', 0}} end
local stamped = redis.call('HGET', KEYS[1], 'epoch')
if stamped ~= epoch then
  if stamped then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return {{'stale', 0}}
  end
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {{'duplicate', 0}} end
if redis.call('HLEN', KEYS[2]) >= quantity then return {{'sold_out', 0}} end
local n = redis.call('RPOP', KEYS[3])
if not n then
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  if seq >= quantity then return {{'sold_out', 0}} end
  n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
end
redis.call('HSET', KEYS[2], ARGV[1], n .. ':' .. ARGV[2])
return {{'issued', tonumber(n)}}
"#
    ))
});

/// ARGV: user, number, free (1/0).
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v or string.match(v, '^(%d+)') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == '1' then redis.call('RPUSH', KEYS[3], ARGV[2]) end
return 1
"#,
    )
});

/// ARGV: quantity, then (user, number) pairs from the database.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{EPOCH}
if redis.call('HEXISTS', KEYS[1], 'quantity') == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
local used, seq = {{}}, 0
for i = 2, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], n .. ':-')
  used[n] = true
  if n > seq then seq = n end
end
for n = seq, 1, -1 do
  if not used[n] then redis.call('RPUSH', KEYS[3], n) end
end
redis.call('HSET', KEYS[1], 'quantity', ARGV[1], 'seq', seq, 'epoch', epoch)
return 1
"#
    ))
});

/// ARGV: number of additions, the (user, number) additions, then the
/// (user, exact stored value) removals.
static REPAIR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HEXISTS', KEYS[1], 'quantity') == 0 then return 0 end
local nadd = tonumber(ARGV[1])
local added = {}
for k = 0, nadd - 1 do added[ARGV[3 + 2 * k]] = true end
for k = 2 + 2 * nadd, #ARGV, 2 do
  local user, raw = ARGV[k], ARGV[k + 1]
  if redis.call('HGET', KEYS[2], user) == raw then
    redis.call('HDEL', KEYS[2], user)
    local n = string.match(raw, '^(%d+)')
    if not added[n] then redis.call('RPUSH', KEYS[3], n) end
  end
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
for k = 0, nadd - 1 do
  local user, n = ARGV[2 + 2 * k], tonumber(ARGV[3 + 2 * k])
  redis.call('HSET', KEYS[2], user, n .. ':-')
  redis.call('LREM', KEYS[3], 0, n)
  while seq < n do
    seq = seq + 1
    if seq ~= n then redis.call('RPUSH', KEYS[3], seq) end
  end
end
redis.call('HSET', KEYS[1], 'seq', seq)
return 1
"#,
    )
});

#[derive(Clone)]
pub struct RedisCouponLedger {
    conn: Conn,
    prefix: String,
}

impl RedisCouponLedger {
    /// `prefix` namespaces every key (`bo` in production; tests use their own).
    pub fn new(conn: impl Into<Conn>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
        }
    }

    /// The campaign's keys: meta, holders, free.
    pub fn keys(&self, coupon: CouponId) -> [String; 3] {
        let tag = format!("{}:{{coupon:{}}}", self.prefix, coupon.value());
        [
            format!("{tag}:meta"),
            format!("{tag}:holders"),
            format!("{tag}:free"),
        ]
    }
}

fn stored_value(entry: &LedgerEntry) -> String {
    match entry.issued_at {
        Some(at) => format!("{}:{}", entry.number, at.timestamp_millis()),
        None => format!("{}:-", entry.number),
    }
}

fn parse_entry(user: &str, raw: &str) -> Result<LedgerEntry, CouponError> {
    let bad = || anyhow::anyhow!("coupon ledger entry {user} = {raw:?} is malformed");
    let (number, at) = raw.split_once(':').ok_or_else(bad)?;
    Ok(LedgerEntry {
        user: UserId(user.parse().map_err(|_| bad())?),
        number: number.parse().map_err(|_| bad())?,
        issued_at: match at {
            "-" => None,
            ms => Some(
                DateTime::from_timestamp_millis(ms.parse().map_err(|_| bad())?).ok_or_else(bad)?,
            ),
        },
    })
}

impl CouponLedger for RedisCouponLedger {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<LedgerStep, CouponError> {
        let (outcome, number): (String, u32) = ISSUE
            .key(&self.keys(request.campaign.id))
            .arg(request.user.value())
            .arg(request.now.timestamp_millis())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match outcome.as_str() {
            "issued" => LedgerStep::Issued(number),
            "duplicate" => LedgerStep::AlreadyIssued,
            "sold_out" => LedgerStep::SoldOut,
            "missing" => LedgerStep::Missing,
            "stale" => LedgerStep::Stale,
            other => {
                return Err(anyhow::anyhow!("coupon ledger answered {other:?}").into());
            }
        })
    }

    async fn revoke(&self, winner: &Winner, free_number: bool) -> Result<bool, CouponError> {
        let revoked: i64 = REVOKE
            .key(&self.keys(winner.coupon))
            .arg(winner.user.value())
            .arg(winner.number)
            .arg(i32::from(free_number))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(revoked == 1)
    }

    async fn load(
        &self,
        campaign: &Campaign,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        let mut invocation = LOAD.key(&self.keys(campaign.id));
        invocation.arg(campaign.quantity);
        for (user, number) in holders {
            invocation.arg(user.value()).arg(*number);
        }
        let loaded: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(loaded == 1)
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        let [meta, holders, _] = self.keys(coupon);
        let (quantity, entries): (Option<u32>, Vec<(String, String)>) = redis::pipe()
            .atomic()
            .hget(&meta, "quantity")
            .hgetall(&holders)
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(quantity) = quantity else {
            return Ok(None);
        };
        let mut entries = entries
            .iter()
            .map(|(user, raw)| parse_entry(user, raw))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.number);
        Ok(Some(LedgerSnapshot { quantity, entries }))
    }

    async fn repair(&self, coupon: CouponId, drift: &LedgerDrift) -> Result<(), CouponError> {
        let mut invocation = REPAIR.key(&self.keys(coupon));
        invocation.arg(drift.add.len());
        for (user, number) in &drift.add {
            invocation.arg(user.value()).arg(*number);
        }
        for entry in &drift.remove {
            invocation.arg(entry.user.value()).arg(stored_value(entry));
        }
        let _: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        let [meta, holders, _] = self.keys(coupon);
        let (loaded, count): (bool, u64) = redis::pipe()
            .hexists(&meta, "quantity")
            .hlen(&holders)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(loaded.then_some(count))
    }

    async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
        // One small pipeline per campaign (each campaign is its own cluster
        // slot), sent together: the multiplexed connection writes them in
        // one go, so the page still costs about one round trip.
        futures::future::try_join_all(coupons.iter().map(|c| self.issued(*c))).await
    }
}
