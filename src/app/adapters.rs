//! Which adapters serve the ports: SQLite or PostgreSQL behind sea-orm;
//! Redis or in-process for the waiting room, the coupon ledger and the
//! event bus. Nothing else in the crate picks one.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;

use crate::{
    auth::{
        infra::{
            jwks::JwksUrl,
            jwt::{JwtCodec, KeyRing, ProviderKeys},
            subjects::DbSubjects,
        },
        ports::{KeySetSource, SubjectDirectory, TokenCodec},
        usecase::Verifier,
    },
    config::Settings,
    coupon::infra::{AnyCouponLedger, memory::MemoryCouponLedger, redis::RedisCouponLedger},
    db::{self, DbUnitOfWork},
    outbox::infra::{AnyBus, memory::MemoryBus, redis::RedisBus, relay::RelayWaker},
    queue::infra::{AnyQueueStore, memory::MemoryQueueStore, redis::RedisQueueStore},
    redis_client::{Conn, RedisTarget},
};

pub struct Adapters {
    pub db: DatabaseConnection,
    pub uow: DbUnitOfWork,
    pub redis: Option<Conn>,
    pub bus: AnyBus,
    /// The in-process bus reports outbox rows every consumer finished.
    pub finished: Option<mpsc::UnboundedReceiver<i64>>,
    pub queue_store: AnyQueueStore,
    pub coupon_ledger: AnyCouponLedger,
    pub waker: RelayWaker,
    pub codec: Arc<dyn TokenCodec>,
    /// The identity provider's key set at `--jwt-jwks-url`, fetched again
    /// in the background.
    pub key_set: Option<Arc<JwksUrl>>,
    pub subjects: Arc<DbSubjects>,
}

impl Adapters {
    /// Connects the stores the settings name (the schema is the caller's
    /// to migrate, under the start-up lock).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let db = db::connect_with(
            &settings.database_url,
            Duration::from_secs(settings.sqlite_busy_timeout_seconds),
        )
        .await?;
        let redis = match redis_target(settings)? {
            Some(target) => {
                let conn = target.connect().await?;
                Some((target, conn))
            }
            None => None,
        };
        let (bus, finished, queue_store, coupon_ledger) = match &redis {
            Some((target, conn)) => (
                AnyBus::Redis(
                    RedisBus::new(
                        target.clone(),
                        conn.clone(),
                        &settings.event_stream,
                        settings.stream_max_len,
                    )
                    .partitioned(settings.event_stream_partitions),
                ),
                None,
                AnyQueueStore::Redis(
                    RedisQueueStore::new(conn.clone(), &settings.redis_prefix)
                        .retiring_after(idle_rooms(settings)),
                ),
                AnyCouponLedger::Redis(RedisCouponLedger::new(
                    conn.clone(),
                    &settings.redis_prefix,
                )),
            ),
            None => {
                let (bus, finished) = MemoryBus::new();
                (
                    AnyBus::Memory(bus),
                    Some(finished),
                    AnyQueueStore::Memory(
                        MemoryQueueStore::default().retiring_after(idle_rooms(settings)),
                    ),
                    AnyCouponLedger::Memory(MemoryCouponLedger::default()),
                )
            }
        };
        let (codec, key_set) = identity_codec(settings).await?;
        let db_for_subjects = db.clone();
        Ok(Self {
            uow: DbUnitOfWork::new(db.clone()),
            db,
            redis: redis.map(|(_, conn)| conn),
            bus,
            finished,
            queue_store,
            coupon_ledger,
            waker: RelayWaker::default(),
            codec: Arc::new(codec),
            key_set,
            subjects: Arc::new(DbSubjects::new(
                db_for_subjects,
                settings.jwt_issuer.clone().unwrap_or_default(),
            )),
        })
    }

    /// How bearer tokens are checked.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            codec: self.codec.clone(),
            keys: self.key_set.clone().map(|set| set as Arc<dyn KeySetSource>),
            subjects: self.subjects.clone() as Arc<dyn SubjectDirectory>,
        }
    }

    /// Adapters that connect to nothing, for building the OpenAPI document
    /// from the same wiring as the server.
    pub fn offline() -> Self {
        let db = DatabaseConnection::default();
        let subjects_db = db.clone();
        let (bus, _) = MemoryBus::new();
        Self {
            uow: DbUnitOfWork::new(db.clone()),
            db,
            redis: None,
            bus: AnyBus::Memory(bus),
            finished: None,
            queue_store: AnyQueueStore::Memory(MemoryQueueStore::default()),
            coupon_ledger: AnyCouponLedger::Memory(MemoryCouponLedger::default()),
            waker: RelayWaker::default(),
            codec: Arc::new(JwtCodec::new(b"offline")),
            key_set: None,
            subjects: Arc::new(DbSubjects::new(subjects_db, String::new())),
        }
    }
}

/// How identity tokens are checked: an identity provider's keys when a key
/// set URL (fetched now and again later), key set file or public key file
/// (read once, at start) is given, else the HS256 secret; `iss`/`aud` when
/// configured.
async fn identity_codec(settings: &Settings) -> anyhow::Result<(JwtCodec, Option<Arc<JwksUrl>>)> {
    let codec = JwtCodec::new(settings.identity_secret().as_bytes());
    let mut key_set = None;
    let codec = match (
        &settings.jwt_jwks_url,
        &settings.jwt_jwks_file,
        &settings.jwt_public_key_file,
    ) {
        (Some(url), _, _) => {
            let fetched = Arc::new(JwksUrl::fetch_at_start(url).await?);
            let keys = fetched.keys();
            key_set = Some(fetched);
            codec.with_provider_keys(keys)
        }
        (None, Some(path), _) => {
            let json = std::fs::read_to_string(path)
                .with_context(|| format!("reading the key set {}", path.display()))?;
            codec.with_provider_keys(ProviderKeys::new(
                KeyRing::from_jwks(&json)
                    .with_context(|| format!("the key set {}", path.display()))?,
            ))
        }
        (None, None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the public key {}", path.display()))?;
            codec.with_provider_keys(ProviderKeys::new(
                KeyRing::from_pem(&pem)
                    .with_context(|| format!("the public key {}", path.display()))?,
            ))
        }
        (None, None, None) => codec,
    };
    Ok((
        codec.requiring(settings.jwt_issuer.clone(), settings.jwt_audience.clone()),
        key_set,
    ))
}

/// The Redis the settings name: one URL, a cluster's nodes, or none (the
/// embedded shape).
fn redis_target(settings: &Settings) -> anyhow::Result<Option<RedisTarget>> {
    match (&settings.redis_url, settings.redis_cluster_nodes.as_slice()) {
        (Some(_), [_, ..]) => {
            anyhow::bail!("give either --redis-url or --redis-cluster-nodes, not both")
        }
        (Some(url), []) => RedisTarget::single(url).map(Some),
        (None, []) => Ok(None),
        (None, nodes) => RedisTarget::cluster(nodes).map(Some),
    }
}

/// How long an empty waiting room stays listed.
fn idle_rooms(settings: &Settings) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(settings.queue_idle_room_seconds).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_redis_or_a_cluster_or_none_never_both() {
        let mut settings = Settings::defaults();
        assert!(redis_target(&settings).unwrap().is_none(), "embedded shape");
        settings.redis_url = Some("redis://127.0.0.1:6379/".into());
        assert!(!redis_target(&settings).unwrap().unwrap().is_cluster());
        settings.redis_cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
        assert!(redis_target(&settings).is_err(), "both given");
        settings.redis_url = None;
        assert!(redis_target(&settings).unwrap().unwrap().is_cluster());
    }
}
