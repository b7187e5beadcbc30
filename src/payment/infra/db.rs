//! Payments and compensations in the database: the reads and admin
//! changes, and the transaction-scoped repository the pay transaction and
//! the saga write through.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, ExprTrait, Query, SelectStatement},
};

use crate::kernel::Fault;
use crate::{
    catalog::ports::ScheduleReads,
    db::{DbTx, Paged, all_as, compare_and_set, ids_of, insert_new, one_as},
    kernel::{
        ConcertId, OrderId, PageRequest, PaymentId, Points, ReservationId, ScheduleId, StoreError,
        Transaction, UserId, events::NewEvent,
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            AfterFailure, CancellationProgress, Compensation, CompensationStatus, DueCompensation,
            NewPayment, Payment, PaymentError, PaymentStatus,
        },
        ports::{PaymentRepository, PaymentTx},
    },
    reservation::domain::ReservationError,
};

pub mod payment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub reservation_id: i64,
        pub concert_id: i64,
        pub amount: i64,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// Null only for rows older than the column that had no reservation.
        pub schedule_id: Option<i64>,
        pub order_id: Option<i64>,
        /// Given back so far seat by seat.
        pub refunded_amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod compensation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "compensations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub saga: String,
        pub step: String,
        pub payment_id: i64,
        pub status: String,
        pub attempts: i32,
        pub last_error: Option<String>,
        pub next_attempt_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub traceparent: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(PaymentError);

fn to_payment(row: payment::Model) -> anyhow::Result<Payment> {
    Ok(Payment {
        id: PaymentId(row.id),
        user: UserId(row.user_id),
        reservation: ReservationId(row.reservation_id),
        order: row.order_id.map(OrderId),
        concert: ConcertId(row.concert_id),
        amount: Points::new(row.amount).map_err(|e| anyhow!("payment {}: {e}", row.id))?,
        status: PaymentStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("payment {} has status {:?}", row.id, row.status))?,
        refunded: Points::new(row.refunded_amount)
            .map_err(|e| anyhow!("payment {}: {e}", row.id))?,
    })
}

fn to_compensation(row: compensation::Model) -> anyhow::Result<Compensation> {
    Ok(Compensation {
        status: CompensationStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("compensation {} has status {:?}", row.id, row.status))?,
        id: row.id,
        saga: row.saga,
        step: row.step,
        payment: PaymentId(row.payment_id),
        attempts: row.attempts,
        last_error: row.last_error,
        next_attempt_at: row.next_attempt_at,
        traceparent: row.traceparent,
    })
}

fn pending() -> &'static str {
    CompensationStatus::Pending.as_str()
}

/// `SELECT id FROM payments WHERE schedule_id = ?`
fn payments_of(schedule: ScheduleId) -> SelectStatement {
    Query::select()
        .column(payment::Column::Id)
        .from(payment::Entity)
        .and_where(payment::Column::ScheduleId.eq(schedule.value()))
        .to_owned()
}

/// Payments and compensations in the database. What a cancellation needs
/// of schedules is read through the catalog's ports, never its tables.
#[derive(Clone)]
pub struct DbPayments<S> {
    db: DatabaseConnection,
    schedules: S,
}

impl<S> DbPayments<S> {
    pub fn new(db: DatabaseConnection, schedules: S) -> Self {
        Self { db, schedules }
    }
}

impl From<ReservationError> for PaymentError {
    fn from(err: ReservationError) -> Self {
        match err {
            ReservationError::Fault(Fault::Unavailable(cause)) => {
                PaymentError::Fault(Fault::Unavailable(cause))
            }
            ReservationError::Fault(Fault::Conflict(cause)) => {
                PaymentError::Fault(Fault::Conflict(cause))
            }
            other => PaymentError::Fault(Fault::Unexpected(other.into())),
        }
    }
}

impl<S: ScheduleReads> PaymentRepository for DbPayments<S> {
    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        Ok(one_as(
            payment::Entity::find_by_id(id.value()),
            &self.db,
            to_payment,
        )
        .await?)
    }

    async fn of_user(&self, user: UserId, page: PageRequest) -> Result<Vec<Payment>, PaymentError> {
        let query = payment::Entity::find()
            .filter(payment::Column::UserId.eq(user.value()))
            .newest_first(payment::Column::Id, page);
        Ok(all_as(query, &self.db, to_payment).await?)
    }

    async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        page: PageRequest,
    ) -> Result<Vec<Compensation>, PaymentError> {
        let mut query = compensation::Entity::find();
        if let Some(status) = status {
            query = query.filter(compensation::Column::Status.eq(status.as_str()));
        }
        let query = query.newest_first(compensation::Column::Id, page);
        Ok(all_as(query, &self.db, to_compensation).await?)
    }

    async fn cancelling_schedules(
        &self,
        max: u64,
    ) -> Result<Vec<(ScheduleId, DateTime<Utc>)>, PaymentError> {
        Ok(self.schedules.cancelling_schedules(max).await?)
    }

    async fn tickets_to_refund(
        &self,
        schedule: ScheduleId,
        saga: &str,
        max: u64,
    ) -> Result<Vec<PaymentId>, PaymentError> {
        let scheduled = Query::select()
            .column(compensation::Column::PaymentId)
            .from(compensation::Entity)
            .and_where(compensation::Column::Saga.eq(saga))
            .to_owned();
        let query = payment::Entity::find()
            .filter(payment::Column::Status.eq(PaymentStatus::Confirmed.as_str()))
            .filter(payment::Column::ScheduleId.eq(schedule.value()))
            .filter(payment::Column::Id.not_in_subquery(scheduled))
            .order_by_asc(payment::Column::Id)
            .limit(max);
        Ok(ids_of(query, payment::Column::Id, &self.db, PaymentId).await?)
    }

    async fn unsettled(&self, schedule: ScheduleId, saga: &str) -> Result<u64, PaymentError> {
        let paid = payment::Entity::find()
            .filter(payment::Column::Status.eq(PaymentStatus::Paid.as_str()))
            .filter(payment::Column::ScheduleId.eq(schedule.value()))
            .count(&self.db)
            .await?;
        let refunding = compensation::Entity::find()
            .filter(compensation::Column::Saga.eq(saga))
            .filter(compensation::Column::Status.ne(CompensationStatus::Succeeded.as_str()))
            .filter(compensation::Column::PaymentId.in_subquery(payments_of(schedule)))
            .count(&self.db)
            .await?;
        Ok(paid + refunding)
    }

    async fn schedule_ids(&self, page: PageRequest) -> Result<Vec<ScheduleId>, PaymentError> {
        Ok(self.schedules.schedule_ids(page).await?)
    }

    async fn cancellation_progress(
        &self,
        schedule: ScheduleId,
        saga: &str,
    ) -> Result<Option<CancellationProgress>, PaymentError> {
        let Some(sale) = self.schedules.sale(schedule).await? else {
            return Ok(None);
        };
        let by_status: Vec<(String, i64)> = compensation::Entity::find()
            .select_only()
            .column(compensation::Column::Status)
            .column_as(compensation::Column::Id.count(), "n")
            .filter(compensation::Column::Saga.eq(saga))
            .filter(compensation::Column::PaymentId.in_subquery(payments_of(schedule)))
            .group_by(compensation::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let count_of = |wanted: CompensationStatus| {
            by_status
                .iter()
                .filter(|(s, _)| s == wanted.as_str())
                .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
                .sum::<u64>()
        };
        let failed = count_of(CompensationStatus::Failed);
        Ok(Some(CancellationProgress {
            schedule,
            status: sale.status,
            seats: sale.seats,
            sold: sale.sold,
            refunds_pending: count_of(CompensationStatus::Pending) + failed,
            refunds_failed: failed,
            refunds_done: count_of(CompensationStatus::Succeeded),
        }))
    }

    async fn compensation(&self, id: i64) -> Result<Option<Compensation>, PaymentError> {
        Ok(one_as(
            compensation::Entity::find_by_id(id),
            &self.db,
            to_compensation,
        )
        .await?)
    }

    async fn due_compensations(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<DueCompensation>, PaymentError> {
        let due: Vec<(i64, Option<String>)> = compensation::Entity::find()
            .select_only()
            .column(compensation::Column::Id)
            .column(compensation::Column::Traceparent)
            .filter(compensation::Column::Status.eq(pending()))
            .filter(compensation::Column::NextAttemptAt.lte(now))
            .order_by_asc(compensation::Column::NextAttemptAt)
            .limit(max)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(due
            .into_iter()
            .map(|(id, traceparent)| DueCompensation { id, traceparent })
            .collect())
    }

    async fn record_failure(
        &self,
        failure: &AfterFailure,
        event: NewEvent,
    ) -> Result<bool, PaymentError> {
        let (id, now) = (failure.step, failure.failed_at);
        let mut tx = DbTx::new(self.db.begin().await?);
        let recorded = compensation::Entity::update_many()
            .col_expr(
                compensation::Column::Attempts,
                Expr::value(failure.attempts),
            )
            .col_expr(
                compensation::Column::LastError,
                Expr::value(failure.last_error.clone()),
            )
            .col_expr(
                compensation::Column::Status,
                Expr::value(failure.status.as_str()),
            )
            .col_expr(
                compensation::Column::NextAttemptAt,
                Expr::value(failure.next_attempt_at),
            )
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq(pending()))
            .exec(tx.conn())
            .await?;
        if recorded.rows_affected != 1 {
            return Ok(false);
        }
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl PaymentTx for DbTx {
    async fn reopen_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let reset = compensation::Entity::update_many()
            .col_expr(compensation::Column::Status, Expr::value(pending()))
            .col_expr(compensation::Column::Attempts, Expr::value(0))
            .col_expr(compensation::Column::NextAttemptAt, Expr::value(now))
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq(CompensationStatus::Failed.as_str()));
        Ok(compare_and_set(reset, self.conn()).await?)
    }

    async fn insert_payment(
        &mut self,
        new: &NewPayment,
        now: DateTime<Utc>,
    ) -> Result<Payment, StoreError> {
        let row = payment::ActiveModel {
            user_id: Set(new.user.value()),
            reservation_id: Set(new.reservation.value()),
            concert_id: Set(new.concert.value()),
            schedule_id: Set(Some(new.schedule.value())),
            order_id: Set(new.order.map(OrderId::value)),
            amount: Set(new.amount.value()),
            refunded_amount: Set(0),
            status: Set(PaymentStatus::Paid.as_str().into()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(self.conn())
        .await?;
        to_payment(row).map_err(StoreError::Unexpected)
    }

    async fn payment(&mut self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        one_as(
            payment::Entity::find_by_id(id.value()),
            self.conn(),
            to_payment,
        )
        .await
    }

    async fn set_payment_status(
        &mut self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let change = payment::Entity::update_many()
            .col_expr(payment::Column::Status, Expr::value(to.as_str()))
            .col_expr(payment::Column::UpdatedAt, Expr::value(now))
            .filter(payment::Column::Id.eq(id.value()))
            .filter(payment::Column::Status.eq(from.as_str()));
        Ok(compare_and_set(change, self.conn()).await?)
    }

    async fn record_refund(
        &mut self,
        seen: &Payment,
        refunded: Points,
        status: PaymentStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let change = payment::Entity::update_many()
            .col_expr(payment::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                payment::Column::RefundedAmount,
                Expr::value(refunded.value()),
            )
            .col_expr(payment::Column::UpdatedAt, Expr::value(now))
            .filter(payment::Column::Id.eq(seen.id.value()))
            .filter(payment::Column::Status.eq(seen.status.as_str()))
            .filter(payment::Column::RefundedAmount.eq(seen.refunded.value()));
        Ok(compare_and_set(change, self.conn()).await?)
    }

    async fn schedule_compensation(
        &mut self,
        saga: &str,
        step: &str,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = compensation::ActiveModel {
            saga: Set(saga.into()),
            step: Set(step.into()),
            payment_id: Set(payment.value()),
            status: Set(pending().into()),
            attempts: Set(0),
            last_error: Set(None),
            next_attempt_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
            traceparent: Set(crate::kernel::trace::current_traceparent()),
            ..Default::default()
        };
        let unique = [
            compensation::Column::Saga,
            compensation::Column::Step,
            compensation::Column::PaymentId,
        ];
        Ok(insert_new(row, unique, self.conn()).await?)
    }

    async fn claim_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Compensation>, StoreError> {
        // Claims (and on PostgreSQL locks) the row; a second runner waits,
        // then finds it no longer pending.
        let claimed = compensation::Entity::update_many()
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq(pending()))
            .exec(self.conn())
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(None);
        }
        one_as(
            compensation::Entity::find_by_id(id),
            self.conn(),
            to_compensation,
        )
        .await
    }

    async fn complete_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        compensation::Entity::update_many()
            .col_expr(
                compensation::Column::Status,
                Expr::value(CompensationStatus::Succeeded.as_str()),
            )
            .col_expr(
                compensation::Column::Attempts,
                Expr::col(compensation::Column::Attempts).add(1),
            )
            .col_expr(
                compensation::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}

/// Payments the saga has neither confirmed nor refunded.
pub fn stalled_payments(db: DatabaseConnection) -> crate::db::DbStalled {
    crate::db::DbStalled::new(
        db,
        "watchdog:payments-paid",
        ("payments", "status = 'paid'", "updated_at"),
        crate::kernel::alerts::Severity::Critical,
        "payment(s) left paid, neither confirmed nor refunded,",
    )
}

/// Compensation steps not done: still retrying, or given up.
pub fn stalled_compensations(db: DatabaseConnection) -> crate::db::DbStalled {
    crate::db::DbStalled::new(
        db,
        "watchdog:compensations-open",
        (
            "compensations",
            "status IN ('pending', 'failed')",
            "created_at",
        ),
        crate::kernel::alerts::Severity::Critical,
        "compensation(s) left open",
    )
}
