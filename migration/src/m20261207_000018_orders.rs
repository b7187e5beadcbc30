use sea_orm_migration::{prelude::*, schema::*};

use crate::{add_columns, drop_columns};

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
        let order_id = |column: DynIden| ColumnDef::new(column).big_integer().null().to_owned();
        let column = order_id(Reservations::OrderId.into_iden());
        add_columns(manager, Reservations::Table.into_iden(), [column]).await?;
        // The order a payment paid for (null: a payment of one hold made
        // before orders existed).
        let column = order_id(Payments::OrderId.into_iden());
        add_columns(manager, Payments::Table.into_iden(), [column]).await?;
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
        let column = [Reservations::OrderId.into_iden()];
        drop_columns(manager, Reservations::Table.into_iden(), column).await?;
        let column = [Payments::OrderId.into_iden()];
        drop_columns(manager, Payments::Table.into_iden(), column).await?;
        manager
            .drop_table(Table::drop().table(Orders::Table).to_owned())
            .await
    }
}
