//! The reservation side of the payment saga: on `PaymentCompleted`, sell
//! the held seat and confirm the reservation — or, if the hold was lost,
//! say so with `ReservationConfirmationFailed` so the payment is refunded.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{ActiveModelTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, Set};

use super::db::{event, reservation};
use crate::{
    catalog::infra::db::seats,
    kernel::{
        SeatId,
        events::{EventEnvelope, PaymentCompleted, types},
    },
    outbox::infra::{consumer::EventHandler, db::append_events},
};

pub struct ConfirmOnPayment;

impl EventHandler for ConfirmOnPayment {
    fn name(&self) -> &'static str {
        "reservations"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        envelope: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(envelope.payload.clone())?;
            let now = Utc::now();
            let Some(row) = reservation::Entity::find_by_id(payment.reservation_id)
                .one(txn)
                .await?
            else {
                anyhow::bail!(
                    "payment {} names unknown reservation {}",
                    payment.payment_id,
                    payment.reservation_id
                );
            };
            if row.status == "confirmed" && row.payment_id == Some(payment.payment_id) {
                return Ok(());
            }
            let ours = row.status == "held" && row.payment_id == Some(payment.payment_id);
            let sold = ours && seats::sell(txn, SeatId(row.seat_id), row.id).await?;
            let mut update = row.clone().into_active_model();
            update.updated_at = Set(now);
            let event_type = if sold {
                update.status = Set("confirmed".into());
                metrics::counter!("reservations_confirmed_total").increment(1);
                types::RESERVATION_CONFIRMED
            } else {
                if row.status == "held" {
                    update.status = Set("expired".into());
                }
                metrics::counter!("reservation_confirmations_failed_total").increment(1);
                types::RESERVATION_CONFIRMATION_FAILED
            };
            update.update(txn).await?;
            append_events(
                txn,
                vec![event(event_type, &row, Some(payment.payment_id))],
                now,
            )
            .await?;
            Ok(())
        }
        .boxed()
    }
}
