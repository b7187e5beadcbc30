//! Abuse limits on the operations a crowd or a script hammers — entering
//! a waiting room, issuing a coupon, holding a seat, charging the wallet,
//! paying, cancelling a ticket, joining a waitlist, redeeming a coupon: a token
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

use governor::Quota;
use redis::Script;

use super::problem::Problem;
use crate::{
    kernel::{UserId, keyed::Buckets},
    redis_client::Conn,
};

/// Where the per-user buckets live.
enum UserBuckets {
    Local(Buckets<i64>),
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
    ips: Option<Buckets<IpAddr>>,
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
            users: per_user.map(|n| UserBuckets::Local(Buckets::new(quota(n)))),
            ips: per_ip.map(|n| Buckets::new(quota(n))),
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
            ips: per_ip.map(|n| Buckets::new(quota(n))),
        }))
    }

    /// The per-IP limit alone, for what anyone may ask without signing in
    /// (the catalog's lists): ok, or 429 `rate_limited`.
    pub fn check_address(&self, ip: Option<IpAddr>) -> Result<(), Problem> {
        if let (Some(ips), Some(ip)) = (&self.0.ips, ip)
            && let Err(wait) = ips.check(&ip)
        {
            metrics::counter!("rate_limited_total", "by" => "ip").increment(1);
            return Err(limited("this address", wait));
        }
        Ok(())
    }

    /// Ok, or 429 `rate_limited` with how long to wait. A Redis that
    /// cannot be asked lets the request through (the limit is a guard, not
    /// the business rule; the outage shows in the operations it serves).
    pub async fn check(&self, user: UserId, ip: Option<IpAddr>) -> Result<(), Problem> {
        self.check_address(ip)?;
        match &self.0.users {
            None => Ok(()),
            Some(UserBuckets::Local(users)) => users.check(&user.value()).map_err(|wait| {
                metrics::counter!("rate_limited_total", "by" => "user").increment(1);
                limited("you", wait)
            }),
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

/// The client's address: the one [`TrustedProxies`] found in
/// `X-Forwarded-For` when the peer is a trusted proxy, else the peer of
/// the TCP connection.
pub fn client_ip(req: &poem::Request) -> Option<IpAddr> {
    req.data::<ClientIp>()
        .map(|client| client.0)
        .or_else(|| req.remote_addr().as_socket_addr().map(|addr| addr.ip()))
}

/// The client address a request was found to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The proxies (`--trusted-proxies`) whose `X-Forwarded-For` is believed.
/// Of a request from one of them, the client is the right-most address in
/// the header that is not itself a trusted proxy (each proxy appends the
/// peer it saw, so everything left of that could be the client's own
/// invention). A request from anyone else is taken at its TCP peer,
/// whatever it says.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<ipnet::IpNet>>);

impl TrustedProxies {
    /// `CIDR,…` or plain addresses (`10.0.0.0/8`, `127.0.0.1`).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("--trusted-proxies: {entry:?} is not an address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|nets| Self(Arc::new(nets)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Who sent a request that reached us from `peer` with these
    /// `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            // What a trusted proxy wrote is believed up to the first hop
            // that is not an address.
            match hop.trim().parse() {
                Ok(ip) => client = ip,
                Err(_) => break,
            }
        }
        client
    }
}

impl<E: poem::Endpoint> poem::Middleware<E> for TrustedProxies {
    type Output = ClientIpEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ClientIpEndpoint {
            inner,
            proxies: self.clone(),
        }
    }
}

pub struct ClientIpEndpoint<E> {
    inner: E,
    proxies: TrustedProxies,
}

impl<E: poem::Endpoint> poem::Endpoint for ClientIpEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: poem::Request) -> poem::Result<Self::Output> {
        if let Some(peer) = req.remote_addr().as_socket_addr().map(|addr| addr.ip()) {
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok());
            let client = self.proxies.client(peer, forwarded);
            req.set_data(ClientIp(client));
        }
        self.inner.call(req).await
    }
}

fn limited(who: &str, wait: Duration) -> Problem {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
    Problem::rate_limited(
        format!("{who} sent too many requests; retry in {seconds} s"),
        wait,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let lb = proxies(&["10.0.0.0/8", "192.168.1.7"]);
        assert_eq!(
            lb.client(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            lb.client(ip("10.1.2.3"), ["1.2.3.4"].into_iter()),
            ip("1.2.3.4")
        );
        assert_eq!(
            lb.client(ip("192.168.1.7"), std::iter::empty()),
            ip("192.168.1.7")
        );
    }

    #[test]
    fn the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy() {
        let lb = proxies(&["10.0.0.0/8"]);
        // The client claimed 6.6.6.6; our proxies appended what they saw.
        assert_eq!(
            lb.client(
                ip("10.0.0.2"),
                ["6.6.6.6, 198.51.100.4", "10.0.0.1"].into_iter()
            ),
            ip("198.51.100.4")
        );
        assert_eq!(
            lb.client(ip("10.0.0.2"), ["10.0.0.5, 10.0.0.1"].into_iter()),
            ip("10.0.0.5"),
            "every hop a proxy: the first one"
        );
        assert_eq!(
            lb.client(ip("10.0.0.2"), ["1.2.3.4, garbage"].into_iter()),
            ip("10.0.0.2"),
            "an unreadable hop ends the chain at the last proxy"
        );
        assert_eq!(
            lb.client(ip("10.0.0.2"), ["garbage, 1.2.3.4"].into_iter()),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn a_bad_entry_is_refused_at_start() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
        assert_eq!(proxies(&[]).0.len(), 0);
    }
}
