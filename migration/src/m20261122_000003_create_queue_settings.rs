use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Per-concert waiting-room settings an admin changed; concerts
        // without a row use the configured defaults.
        manager
            .create_table(
                Table::create()
                    .table(QueueSettings::Table)
                    .if_not_exists()
                    .col(big_integer(QueueSettings::ConcertId).primary_key())
                    .col(integer(QueueSettings::AdmitPerSecond))
                    .col(integer(QueueSettings::MaxActive))
                    .col(integer(QueueSettings::ActiveTtlSeconds))
                    .col(integer(QueueSettings::HeartbeatGraceSeconds))
                    .col(timestamp_with_time_zone(QueueSettings::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(QueueSettings::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum QueueSettings {
    Table,
    ConcertId,
    AdmitPerSecond,
    MaxActive,
    ActiveTtlSeconds,
    HeartbeatGraceSeconds,
    UpdatedAt,
}
