use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tickets {
    Table,
    ScheduleId,
    UpdatedAt,
}

const INDEX: &str = "ix_tickets_schedule_updated_at";

/// The change cursor of a schedule's check-in list reads the tickets of
/// one schedule changed since a time: every write to a ticket stamps
/// `updated_at` with the server's clock.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Tickets::Table)
                    .col(Tickets::ScheduleId)
                    .col(Tickets::UpdatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Tickets::Table).to_owned())
            .await
    }
}
