//! Per-concert settings in the database, behind a short in-process cache
//! (the status poll reads them on every call).

use std::time::Duration;

use chrono::Utc;
use sea_orm::{DatabaseConnection, EntityTrait, Set, TransactionTrait, sea_query::OnConflict};

use crate::{
    db::DbTx,
    kernel::{ConcertId, Transaction, cache::Cache, events::NewEvent},
    outbox::ports::OutboxWriter,
    queue::{
        domain::{QueueError, QueueSettings, QueueingMethod},
        ports::{QueueSettingsRepository, RoomSettings},
    },
};

pub mod queue_settings {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "queue_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub concert_id: i64,
        pub admit_per_second: i32,
        pub max_active: i32,
        pub active_ttl_seconds: i32,
        pub heartbeat_grace_seconds: i32,
        pub updated_at: DateTimeUtc,
        pub opens_at: Option<DateTimeUtc>,
        pub queueing_method: String,
        pub paused: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(QueueError);

#[derive(Clone)]
pub struct DbQueueSettings {
    db: DatabaseConnection,
}

impl DbQueueSettings {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl QueueSettingsRepository for DbQueueSettings {
    async fn get(&self, concert: ConcertId) -> Result<Option<QueueSettings>, QueueError> {
        let Some(row) = queue_settings::Entity::find_by_id(concert.value())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        QueueSettings::parse(
            row.admit_per_second.into(),
            row.max_active.into(),
            row.active_ttl_seconds.into(),
            row.heartbeat_grace_seconds.into(),
        )
        .map(|settings| {
            Some(
                settings.with_opening(
                    row.opens_at,
                    // Written by `put` only; an unknown word reads as closed,
                    // the safe side.
                    row.queueing_method
                        .parse()
                        .unwrap_or(QueueingMethod::Closed),
                    row.paused,
                ),
            )
        })
    }

    async fn put(&self, room: &RoomSettings, event: NewEvent) -> Result<(), QueueError> {
        let RoomSettings { concert, settings } = room;
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let now = Utc::now();
        let mut tx = DbTx::new(self.db.begin().await?);
        queue_settings::Entity::insert(queue_settings::ActiveModel {
            concert_id: Set(concert.value()),
            admit_per_second: Set(int(settings.admit_per_second)),
            max_active: Set(int(settings.max_active)),
            active_ttl_seconds: Set(int(settings.active_ttl_seconds)),
            heartbeat_grace_seconds: Set(int(settings.heartbeat_grace_seconds)),
            updated_at: Set(now),
            opens_at: Set(settings.opens_at),
            queueing_method: Set(settings.method.to_string()),
            paused: Set(settings.paused),
        })
        .on_conflict(
            OnConflict::column(queue_settings::Column::ConcertId)
                .update_columns([
                    queue_settings::Column::AdmitPerSecond,
                    queue_settings::Column::MaxActive,
                    queue_settings::Column::ActiveTtlSeconds,
                    queue_settings::Column::HeartbeatGraceSeconds,
                    queue_settings::Column::UpdatedAt,
                    queue_settings::Column::OpensAt,
                    queue_settings::Column::QueueingMethod,
                    queue_settings::Column::Paused,
                ])
                .to_owned(),
        )
        .exec_without_returning(tx.conn())
        .await?;
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How many concerts' settings one process keeps.
const SETTINGS_KEPT: u64 = 100_000;

/// Remembers settings for `ttl`; a change made through this instance is
/// seen at once, one made through another instance within `ttl`.
#[derive(Clone)]
pub struct CachedSettings<R> {
    inner: R,
    cache: Cache<ConcertId, Option<QueueSettings>>,
}

impl<R> CachedSettings<R> {
    pub fn new(inner: R, ttl: Duration) -> Self {
        Self {
            inner,
            cache: Cache::new(SETTINGS_KEPT, ttl),
        }
    }
}

impl<R: QueueSettingsRepository> QueueSettingsRepository for CachedSettings<R> {
    async fn get(&self, concert: ConcertId) -> Result<Option<QueueSettings>, QueueError> {
        if let Some(settings) = self.cache.get(&concert) {
            return Ok(settings);
        }
        let settings = self.inner.get(concert).await?;
        self.cache.insert(concert, settings);
        Ok(settings)
    }

    async fn put(&self, room: &RoomSettings, event: NewEvent) -> Result<(), QueueError> {
        self.inner.put(room, event).await?;
        self.cache.insert(room.concert, Some(room.settings));
        Ok(())
    }
}
