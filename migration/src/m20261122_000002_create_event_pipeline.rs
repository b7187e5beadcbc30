use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The transactional outbox. `relayed_at` marks rows handed to the
        // bus; `published_at` marks rows the bus has durably taken (Redis)
        // or that every consumer has finished (in-process bus).
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(uuid(Outbox::EventId))
                    .col(string_len(Outbox::EventType, 64))
                    .col(string_len(Outbox::AggregateType, 64))
                    .col(string_len(Outbox::AggregateId, 64))
                    .col(text(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::OccurredAt))
                    .col(string_len_null(Outbox::TargetConsumer, 64))
                    .col(timestamp_with_time_zone_null(Outbox::RelayedAt))
                    .col(timestamp_with_time_zone_null(Outbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_outbox_published_at_id")
                    .table(Outbox::Table)
                    .col(Outbox::PublishedAt)
                    .col(Outbox::Id)
                    .to_owned(),
            )
            .await?;
        // One row per (consumer, event) a consumer has applied, written in
        // the same transaction as the effect: the idempotency record.
        manager
            .create_table(
                Table::create()
                    .table(Inbox::Table)
                    .if_not_exists()
                    .col(string_len(Inbox::Consumer, 64))
                    .col(uuid(Inbox::EventId))
                    .col(timestamp_with_time_zone(Inbox::ProcessedAt))
                    .primary_key(Index::create().col(Inbox::Consumer).col(Inbox::EventId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeadLetters::Id))
                    .col(string_len(DeadLetters::Consumer, 64))
                    .col(uuid(DeadLetters::EventId))
                    .col(string_len(DeadLetters::EventType, 64))
                    .col(text(DeadLetters::Envelope))
                    .col(integer(DeadLetters::Deliveries))
                    .col(text(DeadLetters::LastError))
                    .col(timestamp_with_time_zone(DeadLetters::CreatedAt))
                    .col(timestamp_with_time_zone_null(DeadLetters::ReplayedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminAlerts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AdminAlerts::Id))
                    .col(string_len(AdminAlerts::Severity, 16))
                    .col(string_len(AdminAlerts::Source, 64))
                    .col(text(AdminAlerts::Message))
                    .col(timestamp_with_time_zone(AdminAlerts::CreatedAt))
                    .col(boolean(AdminAlerts::Acknowledged).default(false))
                    .col(timestamp_with_time_zone_null(AdminAlerts::AcknowledgedAt))
                    .check(Expr::col(AdminAlerts::Severity).is_in(["info", "warning", "critical"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Receipts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Receipts::Id))
                    .col(string_len_uniq(Receipts::Number, 64))
                    .col(big_integer_uniq(Receipts::PaymentId))
                    .col(big_integer(Receipts::UserId))
                    .col(big_integer(Receipts::Amount))
                    .col(uuid(Receipts::EventId))
                    .col(timestamp_with_time_zone(Receipts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Receipts::Table.into_iden(),
            AdminAlerts::Table.into_iden(),
            DeadLetters::Table.into_iden(),
            Inbox::Table.into_iden(),
            Outbox::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    EventId,
    EventType,
    AggregateType,
    AggregateId,
    Payload,
    OccurredAt,
    TargetConsumer,
    RelayedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum Inbox {
    Table,
    Consumer,
    EventId,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Consumer,
    EventId,
    EventType,
    Envelope,
    Deliveries,
    LastError,
    CreatedAt,
    ReplayedAt,
}

#[derive(DeriveIden)]
enum AdminAlerts {
    Table,
    Id,
    Severity,
    Source,
    Message,
    CreatedAt,
    Acknowledged,
    AcknowledgedAt,
}

#[derive(DeriveIden)]
enum Receipts {
    Table,
    Id,
    Number,
    PaymentId,
    UserId,
    Amount,
    EventId,
    CreatedAt,
}
