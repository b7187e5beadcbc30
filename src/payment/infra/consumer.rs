//! The payment side of the saga: a confirmed reservation confirms the
//! payment; a failed confirmation schedules the refund compensation.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, OnConflict},
};

use super::db::{compensation, payment};
use crate::{
    kernel::events::{EventEnvelope, ReservationChanged, types},
    outbox::infra::consumer::EventHandler,
};

pub const REFUND_SAGA: &str = "payment";
pub const REFUND_STEP: &str = "refund";

pub struct PaymentSaga;

impl EventHandler for PaymentSaga {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::RESERVATION_CONFIRMED
            || event_type == types::RESERVATION_CONFIRMATION_FAILED
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let changed: ReservationChanged = serde_json::from_value(event.payload.clone())?;
            let payment_id = changed
                .payment_id
                .ok_or_else(|| anyhow::anyhow!("{} without a payment id", event.event_type))?;
            let now = Utc::now();
            if event.event_type == types::RESERVATION_CONFIRMED {
                payment::Entity::update_many()
                    .col_expr(payment::Column::Status, Expr::value("confirmed"))
                    .col_expr(payment::Column::UpdatedAt, Expr::value(now))
                    .filter(payment::Column::Id.eq(payment_id))
                    .filter(payment::Column::Status.eq("paid"))
                    .exec(txn)
                    .await?;
            } else {
                compensation::Entity::insert(compensation::ActiveModel {
                    saga: Set(REFUND_SAGA.into()),
                    step: Set(REFUND_STEP.into()),
                    payment_id: Set(payment_id),
                    status: Set("pending".into()),
                    attempts: Set(0),
                    last_error: Set(None),
                    next_attempt_at: Set(now),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                })
                .on_conflict(
                    OnConflict::columns([
                        compensation::Column::Saga,
                        compensation::Column::Step,
                        compensation::Column::PaymentId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            }
            Ok(())
        }
        .boxed()
    }
}
