//! The classic ways to serve first come, first served, for the bench only
//! (the `bench-strategies` feature; a release never has this module). Each
//! is a [`LockedIssuer`]: it takes its lock, reads the campaign's issued
//! count and whether the user holds one, lets
//! [`first_come`](crate::coupon::domain::first_come) decide, and writes a
//! winner exactly as the ledger's path does
//! ([`record_winners`]: the row, its campaign's count, `CouponIssued`, the
//! key's answer, in one transaction). The bench serves each through the
//! production route (`--coupon-lock-strategy`) so that comparing them with
//! the ledger compares the strategies alone.
//!
//! - pessimistic: `SELECT … FOR UPDATE` on the campaign's row, held until
//!   the winner's transaction commits;
//! - optimistic: the campaign's issued count is its version: read it
//!   without a lock, then claim it in the write's transaction with
//!   `UPDATE … WHERE issued_count = <read>`; a lost race rolls back and
//!   retries after a short jittered sleep;
//! - Redis spin lock: `SET NX PX` with a random token, tried again every
//!   millisecond; compare-and-delete releases it;
//! - Redis pub/sub lock (Redisson's `RLock`): a waiter that finds the lock
//!   taken waits for the holder's release message on the lock's channel
//!   (or for the lease to run out) instead of spinning; the release deletes
//!   the key and publishes in one script.
//!
//! The Redis locks have a lease ([`LEASE_MS`]) and no watchdog renewing it
//! (Redisson's has one): a holder slower than the lease loses the lock.
//! The unique indexes on `user_coupons` still refuse a second row for a
//! number or a user, so that would be an error answer, never an over-issue.
//! A lock is let go on every path: after the winner's work, when taking it
//! failed (the `SET` may have landed before its answer was lost), and when
//! the request is dropped while holding it (a client that hung up).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use redis::Script;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use tokio::sync::{Notify, watch};

use crate::{
    coupon::{
        domain::{Campaign, IssuedCoupon, LedgerStep, RecordError, Winner, first_come},
        ports::{LockedIssue, LockedIssuer},
        usecase::record_winners,
    },
    db::{DbTx, DbUnitOfWork},
    kernel::{Transaction, UnitOfWork, UserId, idempotency::RequestKey},
    kv::Conn,
};

/// How coupon issues are decided (`--coupon-lock-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockStrategy {
    /// The production path: the Redis (or in-process) ledger.
    Ledger,
    /// `SELECT … FOR UPDATE` on the campaign's row.
    Pessimistic,
    /// The issued count as a version, claimed on write; retried on a lost race.
    Optimistic,
    /// A Redis `SET NX PX` lock, tried again every millisecond.
    SpinLock,
    /// A Redis lock whose waiters sleep until the holder publishes its release.
    PubSubLock,
}

/// Optimistic attempts per request before it fails (`Unavailable`).
const MAX_ATTEMPTS: u32 = 1_000;
/// A Redis lock's waiter gives up (`Unavailable`) after this long.
const LOCK_DEADLINE: Duration = Duration::from_secs(10);
/// The spin lock's sleep between tries.
const SPIN_SLEEP: Duration = Duration::from_millis(1);
/// A Redis lock's lease: a crashed holder frees it after this long.
const LEASE_MS: u64 = 5_000;
/// A pub/sub waiter's longest sleep while its subscription is down.
const UNSUBSCRIBED_WAIT: Duration = Duration::from_millis(10);

/// The issuer of `strategy`, or `None` for the ledger. `redis` is the
/// server's connection and `redis_url` its standalone URL (the pub/sub
/// lock subscribes through a connection of its own).
pub fn issuer(
    strategy: LockStrategy,
    uow: &DbUnitOfWork,
    db: &DatabaseConnection,
    redis: Option<&Conn>,
    redis_url: Option<&str>,
    prefix: &str,
) -> anyhow::Result<Option<Arc<dyn LockedIssuer>>> {
    let store = || {
        anyhow::ensure!(
            db.get_database_backend() == DatabaseBackend::Postgres,
            "--coupon-lock-strategy {strategy:?} needs PostgreSQL"
        );
        Ok(Store {
            uow: uow.clone(),
            db: db.clone(),
        })
    };
    let redis = || {
        redis
            .cloned()
            .with_context(|| format!("--coupon-lock-strategy {strategy:?} needs Redis"))
    };
    let prefix = format!("{prefix}:bench-lock");
    let issuer: Arc<dyn LockedIssuer> = match strategy {
        LockStrategy::Ledger => return Ok(None),
        LockStrategy::Pessimistic => Arc::new(Pessimistic(store()?)),
        LockStrategy::Optimistic => Arc::new(Optimistic(store()?)),
        LockStrategy::SpinLock => Arc::new(Guarded {
            store: store()?,
            lock: SpinLock { redis: redis()? },
            prefix,
        }),
        LockStrategy::PubSubLock => {
            let url = redis_url.context(
                "--coupon-lock-strategy pub-sub-lock needs a standalone Redis (--redis-url)",
            )?;
            Arc::new(Guarded {
                store: store()?,
                lock: PubSubLock::start(redis()?, url, &prefix)?,
                prefix,
            })
        }
    };
    Ok(Some(issuer))
}

fn failed(err: impl Into<anyhow::Error>) -> RecordError {
    RecordError::Failed(err.into())
}

/// The database side every strategy shares.
#[derive(Clone)]
struct Store {
    uow: DbUnitOfWork,
    db: DatabaseConnection,
}

impl Store {
    /// The campaign's issued count and whether `user` holds one, read
    /// through `conn`. With `for_update` the campaign's row is locked first
    /// (until `conn`'s transaction ends) and then read in a statement of
    /// its own: a statement that waited for the lock still sees the rows
    /// of its own start, not the winner that just committed.
    async fn read<C: ConnectionTrait>(
        conn: &C,
        campaign: &Campaign,
        user: UserId,
        for_update: bool,
    ) -> Result<(u32, bool), RecordError> {
        if for_update {
            conn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT 1 FROM coupons WHERE id = $1 FOR UPDATE",
                [campaign.id.value().into()],
            ))
            .await
            .map_err(failed)?;
        }
        let sql = "SELECT c.issued_count, EXISTS (SELECT 1 FROM user_coupons u \
               WHERE u.coupon_id = c.id AND u.user_id = $2) \
             FROM coupons c WHERE c.id = $1";
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                sql,
                [campaign.id.value().into(), user.value().into()],
            ))
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(anyhow!("campaign {} has no row", campaign.id)))?;
        let issued: i64 = row.try_get_by_index(0).map_err(failed)?;
        let held: bool = row.try_get_by_index(1).map_err(failed)?;
        Ok((u32::try_from(issued).map_err(failed)?, held))
    }

    /// The winner's writes, as the ledger's path makes them.
    async fn write(
        tx: &mut DbTx,
        campaign: &Campaign,
        user: UserId,
        number: u32,
        key: Option<&RequestKey>,
        now: DateTime<Utc>,
    ) -> Result<IssuedCoupon, RecordError> {
        let winner = Winner {
            coupon: campaign.id,
            user,
            number,
        };
        record_winners(tx, &[(winner, key.cloned())], now)
            .await?
            .pop()
            .ok_or_else(|| failed(anyhow!("the insert did not return the winner")))
    }

    /// Reads, decides and writes, for a caller that holds the campaign's
    /// lock outside the database.
    async fn issue_locked(
        &self,
        campaign: &Campaign,
        user: UserId,
        key: Option<&RequestKey>,
        now: DateTime<Utc>,
    ) -> Result<LockedIssue, RecordError> {
        let (issued, held) = Self::read(&self.db, campaign, user, false).await?;
        match first_come(held, issued, campaign.quantity) {
            LedgerStep::Issued(number) => {
                let mut tx = self.uow.begin().await.map_err(failed)?;
                let row = Self::write(&mut tx, campaign, user, number, key, now).await?;
                tx.commit().await.map_err(failed)?;
                Ok(LockedIssue::Won(row))
            }
            step => Ok(refusal(step)),
        }
    }
}

fn refusal(step: LedgerStep) -> LockedIssue {
    match step {
        LedgerStep::AlreadyIssued => LockedIssue::AlreadyIssued,
        _ => LockedIssue::SoldOut,
    }
}

struct Pessimistic(Store);

impl LockedIssuer for Pessimistic {
    fn issue<'a>(
        &'a self,
        campaign: &'a Campaign,
        user: UserId,
        key: Option<&'a RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<LockedIssue, RecordError>> {
        async move {
            let mut tx = self.0.uow.begin().await.map_err(failed)?;
            let (issued, held) = Store::read(tx.conn(), campaign, user, true).await?;
            match first_come(held, issued, campaign.quantity) {
                LedgerStep::Issued(number) => {
                    let row = Store::write(&mut tx, campaign, user, number, key, now).await?;
                    tx.commit().await.map_err(failed)?;
                    Ok(LockedIssue::Won(row))
                }
                step => {
                    // Frees the row for the next waiter now.
                    tx.rollback().await.map_err(failed)?;
                    Ok(refusal(step))
                }
            }
        }
        .boxed()
    }
}

struct Optimistic(Store);

impl LockedIssuer for Optimistic {
    fn issue<'a>(
        &'a self,
        campaign: &'a Campaign,
        user: UserId,
        key: Option<&'a RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<LockedIssue, RecordError>> {
        async move {
            for attempt in 0..MAX_ATTEMPTS {
                let (issued, held) = Store::read(&self.0.db, campaign, user, false).await?;
                let number = match first_come(held, issued, campaign.quantity) {
                    LedgerStep::Issued(number) => number,
                    step => return Ok(refusal(step)),
                };
                let mut tx = self.0.uow.begin().await.map_err(failed)?;
                // The version check: the count is still what was read (a
                // racing writer's commit makes this match nothing).
                let claimed = tx
                    .conn()
                    .execute_raw(Statement::from_sql_and_values(
                        DatabaseBackend::Postgres,
                        "UPDATE coupons SET issued_count = issued_count \
                         WHERE id = $1 AND issued_count = $2",
                        [campaign.id.value().into(), i64::from(issued).into()],
                    ))
                    .await
                    .map_err(failed)?
                    .rows_affected()
                    == 1;
                if claimed {
                    let row = Store::write(&mut tx, campaign, user, number, key, now).await?;
                    tx.commit().await.map_err(failed)?;
                    return Ok(LockedIssue::Won(row));
                }
                tx.rollback().await.map_err(failed)?;
                metrics::counter!("coupon_bench_lock_retries_total", "strategy" => "optimistic")
                    .increment(1);
                let step = 1 + u64::from(attempt.min(7));
                let micros = 100 + rand::random_range(0..250 * step);
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            Err(failed(anyhow!(
                "optimistic issue gave up after {MAX_ATTEMPTS} lost races"
            )))
        }
        .boxed()
    }
}

/// Deletes the lock if the caller still holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Runs a release `script` (compare the token, delete) for `lock`.
fn run_release<'a>(
    script: &'static Script,
    redis: &Conn,
    lock: &'a str,
    token: &'a str,
) -> BoxFuture<'a, redis::RedisResult<i64>> {
    let mut redis = redis.clone();
    async move { script.key(lock).arg(token).invoke_async(&mut redis).await }.boxed()
}

/// What letting go of a lock answered. When it was `held`, a lease that ran
/// out meanwhile means the lock did not hold (another request may have
/// decided beside this one), which the bench's checks would show.
fn released(answer: redis::RedisResult<i64>, key: &str, held: bool) {
    match answer {
        Ok(1) => {}
        Ok(_) if held => tracing::error!(key, "a bench lock's lease ran out while it was held"),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(key, error = %err, "releasing a bench lock failed; its lease frees it")
        }
    }
}

/// A lock held outside the database around [`Store::issue_locked`]; a
/// clone shares the lock (it only holds connections).
trait OutsideLock: Clone + Send + Sync + 'static {
    /// Takes `lock` for `token`, waiting as the strategy waits.
    fn acquire<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), RecordError>>;

    /// Lets go of `lock` if `token` still holds it: 1 if it did.
    fn release<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, redis::RedisResult<i64>>;
}

/// Lets go of a lock taken (or being taken) for one request, whatever way
/// the request ends: awaited by [`LockGuard::release`], or in a task of its
/// own when the guard is dropped first (an error taking the lock, a
/// cancelled request). The release compares the token, so letting go of a
/// lock this request never got is harmless.
struct LockGuard<L: OutsideLock> {
    lock: L,
    key: String,
    token: String,
    held: bool,
    armed: bool,
}

impl<L: OutsideLock> LockGuard<L> {
    async fn release(mut self) {
        self.armed = false;
        let answer = self.lock.release(&self.key, &self.token).await;
        released(answer, &self.key, self.held);
    }
}

impl<L: OutsideLock> Drop for LockGuard<L> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (lock, key, token, held) = (
            self.lock.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
            self.held,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let answer = lock.release(&key, &token).await;
                released(answer, &key, held);
            });
        }
    }
}

/// Issues under an [`OutsideLock`], one lock per campaign.
struct Guarded<L> {
    store: Store,
    lock: L,
    prefix: String,
}

impl<L: OutsideLock> LockedIssuer for Guarded<L> {
    fn issue<'a>(
        &'a self,
        campaign: &'a Campaign,
        user: UserId,
        key: Option<&'a RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<LockedIssue, RecordError>> {
        async move {
            let mut guard = LockGuard {
                lock: self.lock.clone(),
                key: format!("{}:coupon:{}", self.prefix, campaign.id),
                token: uuid::Uuid::new_v4().simple().to_string(),
                held: false,
                armed: true,
            };
            self.lock.acquire(&guard.key, &guard.token).await?;
            guard.held = true;
            let outcome = self.store.issue_locked(campaign, user, key, now).await;
            guard.release().await;
            outcome
        }
        .boxed()
    }
}

#[derive(Clone)]
struct SpinLock {
    redis: Conn,
}

impl OutsideLock for SpinLock {
    fn acquire<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        async move {
            let mut redis = self.redis.clone();
            let deadline = Instant::now() + LOCK_DEADLINE;
            loop {
                let acquired: Option<String> = redis::cmd("SET")
                    .arg(lock)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(LEASE_MS)
                    .query_async(&mut redis)
                    .await
                    .map_err(failed)?;
                if acquired.is_some() {
                    return Ok(());
                }
                metrics::counter!("coupon_bench_lock_retries_total", "strategy" => "spin-lock")
                    .increment(1);
                if Instant::now() >= deadline {
                    return Err(failed(anyhow!(
                        "the spin lock was not acquired within {LOCK_DEADLINE:?}"
                    )));
                }
                tokio::time::sleep(SPIN_SLEEP).await;
            }
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, redis::RedisResult<i64>> {
        run_release(&RELEASE, &self.redis, lock, token)
    }
}

/// Takes the lock, or says how long its holder's lease still runs (ms).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
return ttl
",
    )
});

/// Deletes the lock if the caller still holds it and tells the waiters.
static RELEASE_AND_PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1] .. ':released', '1')
  return 1
end
return 0
",
    )
});

#[derive(Clone)]
struct PubSubLock {
    redis: Conn,
    /// The waiters of each lock in this process: a release message wakes
    /// one of them (Redisson's semaphore per lock).
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Whether the release channels are subscribed right now.
    subscribed: watch::Receiver<bool>,
}

impl PubSubLock {
    /// Subscribes to every lock's release channel (one pattern, one
    /// connection of its own), resubscribing after a disconnect.
    fn start(redis: Conn, url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("the pub/sub lock's Redis URL")?;
        let waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let (up, subscribed) = watch::channel(false);
        let pattern = format!("{}:coupon:*:released", glob_escaped(prefix));
        let routes = waiters.clone();
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.psubscribe(&pattern).await {
                        Ok(()) => {
                            up.send_replace(true);
                            let mut messages = pubsub.into_on_message();
                            while let Some(message) = messages.next().await {
                                let channel = message.get_channel_name();
                                let lock = channel.strip_suffix(":released").unwrap_or(channel);
                                let waiting = routes.lock().ok().and_then(|w| w.get(lock).cloned());
                                if let Some(notify) = waiting {
                                    notify.notify_one();
                                }
                            }
                            tracing::warn!("the bench pub/sub lock lost its subscription");
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "subscribing the bench pub/sub lock failed")
                        }
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "connecting the bench pub/sub lock failed")
                    }
                }
                up.send_replace(false);
                if up.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(Self {
            redis,
            waiters,
            subscribed,
        })
    }

    fn waiters_of(&self, lock: &str) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.entry(lock.to_owned()).or_default().clone()
    }
}

impl OutsideLock for PubSubLock {
    fn acquire<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        async move {
            let notify = self.waiters_of(lock);
            let mut redis = self.redis.clone();
            let deadline = Instant::now() + LOCK_DEADLINE;
            loop {
                // Waiting before trying: a release between the try and the
                // wait still wakes this waiter.
                let released = notify.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let ttl: i64 = match ACQUIRE
                    .key(lock)
                    .arg(token)
                    .arg(LEASE_MS)
                    .invoke_async(&mut redis)
                    .await
                {
                    Ok(ttl) => ttl,
                    Err(err) => {
                        // A release meant for this waiter goes to the next.
                        notify.notify_one();
                        return Err(failed(err));
                    }
                };
                if ttl < 0 {
                    return Ok(());
                }
                metrics::counter!("coupon_bench_lock_retries_total", "strategy" => "pub-sub-lock")
                    .increment(1);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    notify.notify_one();
                    return Err(failed(anyhow!(
                        "the pub/sub lock was not acquired within {LOCK_DEADLINE:?}"
                    )));
                }
                let mut wait = Duration::from_millis(ttl.unsigned_abs()).min(left);
                if !*self.subscribed.borrow() {
                    wait = wait.min(UNSUBSCRIBED_WAIT);
                }
                let _ = tokio::time::timeout(wait, released).await;
            }
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, redis::RedisResult<i64>> {
        run_release(&RELEASE_AND_PUBLISH, &self.redis, lock, token)
    }
}

/// `text` matching itself in a `PSUBSCRIBE` pattern.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the releases it is asked for.
    #[derive(Clone, Default)]
    struct CountingLock(Arc<Mutex<Vec<String>>>);

    impl OutsideLock for CountingLock {
        fn acquire<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), RecordError>> {
            async { Ok(()) }.boxed()
        }

        fn release<'a>(
            &'a self,
            _: &'a str,
            token: &'a str,
        ) -> BoxFuture<'a, redis::RedisResult<i64>> {
            self.0.lock().unwrap().push(token.to_owned());
            async { Ok(1) }.boxed()
        }
    }

    fn guard(lock: &CountingLock) -> LockGuard<CountingLock> {
        LockGuard {
            lock: lock.clone(),
            key: "k".into(),
            token: "t".into(),
            held: true,
            armed: true,
        }
    }

    #[tokio::test]
    async fn a_lock_is_let_go_once_whether_released_or_dropped() {
        let lock = CountingLock::default();
        guard(&lock).release().await;
        tokio::task::yield_now().await;
        assert_eq!(
            *lock.0.lock().unwrap(),
            ["t"],
            "released once, not again on drop"
        );

        let lock = CountingLock::default();
        // A request cancelled while holding the lock (the client hung up).
        let holding = async {
            let _guard = guard(&lock);
            std::future::pending::<()>().await;
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(5), holding)
                .await
                .is_err()
        );
        tokio::task::yield_now().await;
        assert_eq!(
            *lock.0.lock().unwrap(),
            ["t"],
            "dropped, so let go in a task"
        );
    }

    #[test]
    fn a_prefix_with_glob_characters_matches_only_itself() {
        assert_eq!(glob_escaped("boxoffice"), "boxoffice");
        assert_eq!(glob_escaped(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
