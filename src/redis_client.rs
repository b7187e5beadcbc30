//! Redis plumbing shared by the Redis adapters: one connection type for
//! standalone Redis and Redis Cluster, and telling an outage (503, heals by
//! itself) from a bug.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

/// True when Redis could not be reached or did not answer in time, or a
/// cluster is between states (a slot moving, a failover under way, a node
/// loading or read-only): all heal by themselves, so the client gets 503.
pub fn is_outage(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_cluster_error()
        || matches!(
            err.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::BusyLoading
                )
        )
}

impl From<redis::RedisError> for crate::kernel::StoreError {
    fn from(err: redis::RedisError) -> Self {
        if is_outage(&err) {
            Self::Unavailable(err.into())
        } else {
            Self::Unexpected(err.into())
        }
    }
}

/// Lets a module's error type be built from a `RedisError` with `?`: an
/// outage is its 503, anything else unexpected.
macro_rules! module_error_from_redis_err {
    ($error:ty) => {
        impl From<redis::RedisError> for $error {
            fn from(err: redis::RedisError) -> Self {
                <$error>::from($crate::kernel::StoreError::from(err))
            }
        }
    };
}
pub(crate) use module_error_from_redis_err;

/// How long connecting to, and each answer from, Redis may take before the
/// call counts as an outage (503, retried by the client).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection to Redis, standalone or cluster. Every Redis adapter
/// speaks through it; on a cluster each command goes to the node owning its
/// key's slot (MOVED and ASK followed, scripts by EVALSHA with NOSCRIPT
/// reloaded on that node), so a multi-key script must keep its keys in one
/// slot with a `{hash tag}`.
#[derive(Clone)]
pub enum Conn {
    /// Standalone Redis, reconnecting by itself.
    Single(ConnectionManager),
    /// A standalone connection of its own (blocking reads).
    Dedicated(MultiplexedConnection),
    /// Redis Cluster.
    Cluster(HealingCluster),
}

impl From<ConnectionManager> for Conn {
    fn from(conn: ConnectionManager) -> Self {
        Self::Single(conn)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                let (mut conn, healing) = (c.current(), c.clone());
                Box::pin(async move {
                    let answer = conn.req_packed_command(cmd).await;
                    healing.observe(answer.as_ref().err());
                    answer
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => {
                let (mut conn, healing) = (c.current(), c.clone());
                Box::pin(async move {
                    let answer = conn.req_packed_commands(pipeline, offset, count).await;
                    healing.observe(answer.as_ref().err());
                    answer
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::Cluster(c) => c.current().get_db(),
        }
    }
}

/// Where Redis connections come from: one URL, or a cluster's seed nodes.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl From<redis::Client> for RedisTarget {
    fn from(client: redis::Client) -> Self {
        Self::Single(client)
    }
}

impl RedisTarget {
    /// A standalone Redis at `url`.
    pub fn single(url: &str) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).with_context(|| format!("parsing Redis URL {url}"))?;
        Ok(Self::Single(client))
    }

    /// A Redis Cluster known by some of its nodes (it finds the others).
    pub fn cluster(nodes: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !nodes.is_empty(),
            "a Redis Cluster needs at least one node URL"
        );
        // Checks the URLs now, so a typo fails at start-up.
        ClusterClient::new(nodes.to_vec()).context("parsing the Redis Cluster node URLs")?;
        Ok(Self::Cluster(nodes.to_vec()))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The shared connection of the process (multiplexed; standalone ones
    /// reconnect by themselves, cluster ones re-read the slot map).
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let conn = client
                    .get_connection_manager_with_config(config)
                    .await
                    .context("connecting to Redis")?;
                Ok(Conn::Single(conn))
            }
            Self::Cluster(nodes) => cluster_conn(nodes, RESPONSE_TIMEOUT).await,
        }
    }

    /// A connection of its own whose answers may take `response_timeout`
    /// (a blocking read holds its connection until it returns).
    pub async fn dedicated(&self, response_timeout: Duration) -> anyhow::Result<Conn> {
        match self {
            Self::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .context("opening a Redis connection")?;
                Ok(Conn::Dedicated(conn))
            }
            Self::Cluster(nodes) => cluster_conn(nodes, response_timeout).await,
        }
    }
}

/// A cluster connection whose answers may take `response_timeout`.
async fn cluster_conn(nodes: &[String], response_timeout: Duration) -> anyhow::Result<Conn> {
    let client = ClusterClient::builder(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response_timeout)
        // A failover takes a few seconds: keep following the slot map
        // for a while before answering 503.
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(1_000)
        .build()
        .context("configuring the Redis Cluster client")?;
    let conn = client
        .get_async_connection()
        .await
        .context("connecting to the Redis Cluster")?;
    Ok(Conn::Cluster(HealingCluster {
        client: Arc::new(client),
        current: Arc::new(RwLock::new(conn)),
        health: Arc::default(),
    }))
}

/// How long every call on a cluster connection may keep failing as an
/// outage before a fresh connection is built from the seed nodes.
pub const CLUSTER_STALL: Duration = Duration::from_secs(3);

/// A Redis Cluster connection that heals itself. The redis crate's cluster
/// client follows MOVED and ASK and re-reads the slot map after errors, but
/// when a primary dies its slot-map refresh can stall for good (seen here
/// with a replica promoted a moment later: every call then times out,
/// minutes on). So when calls have kept failing as outages for
/// [`CLUSTER_STALL`] with no success between, a new connection is made from
/// the seed nodes in the background (it reads the current slot map) and
/// replaces the stalled one; calls in flight finish on the old one.
#[derive(Clone)]
pub struct HealingCluster {
    client: Arc<ClusterClient>,
    current: Arc<RwLock<ClusterConnection>>,
    health: Arc<Mutex<Health>>,
}

#[derive(Default)]
struct Health {
    failing_since: Option<Instant>,
    replacing: bool,
}

impl HealingCluster {
    fn current(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn observe(&self, err: Option<&redis::RedisError>) {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match err {
            Some(err) if is_outage(err) => {
                let since = *health.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= CLUSTER_STALL && !health.replacing {
                    health.replacing = true;
                    drop(health);
                    self.replace();
                }
            }
            // A bug-class error still means the cluster answered.
            _ => health.failing_since = None,
        }
    }

    fn replace(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let fresh =
                tokio::time::timeout(CONNECT_TIMEOUT * 5, this.client.get_async_connection()).await;
            let mut health = this
                .health
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            health.replacing = false;
            match fresh {
                Ok(Ok(conn)) => {
                    *this
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
                    health.failing_since = None;
                    metrics::counter!("redis_cluster_reconnects_total").increment(1);
                    tracing::warn!(
                        "Redis Cluster calls kept failing; reconnected from the seed nodes"
                    );
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "Redis Cluster: reconnecting failed; will try again");
                }
                Err(_) => tracing::warn!("Redis Cluster: reconnecting timed out; will try again"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::*;

    fn error(kind: ErrorKind) -> RedisError {
        RedisError::from((kind, "test"))
    }

    #[test]
    fn a_cluster_between_states_is_an_outage_and_a_bad_command_is_not() {
        for kind in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::TryAgain,
            ServerErrorKind::Moved,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ReadOnly,
            ServerErrorKind::BusyLoading,
        ] {
            assert!(is_outage(&error(ErrorKind::Server(kind))), "{kind:?}");
        }
        assert!(is_outage(&error(ErrorKind::ClusterConnectionNotFound)));
        assert!(!is_outage(&error(ErrorKind::Server(
            ServerErrorKind::CrossSlot
        ))));
        assert!(!is_outage(&error(ErrorKind::Server(
            ServerErrorKind::ResponseError
        ))));
        assert!(!is_outage(&error(ErrorKind::UnexpectedReturnType)));
    }

    #[test]
    fn cluster_nodes_are_checked_when_configured() {
        assert!(RedisTarget::cluster(&[]).is_err());
        assert!(RedisTarget::cluster(&["not a url".into()]).is_err());
        let target = RedisTarget::cluster(&["redis://127.0.0.1:7000".into()]).unwrap();
        assert!(target.is_cluster());
        assert!(
            !RedisTarget::single("redis://127.0.0.1:6379/")
                .unwrap()
                .is_cluster()
        );
    }
}
