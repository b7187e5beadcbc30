//! Payments in the database. `pay` is the one transaction of the saga's
//! first step; it uses the reservation and wallet modules' own statements.

use anyhow::anyhow;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait, sea_query::Expr,
};

use crate::{
    catalog::infra::db::seats,
    kernel::{
        PaymentId, Points, ReservationId, ScheduleId, UserId,
        events::{NewEvent, PaymentCompleted, types},
    },
    outbox::infra::db::append_events,
    payment::{
        domain::{
            CONFIRMATION_GRACE_MINUTES, Compensation, CompensationStatus, Payment, PaymentError,
            PaymentStatus,
        },
        ports::PaymentRepository,
    },
    reservation::infra::db::{NotPayable, claim_for_payment, mark_paid, reservation},
    wallet::infra::db::debit_for_payment,
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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(PaymentError);

pub fn to_payment(row: payment::Model) -> Result<Payment, PaymentError> {
    Ok(Payment {
        id: PaymentId(row.id),
        user: UserId(row.user_id),
        reservation: ReservationId(row.reservation_id),
        amount: Points::new(row.amount).map_err(|e| anyhow!("payment {}: {e}", row.id))?,
        status: PaymentStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("payment {} has status {:?}", row.id, row.status))?,
    })
}

pub fn to_compensation(row: compensation::Model) -> Result<Compensation, PaymentError> {
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
    })
}

#[derive(Clone)]
pub struct DbPayments {
    db: DatabaseConnection,
}

impl DbPayments {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl PaymentRepository for DbPayments {
    async fn pay(
        &self,
        user: UserId,
        reservation_id: ReservationId,
        now: DateTime<Utc>,
    ) -> Result<Payment, PaymentError> {
        let txn = self.db.begin().await?;
        let hold = match claim_for_payment(&txn, reservation_id, user, now).await? {
            Ok(hold) => hold,
            Err(NotPayable::NotFound) => {
                return Err(PaymentError::ReservationNotFound(reservation_id));
            }
            Err(NotPayable::Expired) => return Err(PaymentError::HoldExpired(reservation_id)),
            Err(NotPayable::AlreadyPaid) => return Err(PaymentError::AlreadyPaid(reservation_id)),
        };
        let row = payment::ActiveModel {
            user_id: Set(user.value()),
            reservation_id: Set(reservation_id.value()),
            concert_id: Set(hold.concert.value()),
            amount: Set(hold.price.value()),
            status: Set("paid".into()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        if debit_for_payment(&txn, user, hold.price, row.id, now)
            .await?
            .is_none()
        {
            // Dropping the transaction undoes the claim and the payment row.
            return Err(PaymentError::InsufficientPoints);
        }
        mark_paid(&txn, reservation_id, row.id).await?;
        // The seat stays held while the confirmation travels the event bus.
        seats::extend(
            &txn,
            hold.seat,
            reservation_id.value(),
            now + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES),
        )
        .await?;
        let event = NewEvent::new(
            types::PAYMENT_COMPLETED,
            "payment",
            row.id,
            &PaymentCompleted {
                payment_id: row.id,
                reservation_id: reservation_id.value(),
                user_id: user.value(),
                amount: hold.price.value(),
                concert_id: hold.concert.value(),
            },
        );
        append_events(&txn, vec![event], now).await?;
        fail::fail_point!("payment::before_commit", |_| Err(
            PaymentError::Unavailable(anyhow::anyhow!("failpoint payment::before_commit"))
        ));
        txn.commit().await?;
        to_payment(row)
    }

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        payment::Entity::find_by_id(id.value())
            .one(&self.db)
            .await?
            .map(to_payment)
            .transpose()
    }

    async fn schedule_of(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<Option<ScheduleId>, PaymentError> {
        Ok(reservation::Entity::find_by_id(id.value())
            .one(&self.db)
            .await?
            .filter(|r| r.user_id == user.value())
            .map(|r| ScheduleId(r.schedule_id)))
    }

    async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        limit: u64,
    ) -> Result<Vec<Compensation>, PaymentError> {
        let mut query = compensation::Entity::find();
        if let Some(status) = status {
            query = query.filter(compensation::Column::Status.eq(status.as_str()));
        }
        query
            .order_by_desc(compensation::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_compensation)
            .collect()
    }

    async fn retry_compensation(&self, id: i64, now: DateTime<Utc>) -> Result<(), PaymentError> {
        let reset = compensation::Entity::update_many()
            .col_expr(compensation::Column::Status, Expr::value("pending"))
            .col_expr(compensation::Column::Attempts, Expr::value(0))
            .col_expr(compensation::Column::NextAttemptAt, Expr::value(now))
            .col_expr(compensation::Column::UpdatedAt, Expr::value(now))
            .filter(compensation::Column::Id.eq(id))
            .filter(compensation::Column::Status.eq("failed"))
            .exec(&self.db)
            .await?;
        if reset.rows_affected == 1 {
            return Ok(());
        }
        match compensation::Entity::find_by_id(id).one(&self.db).await? {
            Some(_) => Err(PaymentError::CompensationNotFailed(id)),
            None => Err(PaymentError::CompensationNotFound(id)),
        }
    }
}
