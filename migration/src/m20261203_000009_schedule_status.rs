use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Status,
    StatusChangedAt,
}

/// A schedule is `on_sale` until an admin cancels it (`cancelling`, then
/// `cancelled`); a hold is taken only on a schedule on sale. The status is
/// checked by the code (SQLite cannot add a CHECK to an existing table).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Schedules::Table)
                    .add_column(
                        ColumnDef::new(Schedules::Status)
                            .string_len(16)
                            .not_null()
                            .default("on_sale"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Schedules::Table)
                    .add_column(
                        ColumnDef::new(Schedules::StatusChangedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_schedules_status")
                    .table(Schedules::Table)
                    .col(Schedules::Status)
                    .to_owned(),
            )
            .await?;
        // A cancellation walks a schedule's reservations (payments.reservation_id
        // is unique, so indexed already).
        manager
            .create_index(
                Index::create()
                    .name("ix_reservations_schedule_id")
                    .table(Alias::new("reservations"))
                    .col(Alias::new("schedule_id"))
                    .col(Alias::new("status"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [("ix_reservations_schedule_id", "reservations")] {
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
        manager
            .drop_index(
                Index::drop()
                    .name("ix_schedules_status")
                    .table(Schedules::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Schedules::StatusChangedAt, Schedules::Status] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Schedules::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
