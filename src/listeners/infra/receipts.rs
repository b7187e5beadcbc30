use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set, sea_query::OnConflict};
use uuid::Uuid;

use crate::{
    db::DbTx,
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
}

/// Stores the receipt in the consumer's transaction; a second receipt for
/// the same payment is ignored (the unique payment id is the last guard).
async fn store_receipt<C: ConnectionTrait>(
    txn: &C,
    receipt: &Receipt,
    event_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let inserted = receipt::Entity::insert(receipt::ActiveModel {
        number: Set(receipt.number.clone()),
        payment_id: Set(receipt.payment_id),
        user_id: Set(receipt.user_id),
        amount: Set(receipt.amount),
        event_id: Set(event_id),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::column(receipt::Column::PaymentId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(inserted > 0)
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
}
