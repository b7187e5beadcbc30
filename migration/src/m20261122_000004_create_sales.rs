use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Reservations::Id))
                    .col(big_integer(Reservations::UserId))
                    .col(big_integer(Reservations::ConcertId))
                    .col(big_integer(Reservations::ScheduleId))
                    .col(big_integer(Reservations::SeatId))
                    .col(big_integer(Reservations::Price))
                    .col(string_len(Reservations::Status, 16))
                    .col(timestamp_with_time_zone(Reservations::ExpiresAt))
                    .col(big_integer_null(Reservations::PaymentId))
                    .col(timestamp_with_time_zone(Reservations::CreatedAt))
                    .col(timestamp_with_time_zone(Reservations::UpdatedAt))
                    .check(Expr::col(Reservations::Status).is_in([
                        "held",
                        "confirmed",
                        "expired",
                        "released",
                    ]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_reservations_user_status")
                    .table(Reservations::Table)
                    .col(Reservations::UserId)
                    .col(Reservations::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_reservations_status_expires_at")
                    .table(Reservations::Table)
                    .col(Reservations::Status)
                    .col(Reservations::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        // The seat row remembers which reservation holds it, so a hold, its
        // expiry and its confirmation are compare-and-set on one row.
        manager
            .alter_table(
                Table::alter()
                    .table(Seats::Table)
                    .add_column(big_integer_null(Seats::ReservationId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Wallets::Table)
                    .if_not_exists()
                    .col(big_integer(Wallets::UserId).primary_key())
                    .col(big_integer(Wallets::Balance).default(0))
                    .col(timestamp_with_time_zone(Wallets::UpdatedAt))
                    .check(Expr::col(Wallets::Balance).gte(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WalletTransactions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WalletTransactions::Id))
                    .col(big_integer(WalletTransactions::UserId))
                    .col(string_len(WalletTransactions::Kind, 16))
                    .col(big_integer(WalletTransactions::Amount))
                    .col(big_integer(WalletTransactions::BalanceAfter))
                    .col(big_integer_null(WalletTransactions::PaymentId))
                    .col(timestamp_with_time_zone(WalletTransactions::CreatedAt))
                    .check(
                        Expr::col(WalletTransactions::Kind).is_in(["charge", "payment", "refund"]),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_wallet_transactions_user_id")
                    .table(WalletTransactions::Table)
                    .col(WalletTransactions::UserId)
                    .col(WalletTransactions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Payments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Payments::Id))
                    .col(big_integer(Payments::UserId))
                    .col(big_integer_uniq(Payments::ReservationId))
                    .col(big_integer(Payments::ConcertId))
                    .col(big_integer(Payments::Amount))
                    .col(string_len(Payments::Status, 16))
                    .col(timestamp_with_time_zone(Payments::CreatedAt))
                    .col(timestamp_with_time_zone(Payments::UpdatedAt))
                    .check(Expr::col(Payments::Status).is_in(["paid", "confirmed", "refunded"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Compensations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Compensations::Id))
                    .col(string_len(Compensations::Saga, 32))
                    .col(string_len(Compensations::Step, 32))
                    .col(big_integer(Compensations::PaymentId))
                    .col(string_len(Compensations::Status, 16))
                    .col(integer(Compensations::Attempts).default(0))
                    .col(text_null(Compensations::LastError))
                    .col(timestamp_with_time_zone(Compensations::NextAttemptAt))
                    .col(timestamp_with_time_zone(Compensations::CreatedAt))
                    .col(timestamp_with_time_zone(Compensations::UpdatedAt))
                    .check(Expr::col(Compensations::Status).is_in([
                        "pending",
                        "succeeded",
                        "failed",
                    ]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_compensations_saga_step_payment")
                    .table(Compensations::Table)
                    .col(Compensations::Saga)
                    .col(Compensations::Step)
                    .col(Compensations::PaymentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Notifications::Id))
                    .col(big_integer(Notifications::UserId))
                    .col(string_len(Notifications::Kind, 48))
                    .col(text(Notifications::Message))
                    .col(uuid_uniq(Notifications::EventId))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_notifications_user_id")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::Id)
                    .to_owned(),
            )
            .await?;
        // Remembered answers for retried requests (`Idempotency-Key`).
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(big_integer(IdempotencyKeys::UserId))
                    .col(string_len(IdempotencyKeys::Scope, 32))
                    .col(string_len(IdempotencyKeys::Key, 128))
                    .col(string_len(IdempotencyKeys::RequestHash, 64))
                    .col(integer(IdempotencyKeys::Status))
                    .col(text(IdempotencyKeys::Body))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::UserId)
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Notifications::Table.into_iden(),
            Compensations::Table.into_iden(),
            Payments::Table.into_iden(),
            WalletTransactions::Table.into_iden(),
            Wallets::Table.into_iden(),
            Reservations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Seats::Table)
                    .drop_column(Seats::ReservationId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Seats {
    Table,
    ReservationId,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    UserId,
    ConcertId,
    ScheduleId,
    SeatId,
    Price,
    Status,
    ExpiresAt,
    PaymentId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Wallets {
    Table,
    UserId,
    Balance,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WalletTransactions {
    Table,
    Id,
    UserId,
    Kind,
    Amount,
    BalanceAfter,
    PaymentId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    Id,
    UserId,
    ReservationId,
    ConcertId,
    Amount,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Compensations {
    Table,
    Id,
    Saga,
    Step,
    PaymentId,
    Status,
    Attempts,
    LastError,
    NextAttemptAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    Kind,
    Message,
    EventId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    UserId,
    Scope,
    Key,
    RequestHash,
    Status,
    Body,
    CreatedAt,
}
