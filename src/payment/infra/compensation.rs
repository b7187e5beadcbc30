//! Runs compensation steps that are due, retrying with exponential backoff;
//! a step that keeps failing is marked `failed` and raises an alert until
//! an admin retries it.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use tokio_util::sync::CancellationToken;

use super::db::{compensation, payment};
use crate::{
    kernel::{
        Points, UserId,
        alerts::{AlertSink, NewAlert, Severity},
        events::{NewEvent, PaymentRefunded, RelayWake, types},
    },
    outbox::infra::{db::append_events, relay::sleep_or_cancel},
    payment::domain::{MAX_COMPENSATION_ATTEMPTS, retry_delay},
    wallet::{domain::EntryKind, infra::db::credit},
};

pub struct CompensationRunner<W> {
    db: DatabaseConnection,
    alerts: Arc<dyn AlertSink>,
    wake: W,
    every: Duration,
    retry_base: Duration,
}

impl<W: RelayWake> CompensationRunner<W> {
    pub fn new(
        db: DatabaseConnection,
        alerts: Arc<dyn AlertSink>,
        wake: W,
        every: Duration,
        retry_base: Duration,
    ) -> Self {
        Self {
            db,
            alerts,
            wake,
            every,
            retry_base,
        }
    }

    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(err) = self.run_due().await {
                tracing::warn!(error = %err, "compensations: pass failed; retrying");
            }
            if sleep_or_cancel(&cancel, self.every).await {
                return;
            }
        }
    }

    /// Attempts every due compensation once.
    pub async fn run_due(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let due: Vec<i64> = compensation::Entity::find()
            .select_only()
            .column(compensation::Column::Id)
            .filter(compensation::Column::Status.eq("pending"))
            .filter(compensation::Column::NextAttemptAt.lte(now))
            .order_by_asc(compensation::Column::NextAttemptAt)
            .limit(50)
            .into_tuple()
            .all(&self.db)
            .await?;
        for id in due {
            match self.attempt(id).await {
                Ok(Some(refund)) => {
                    self.wake.wake();
                    metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
                    self.alerts
                        .raise(NewAlert {
                            severity: Severity::Warning,
                            source: "saga:payment".into(),
                            message: format!(
                                "payment {} was refunded ({} points to user {}): its seat could not be confirmed",
                                refund.payment_id, refund.amount, refund.user_id
                            ),
                        })
                        .await;
                }
                Ok(None) => {}
                Err(err) => self.failed_attempt(id, &format!("{err:#}")).await?,
            }
        }
        Ok(())
    }

    /// One attempt of the refund step, in one transaction. `None` when
    /// another instance got to it first.
    async fn attempt(&self, id: i64) -> anyhow::Result<Option<PaymentRefunded>> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        // Claims (and on PostgreSQL locks) the row; a second runner waits,
        // then finds it no longer pending.
        let claimed = compensation::Entity::update_many()
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq("pending"))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(None);
        }
        let row = compensation::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .context("compensation vanished")?;
        let paid = payment::Entity::find_by_id(row.payment_id)
            .one(&txn)
            .await?
            .context("unknown payment")?;
        let refund = PaymentRefunded {
            payment_id: paid.id,
            reservation_id: paid.reservation_id,
            user_id: paid.user_id,
            amount: paid.amount,
        };
        let refunded = payment::Entity::update_many()
            .col_expr(payment::Column::Status, Expr::value("refunded"))
            .col_expr(payment::Column::UpdatedAt, Expr::value(now))
            .filter(payment::Column::Id.eq(paid.id))
            .filter(payment::Column::Status.eq("paid"))
            .exec(&txn)
            .await?;
        if refunded.rows_affected == 1 {
            let amount = Points::new(paid.amount)?;
            credit(
                &txn,
                UserId(paid.user_id),
                amount,
                EntryKind::Refund,
                Some(paid.id),
                now,
            )
            .await?
            .context("the refund would take the wallet past its cap")?;
            let event = NewEvent::new(types::PAYMENT_REFUNDED, "payment", paid.id, &refund);
            append_events(&txn, vec![event], now).await?;
        }
        compensation::Entity::update_many()
            .col_expr(compensation::Column::Status, Expr::value("succeeded"))
            .col_expr(
                compensation::Column::Attempts,
                Expr::col(compensation::Column::Attempts).add(1),
            )
            .col_expr(
                compensation::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .filter(compensation::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        fail::fail_point!("compensation::refund", |_| Err(anyhow::anyhow!(
            "failpoint compensation::refund"
        )));
        txn.commit().await?;
        Ok(Some(refund))
    }

    async fn failed_attempt(&self, id: i64, error: &str) -> anyhow::Result<()> {
        let now = Utc::now();
        let Some(row) = compensation::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(());
        };
        let attempts = row.attempts + 1;
        let gave_up = attempts >= MAX_COMPENSATION_ATTEMPTS;
        compensation::Entity::update_many()
            .col_expr(compensation::Column::Attempts, Expr::value(attempts))
            .col_expr(
                compensation::Column::LastError,
                Expr::value(error.chars().take(2000).collect::<String>()),
            )
            .col_expr(
                compensation::Column::Status,
                Expr::value(if gave_up { "failed" } else { "pending" }),
            )
            .col_expr(
                compensation::Column::NextAttemptAt,
                Expr::value(now + TimeDelta::from_std(retry_delay(self.retry_base, attempts))?),
            )
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq("pending"))
            .exec(&self.db)
            .await?;
        metrics::counter!("compensations_total", "outcome" => if gave_up { "failed" } else { "retrying" }).increment(1);
        tracing::warn!(
            compensation = id,
            attempts,
            error,
            "compensation step failed"
        );
        if gave_up {
            self.alerts
                .raise(NewAlert {
                    severity: Severity::Critical,
                    source: "saga:payment".into(),
                    message: format!(
                        "compensation {id} ({} {} for payment {}) failed {attempts} times and stopped; last error: {error}. \
                         Fix the cause, then retry it (POST /v1/admin/compensations/{id}/retry).",
                        row.saga, row.step, row.payment_id
                    ),
                })
                .await;
        }
        Ok(())
    }
}
