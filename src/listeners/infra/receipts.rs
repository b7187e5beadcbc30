use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{DbTx, compare_and_set, insert_new},
    kernel::{StoreError, events::PaymentCompleted},
    listeners::{
        domain::Receipt,
        ports::{ReceiptProvider, ReceiptTx},
    },
};

pub mod receipt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "receipts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub number: String,
        #[sea_orm(unique)]
        pub payment_id: i64,
        pub user_id: i64,
        pub amount: i64,
        pub event_id: Uuid,
        pub created_at: DateTimeUtc,
        /// When the receipt was voided (its payment was refunded).
        pub cancelled_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Numbers receipts itself: `R-<payment id, 12 digits>`, stable per payment.
#[derive(Clone, Default)]
pub struct LocalReceiptProvider;

impl ReceiptProvider for LocalReceiptProvider {
    async fn issue(&self, payment: &PaymentCompleted) -> anyhow::Result<String> {
        Ok(format!("R-{:012}", payment.payment_id))
    }

    async fn cancel(&self, _number: &str) -> anyhow::Result<()> {
        // Nothing outside this database to tell.
        Ok(())
    }
}

/// Stores the receipt in the consumer's transaction; a second receipt for
/// the same payment is ignored (the unique payment id is the last guard).
async fn store_receipt<C: ConnectionTrait>(
    txn: &C,
    receipt: &Receipt,
    event_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = receipt::ActiveModel {
        number: Set(receipt.number.clone()),
        payment_id: Set(receipt.payment_id),
        user_id: Set(receipt.user_id),
        amount: Set(receipt.amount),
        event_id: Set(event_id),
        created_at: Set(now),
        ..Default::default()
    };
    insert_new(row, [receipt::Column::PaymentId], txn).await
}

impl ReceiptTx for DbTx {
    async fn store_receipt(
        &mut self,
        receipt: &Receipt,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(store_receipt(self.conn(), receipt, event_id, now).await?)
    }

    async fn receipt_of(&mut self, payment_id: i64) -> Result<Option<(Receipt, bool)>, StoreError> {
        Ok(receipt::Entity::find()
            .filter(receipt::Column::PaymentId.eq(payment_id))
            .one(self.conn())
            .await?
            .map(|r| {
                (
                    Receipt {
                        number: r.number,
                        payment_id: r.payment_id,
                        user_id: r.user_id,
                        amount: r.amount,
                    },
                    r.cancelled_at.is_some(),
                )
            }))
    }

    async fn mark_receipt_cancelled(
        &mut self,
        payment_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mark = receipt::Entity::update_many()
            .col_expr(receipt::Column::CancelledAt, Expr::value(now))
            .filter(receipt::Column::PaymentId.eq(payment_id))
            .filter(receipt::Column::CancelledAt.is_null());
        Ok(compare_and_set(mark, self.conn()).await?)
    }
}
