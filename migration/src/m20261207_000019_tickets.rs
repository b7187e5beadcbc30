use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tickets {
    Table,
    Id,
    ReservationId,
    UserId,
    ScheduleId,
    SeatId,
    Version,
    Status,
    Code,
    Kid,
    IssuedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TicketSigningKeys {
    Table,
    Generation,
    Kid,
    PrivateKey,
    CreatedAt,
    RetiredAt,
}

/// Tickets (one per reservation the saga sold, with its signed code) and
/// the keys that sign their codes (generation 1 made by the first process
/// to start, one more per rotation).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tickets::Table)
                    .col(
                        ColumnDef::new(Tickets::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Tickets::ReservationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Tickets::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Tickets::ScheduleId).big_integer().not_null())
                    .col(ColumnDef::new(Tickets::SeatId).big_integer().not_null())
                    .col(ColumnDef::new(Tickets::Version).integer().not_null())
                    .col(ColumnDef::new(Tickets::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Tickets::Code).text().not_null())
                    .col(ColumnDef::new(Tickets::Kid).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Tickets::IssuedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Tickets::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_tickets_reservation")
                    .table(Tickets::Table)
                    .col(Tickets::ReservationId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A holder's list, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_tickets_user_id")
                    .table(Tickets::Table)
                    .col(Tickets::UserId)
                    .col(Tickets::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TicketSigningKeys::Table)
                    .col(
                        ColumnDef::new(TicketSigningKeys::Generation)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TicketSigningKeys::Kid)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(TicketSigningKeys::PrivateKey)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TicketSigningKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(TicketSigningKeys::RetiredAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TicketSigningKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Tickets::Table).to_owned())
            .await
    }
}
