use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    UserId,
    ConcertId,
    ScheduleId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    OrderId,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    OrderId,
    PaymentId,
}

/// Orders of several seats: one row per order, and each reservation (one
/// seat) names its order. Reservations made before have none, and read as
/// before.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Orders::Id))
                    .col(big_integer(Orders::UserId))
                    .col(big_integer(Orders::ConcertId))
                    .col(big_integer(Orders::ScheduleId))
                    .col(timestamp_with_time_zone(Orders::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // A buyer's orders, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_orders_user")
                    .table(Orders::Table)
                    .col(Orders::UserId)
                    .col(Orders::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .add_column(ColumnDef::new(Reservations::OrderId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // The order a payment paid for (null: a payment of one hold made
        // before orders existed).
        manager
            .alter_table(
                Table::alter()
                    .table(Payments::Table)
                    .add_column(ColumnDef::new(Payments::OrderId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // An order's seats, and a payment's.
        for (name, column) in [
            ("ix_reservations_order", Reservations::OrderId),
            ("ix_reservations_payment", Reservations::PaymentId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Reservations::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["ix_reservations_order", "ix_reservations_payment"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Reservations::Table)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .drop_column(Reservations::OrderId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Payments::Table)
                    .drop_column(Payments::OrderId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Orders::Table).to_owned())
            .await
    }
}
