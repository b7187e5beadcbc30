use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Receipts {
    Table,
    CancelledAt,
}

/// (index, table): a buyer's own reservations and payments are read newest
/// first, a page after a cursor (`WHERE user_id = ? AND id < ? ORDER BY id
/// DESC`), from an index on (user_id, id).
const INDEXES: [(&str, &str); 2] = [
    ("ix_reservations_user_id_id", "reservations"),
    ("ix_payments_user_id_id", "payments"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in INDEXES {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Alias::new(table))
                        .col(Alias::new("user_id"))
                        .col(Alias::new("id"))
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        // A refunded payment's receipt is voided, not deleted.
        manager
            .alter_table(
                Table::alter()
                    .table(Receipts::Table)
                    .add_column(
                        ColumnDef::new(Receipts::CancelledAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Receipts::Table)
                    .drop_column(Receipts::CancelledAt)
                    .to_owned(),
            )
            .await?;
        for (name, table) in INDEXES {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
