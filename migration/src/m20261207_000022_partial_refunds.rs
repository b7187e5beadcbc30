use sea_orm_migration::prelude::*;

use crate::{add_columns, drop_columns};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Payments {
    Table,
    RefundedAmount,
}

/// Per-ticket cancellations: how much of a payment was given back so far,
/// seat by seat. A payment stays `confirmed` while some of its seats are
/// still sold and becomes `refunded` with its last one; a whole refund
/// gives back the rest (`amount - refunded_amount`).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [ColumnDef::new(Payments::RefundedAmount)
            .big_integer()
            .not_null()
            .default(0)
            .to_owned()];
        add_columns(manager, Payments::Table.into_iden(), columns).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [Payments::RefundedAmount].map(IntoIden::into_iden);
        drop_columns(manager, Payments::Table.into_iden(), columns).await
    }
}
