use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Waitlist {
    Table,
    Id,
    ScheduleId,
    UserId,
    Status,
    QueuedAt,
    ReservationId,
    UpdatedAt,
}

/// A schedule's waitlist: one row per (schedule, user), `waiting` in
/// `queued_at` order until it is `offered` a hold (`reservation_id`) or
/// `left`; joining again puts the row back at the tail. The status is
/// checked by the code.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Waitlist::Table)
                    .col(
                        ColumnDef::new(Waitlist::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Waitlist::ScheduleId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Waitlist::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Waitlist::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Waitlist::QueuedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Waitlist::ReservationId).big_integer().null())
                    .col(
                        ColumnDef::new(Waitlist::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_waitlist_schedule_user")
                    .table(Waitlist::Table)
                    .col(Waitlist::ScheduleId)
                    .col(Waitlist::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The head of a schedule's line and the count ahead of a place.
        manager
            .create_index(
                Index::create()
                    .name("ix_waitlist_line")
                    .table(Waitlist::Table)
                    .col(Waitlist::ScheduleId)
                    .col(Waitlist::Status)
                    .col(Waitlist::QueuedAt)
                    .col(Waitlist::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Waitlist::Table).to_owned())
            .await
    }
}
