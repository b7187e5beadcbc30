use sea_orm_migration::prelude::*;

use crate::{add_columns, drop_columns};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tickets {
    Table,
    CheckedInAt,
    CheckedInGate,
}

/// The door: when and at which gate a ticket was first scanned. Both stay
/// empty until then; the one conditional update that sets them is what
/// admits a ticket once.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Tickets::CheckedInAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Tickets::CheckedInGate)
                .string_len(64)
                .null()
                .to_owned(),
        ];
        add_columns(manager, Tickets::Table.into_iden(), columns).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [Tickets::CheckedInAt, Tickets::CheckedInGate].map(IntoIden::into_iden);
        drop_columns(manager, Tickets::Table.into_iden(), columns).await
    }
}
