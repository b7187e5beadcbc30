//! Which adapters serve the ports: SQLite or PostgreSQL behind sea-orm;
//! Redis or in-process for the waiting room, the coupon ledger and the
//! event bus. Nothing else in the crate picks one.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;

use crate::{
    auth::{infra::jwt::JwtCodec, ports::TokenCodec},
    config::Settings,
    coupon::infra::{AnyCouponLedger, memory::MemoryCouponLedger, redis::RedisCouponLedger},
    db::{self, DbUnitOfWork},
    outbox::infra::{AnyBus, memory::MemoryBus, redis::RedisBus, relay::RelayWaker},
    queue::infra::{AnyQueueStore, memory::MemoryQueueStore, redis::RedisQueueStore},
};

pub struct Adapters {
    pub db: DatabaseConnection,
    pub uow: DbUnitOfWork,
    pub redis: Option<ConnectionManager>,
    pub bus: AnyBus,
    /// The in-process bus reports outbox rows every consumer finished.
    pub finished: Option<mpsc::UnboundedReceiver<i64>>,
    pub queue_store: AnyQueueStore,
    pub coupon_ledger: AnyCouponLedger,
    pub waker: RelayWaker,
    pub codec: Arc<dyn TokenCodec>,
}

impl Adapters {
    /// Connects the stores the settings name and runs migrations.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let db = db::connect(&settings.database_url).await?;
        db::migrate(&db).await?;
        let redis = match &settings.redis_url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };
        let (bus, finished, queue_store, coupon_ledger) = match &redis {
            Some((client, conn)) => (
                AnyBus::Redis(RedisBus::new(
                    client.clone(),
                    conn.clone(),
                    &settings.event_stream,
                    settings.stream_max_len,
                )),
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
        Ok(Self {
            uow: DbUnitOfWork::new(db.clone()),
            db,
            redis: redis.map(|(_, conn)| conn),
            bus,
            finished,
            queue_store,
            coupon_ledger,
            waker: RelayWaker::default(),
            codec: Arc::new(JwtCodec::new(settings.jwt_secret.as_bytes())),
        })
    }

    /// Adapters that connect to nothing, for building the OpenAPI document
    /// from the same wiring as the server.
    pub fn offline() -> Self {
        let db = DatabaseConnection::default();
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
        }
    }
}

async fn connect_redis(url: &str) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client = redis::Client::open(url).with_context(|| format!("parsing Redis URL {url}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let conn = client
        .get_connection_manager_with_config(config)
        .await
        .context("connecting to Redis")?;
    Ok((client, conn))
}

/// How long an empty waiting room stays listed.
fn idle_rooms(settings: &Settings) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(settings.queue_idle_room_seconds).unwrap_or(i64::MAX))
}
