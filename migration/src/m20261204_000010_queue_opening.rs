use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum QueueSettings {
    Table,
    OpensAt,
    QueueingMethod,
    Paused,
}

/// A waiting room's opening rules: `opens_at` (the pre-queue before it),
/// `queueing_method` (`fifo`, `random` or `closed`, checked by the code)
/// and `paused`. Rows written before keep the old behaviour.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER.
        for column in [
            ColumnDef::new(QueueSettings::OpensAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(QueueSettings::QueueingMethod)
                .string_len(16)
                .not_null()
                .default("fifo")
                .to_owned(),
            ColumnDef::new(QueueSettings::Paused)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(QueueSettings::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            QueueSettings::Paused,
            QueueSettings::QueueingMethod,
            QueueSettings::OpensAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(QueueSettings::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
