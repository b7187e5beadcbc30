use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventSubscriptions {
    Table,
    Consumer,
    EventType,
    RegisteredAt,
    Redelivered,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    PublishedAt,
    DeliveredAt,
    StreamId,
}

/// The delivery audit: which consumer groups must handle each event type
/// (`event_subscriptions`, registered by the handlers at start, with how
/// many events the audit sent each group again), and when every subscribed
/// group had handled or dead-lettered an outbox row (`delivered_at`; rows
/// are deleted only after it), and the id its stream gave it
/// (`stream_id`). Rows published before this migration count as
/// delivered.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventSubscriptions::Table)
                    .col(
                        ColumnDef::new(EventSubscriptions::Consumer)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EventSubscriptions::EventType)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EventSubscriptions::RegisteredAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(EventSubscriptions::Redelivered)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .primary_key(
                        Index::create()
                            .col(EventSubscriptions::Consumer)
                            .col(EventSubscriptions::EventType),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(
                        ColumnDef::new(Outbox::DeliveredAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(ColumnDef::new(Outbox::StreamId).string_len(48).null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Outbox::Table)
                    .value(Outbox::DeliveredAt, Expr::col(Outbox::PublishedAt))
                    .and_where(Expr::col(Outbox::PublishedAt).is_not_null())
                    .to_owned(),
            )
            .await?;
        // The audit reads the rows not yet delivered, oldest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_outbox_delivered")
                    .table(Outbox::Table)
                    .col(Outbox::DeliveredAt)
                    .col(Outbox::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_outbox_delivered")
                    .table(Outbox::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .drop_column(Outbox::StreamId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .drop_column(Outbox::DeliveredAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(EventSubscriptions::Table).to_owned())
            .await
    }
}
