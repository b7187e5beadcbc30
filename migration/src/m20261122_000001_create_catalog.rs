use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Concerts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Concerts::Id))
                    .col(string(Concerts::Title))
                    .col(string(Concerts::Venue))
                    .col(timestamp_with_time_zone(Concerts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Schedules::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Schedules::Id))
                    .col(big_integer(Schedules::ConcertId))
                    .col(timestamp_with_time_zone(Schedules::StartsAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_schedules_concert")
                            .from(Schedules::Table, Schedules::ConcertId)
                            .to(Concerts::Table, Concerts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_schedules_concert_starts_at")
                    .table(Schedules::Table)
                    .col(Schedules::ConcertId)
                    .col(Schedules::StartsAt)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A seat's status, holder and hold expiry live on the seat row so a
        // hold is one compare-and-set UPDATE; "held" with `held_until` in the
        // past counts as available.
        manager
            .create_table(
                Table::create()
                    .table(Seats::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Seats::Id))
                    .col(big_integer(Seats::ScheduleId))
                    .col(integer(Seats::Number))
                    .col(string(Seats::Grade))
                    .col(big_integer(Seats::Price))
                    .col(string_len(Seats::Status, 16).default("available"))
                    .col(big_integer_null(Seats::HolderId))
                    .col(timestamp_with_time_zone_null(Seats::HeldUntil))
                    .col(big_integer(Seats::Version).default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_seats_schedule")
                            .from(Seats::Table, Seats::ScheduleId)
                            .to(Schedules::Table, Schedules::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .check(Expr::col(Seats::Status).is_in(["available", "held", "sold"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_seats_schedule_number")
                    .table(Seats::Table)
                    .col(Seats::ScheduleId)
                    .col(Seats::Number)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Seats::Table.into_iden(),
            Schedules::Table.into_iden(),
            Concerts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Concerts {
    Table,
    Id,
    Title,
    Venue,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Id,
    ConcertId,
    StartsAt,
}

#[derive(DeriveIden)]
enum Seats {
    Table,
    Id,
    ScheduleId,
    Number,
    Grade,
    Price,
    Status,
    HolderId,
    HeldUntil,
    Version,
}
