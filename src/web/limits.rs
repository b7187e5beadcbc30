//! Abuse limits on the operations a crowd hammers — entering a waiting
//! room, issuing a coupon, holding a seat, charging the wallet: a token
//! bucket per user and one per client IP (`--rate-limit-per-user`,
//! `--rate-limit-per-ip`, requests per second with a burst of the same
//! size; off when unset). Over the limit answers 429 `rate_limited` with
//! `Retry-After`.
//!
//! The per-IP buckets are this instance's (`governor`). The per-user ones
//! are `governor`'s too in the embedded shape; with Redis they live there
//! (one GCRA script per request, on Redis's clock), so the limit holds for
//! a user whichever instances their requests reach.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, LazyLock},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use redis::Script;

use super::problem::Problem;
use crate::{kernel::UserId, kv::Conn};

/// Where the per-user buckets live.
enum UserBuckets {
    Local(DefaultKeyedRateLimiter<i64>),
    Redis {
        conn: Conn,
        prefix: String,
        /// Milliseconds between two requests at the steady rate.
        interval_ms: u64,
        /// How far ahead of the steady rate a burst may go (ms).
        tolerance_ms: u64,
    },
}

struct Inner {
    users: Option<UserBuckets>,
    ips: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The limits, shared by every limited operation of an instance.
#[derive(Clone)]
pub struct RateLimits(Arc<Inner>);

fn quota(per_second: NonZeroU32) -> Quota {
    Quota::per_second(per_second).allow_burst(per_second)
}

/// GCRA over one key: KEYS[1] the user's bucket; ARGV: the interval and
/// the burst tolerance (ms). The key holds the theoretical arrival time of
/// the next request; returns 0 (allowed) or the ms to wait.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - tolerance > now then return tat - tolerance - now end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1000)
return 0
"#,
    )
});

impl RateLimits {
    /// No limits.
    pub fn off() -> Self {
        Self(Arc::new(Inner {
            users: None,
            ips: None,
        }))
    }

    /// Per-user buckets in this process, per-IP buckets in this process.
    pub fn local(per_user: Option<NonZeroU32>, per_ip: Option<NonZeroU32>) -> Self {
        Self(Arc::new(Inner {
            users: per_user.map(|n| UserBuckets::Local(RateLimiter::keyed(quota(n)))),
            ips: per_ip.map(|n| RateLimiter::keyed(quota(n))),
        }))
    }

    /// Per-user buckets in Redis (shared by every instance), per-IP ones in
    /// this process.
    pub fn shared(
        conn: Conn,
        prefix: &str,
        per_user: Option<NonZeroU32>,
        per_ip: Option<NonZeroU32>,
    ) -> Self {
        let users = per_user.map(|n| {
            let interval_ms = (1000 / u64::from(n.get())).max(1);
            UserBuckets::Redis {
                conn,
                prefix: prefix.to_owned(),
                interval_ms,
                tolerance_ms: interval_ms * (u64::from(n.get()) - 1),
            }
        });
        Self(Arc::new(Inner {
            users,
            ips: per_ip.map(|n| RateLimiter::keyed(quota(n))),
        }))
    }

    /// Ok, or 429 `rate_limited` with how long to wait. A Redis that
    /// cannot be asked lets the request through (the limit is a guard, not
    /// the business rule; the outage shows in the operations it serves).
    pub async fn check(&self, user: UserId, ip: Option<IpAddr>) -> Result<(), Problem> {
        if let (Some(ips), Some(ip)) = (&self.0.ips, ip)
            && let Err(not_until) = ips.check_key(&ip)
        {
            // The limiter's own clock: a new one reads the CPU's features
            // (CPUID), which a VM traps.
            let wait = not_until.wait_time_from(ips.clock().now());
            metrics::counter!("rate_limited_total", "by" => "ip").increment(1);
            return Err(limited("this address", wait));
        }
        match &self.0.users {
            None => Ok(()),
            Some(UserBuckets::Local(users)) => {
                users.check_key(&user.value()).map_err(|not_until| {
                    metrics::counter!("rate_limited_total", "by" => "user").increment(1);
                    limited("you", not_until.wait_time_from(users.clock().now()))
                })
            }
            Some(UserBuckets::Redis {
                conn,
                prefix,
                interval_ms,
                tolerance_ms,
            }) => {
                let wait: Result<u64, redis::RedisError> = GCRA
                    .key(format!("{prefix}:limit:user:{}", user.value()))
                    .arg(*interval_ms)
                    .arg(*tolerance_ms)
                    .invoke_async(&mut conn.clone())
                    .await;
                match wait {
                    Ok(0) => Ok(()),
                    Ok(ms) => {
                        metrics::counter!("rate_limited_total", "by" => "user").increment(1);
                        Err(limited("you", Duration::from_millis(ms)))
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "rate limit unavailable; request let through");
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The client's address as this server sees it (the peer of the TCP
/// connection; behind a proxy, the proxy's).
pub fn client_ip(req: &poem::Request) -> Option<IpAddr> {
    req.remote_addr().as_socket_addr().map(|addr| addr.ip())
}

fn limited(who: &str, wait: Duration) -> Problem {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
    Problem::rate_limited(
        format!("{who} sent too many requests; retry in {seconds} s"),
        wait,
    )
}
