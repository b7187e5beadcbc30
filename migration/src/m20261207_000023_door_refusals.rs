use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DoorRefusals {
    Table,
    Id,
    ScheduleId,
    Gate,
    Reason,
    TicketId,
    At,
}

#[derive(DeriveIden)]
enum Tickets {
    Table,
    ScheduleId,
    CheckedInAt,
}

/// What operators see of the door: every refused scan (kept for a day by
/// the retention sweeper), and an index for a schedule's check-in counts.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DoorRefusals::Table)
                    .col(
                        ColumnDef::new(DoorRefusals::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    // Unknown for a forged code scanned without a schedule.
                    .col(
                        ColumnDef::new(DoorRefusals::ScheduleId)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(DoorRefusals::Gate).string_len(64).not_null())
                    .col(
                        ColumnDef::new(DoorRefusals::Reason)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(DoorRefusals::TicketId).big_integer().null())
                    .col(
                        ColumnDef::new(DoorRefusals::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // A schedule's recent refusals, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_door_refusals_schedule_id")
                    .table(DoorRefusals::Table)
                    .col(DoorRefusals::ScheduleId)
                    .col(DoorRefusals::Id)
                    .to_owned(),
            )
            .await?;
        // The retention sweeper's cutoff.
        manager
            .create_index(
                Index::create()
                    .name("ix_door_refusals_at")
                    .table(DoorRefusals::Table)
                    .col(DoorRefusals::At)
                    .to_owned(),
            )
            .await?;
        // A schedule's sold and checked-in counts, and its check-ins of
        // the last minutes.
        manager
            .create_index(
                Index::create()
                    .name("ix_tickets_schedule_checked_in")
                    .table(Tickets::Table)
                    .col(Tickets::ScheduleId)
                    .col(Tickets::CheckedInAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_tickets_schedule_checked_in")
                    .table(Tickets::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(DoorRefusals::Table).to_owned())
            .await
    }
}
