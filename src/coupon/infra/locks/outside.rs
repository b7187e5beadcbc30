//! The bench's locks held outside the database, around the shared
//! read-decide-write: the Redis spin lock and the Redis pub/sub lock
//! (Redisson's `RLock`), each let go on every path.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use redis::Script;
use tokio::sync::{Notify, watch};

use super::{LockedIssuer, Store, failed};
use crate::{
    coupon::{
        domain::RecordError,
        ports::{IssueOutcome, IssueRequest},
    },
    redis_client::Conn,
};

/// A Redis lock's waiter gives up (`Unavailable`) after this long.
const LOCK_DEADLINE: Duration = Duration::from_secs(10);
/// The spin lock's sleep between tries.
const SPIN_SLEEP: Duration = Duration::from_millis(1);
/// A Redis lock's lease: a crashed holder frees it after this long.
const LEASE_MS: u64 = 5_000;
/// A pub/sub waiter's longest sleep while its subscription is down.
const UNSUBSCRIBED_WAIT: Duration = Duration::from_millis(10);

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
async fn run_release(
    script: &Script,
    redis: &Conn,
    lock: &str,
    token: &str,
) -> redis::RedisResult<i64> {
    script
        .key(lock)
        .arg(token)
        .invoke_async(&mut redis.clone())
        .await
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
pub(super) trait OutsideLock: Clone + Send + Sync + 'static {
    /// Takes `lock` for `token`, waiting as the strategy waits.
    fn acquire(
        &self,
        lock: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// Lets go of `lock` if `token` still holds it: 1 if it did.
    fn release(
        &self,
        lock: &str,
        token: &str,
    ) -> impl Future<Output = redis::RedisResult<i64>> + Send;
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
pub(super) struct Guarded<L> {
    pub(super) store: Store,
    pub(super) lock: L,
    pub(super) prefix: String,
}

impl<L: OutsideLock> LockedIssuer for Guarded<L> {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<IssueOutcome, RecordError> {
        let mut guard = LockGuard {
            lock: self.lock.clone(),
            key: format!("{}:coupon:{}", self.prefix, request.campaign.id),
            token: uuid::Uuid::new_v4().simple().to_string(),
            held: false,
            armed: true,
        };
        self.lock.acquire(&guard.key, &guard.token).await?;
        guard.held = true;
        let outcome = self.store.issue_locked(&request).await;
        guard.release().await;
        outcome
    }
}

#[derive(Clone)]
pub(super) struct SpinLock {
    pub(super) redis: Conn,
}

impl OutsideLock for SpinLock {
    async fn acquire(&self, lock: &str, token: &str) -> Result<(), RecordError> {
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

    async fn release(&self, lock: &str, token: &str) -> redis::RedisResult<i64> {
        run_release(&RELEASE, &self.redis, lock, token).await
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
pub(super) struct PubSubLock {
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
    pub(super) fn start(redis: Conn, url: &str, prefix: &str) -> anyhow::Result<Self> {
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
    async fn acquire(&self, lock: &str, token: &str) -> Result<(), RecordError> {
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

    async fn release(&self, lock: &str, token: &str) -> redis::RedisResult<i64> {
        run_release(&RELEASE_AND_PUBLISH, &self.redis, lock, token).await
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
        async fn acquire(&self, _: &str, _: &str) -> Result<(), RecordError> {
            Ok(())
        }

        async fn release(&self, _: &str, token: &str) -> redis::RedisResult<i64> {
            self.0.lock().unwrap().push(token.to_owned());
            Ok(1)
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
