//! User notifications: one row per event a user cares about, read by
//! polling (mobile clients drop connections, so no push).

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, sea_query::OnConflict,
};

use crate::{
    kernel::{
        UserId,
        events::{
            CouponRedemptionFinished, EventEnvelope, PaymentRefunded, ReservationChanged, types,
        },
    },
    listeners::domain::{Notification, notification_for},
    outbox::infra::consumer::EventHandler,
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

pub struct Notifier;

impl EventHandler for Notifier {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            types::RESERVATION_CONFIRMED
                | types::RESERVATION_EXPIRED
                | types::PAYMENT_REFUNDED
                | types::COUPON_REDEMPTION_FINISHED
        )
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let user = if event.event_type == types::PAYMENT_REFUNDED {
                serde_json::from_value::<PaymentRefunded>(event.payload.clone())?.user_id
            } else if event.event_type == types::COUPON_REDEMPTION_FINISHED {
                serde_json::from_value::<CouponRedemptionFinished>(event.payload.clone())?.user_id
            } else {
                serde_json::from_value::<ReservationChanged>(event.payload.clone())?.user_id
            };
            let Some((kind, message)) = notification_for(&event.event_type, &event.payload) else {
                return Ok(());
            };
            notification::Entity::insert(notification::ActiveModel {
                user_id: Set(user),
                kind: Set(kind.into()),
                message: Set(message),
                event_id: Set(event.event_id),
                created_at: Set(Utc::now()),
                ..Default::default()
            })
            .on_conflict(
                OnConflict::column(notification::Column::EventId)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
            Ok(())
        }
        .boxed()
    }
}

/// The user's notifications after `after`, oldest first.
pub async fn list(
    db: &DatabaseConnection,
    user: UserId,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<Notification>, DbErr> {
    let mut query =
        notification::Entity::find().filter(notification::Column::UserId.eq(user.value()));
    if let Some(after) = after {
        query = query.filter(notification::Column::Id.gt(after));
    }
    Ok(query
        .order_by_asc(notification::Column::Id)
        .limit(limit)
        .all(db)
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
