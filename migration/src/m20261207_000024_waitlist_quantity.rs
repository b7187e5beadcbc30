use sea_orm_migration::prelude::*;

use crate::{add_columns, drop_columns};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Waitlist {
    Table,
    Quantity,
}

/// A waitlist place waits for a number of seats (offered together as one
/// order); every place so far waited for one.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let column = ColumnDef::new(Waitlist::Quantity)
            .integer()
            .not_null()
            .default(1)
            .to_owned();
        add_columns(manager, Waitlist::Table.into_iden(), [column]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_columns(
            manager,
            Waitlist::Table.into_iden(),
            [Waitlist::Quantity.into_iden()],
        )
        .await
    }
}
