//! User notifications: one row per event a user cares about, read by
//! polling (mobile clients drop connections, so no push).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::{
    db::{DbTx, insert_new},
    kernel::{PageRequest, StoreError, UserId},
    listeners::{
        domain::{NewNotification, Notification},
        ports::{NotificationRepository, NotificationTx},
    },
};

pub mod notification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub kind: String,
        pub message: String,
        #[sea_orm(unique)]
        pub event_id: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl NotificationTx for DbTx {
    async fn record_notification(
        &mut self,
        new: NewNotification,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = notification::ActiveModel {
            user_id: Set(new.user.value()),
            kind: Set(new.kind.into()),
            message: Set(new.message),
            event_id: Set(new.event_id),
            created_at: Set(now),
            ..Default::default()
        };
        insert_new(row, [notification::Column::EventId], self.conn()).await?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct DbNotifications {
    db: DatabaseConnection,
}

impl DbNotifications {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl NotificationRepository for DbNotifications {
    async fn list(&self, user: UserId, page: PageRequest) -> Result<Vec<Notification>, StoreError> {
        let mut query =
            notification::Entity::find().filter(notification::Column::UserId.eq(user.value()));
        if let Some(after) = page.after {
            query = query.filter(notification::Column::Id.gt(after));
        }
        Ok(query
            .order_by_asc(notification::Column::Id)
            .limit(page.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| Notification {
                id: row.id,
                kind: row.kind,
                message: row.message,
                created_at: row.created_at,
            })
            .collect())
    }
}

/// Notifications past their retention.
pub fn expiring_notifications(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "notifications",
        "notifications",
        "created_at < {before}",
    )
}
