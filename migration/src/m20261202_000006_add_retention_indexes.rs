use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table, column): what the retention sweeper filters on, and the
/// outbox's event id, which tells whether an inbox row may still be needed.
const INDEXES: [(&str, &str, &str); 7] = [
    ("ix_outbox_event_id", "outbox", "event_id"),
    ("ix_inbox_processed_at", "inbox", "processed_at"),
    (
        "ix_idempotency_keys_created_at",
        "idempotency_keys",
        "created_at",
    ),
    ("ix_notifications_created_at", "notifications", "created_at"),
    ("ix_coupon_jobs_finished_at", "coupon_jobs", "finished_at"),
    ("ix_dead_letters_replayed_at", "dead_letters", "replayed_at"),
    (
        "ix_admin_alerts_acknowledged_at",
        "admin_alerts",
        "acknowledged_at",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in INDEXES {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Alias::new(table))
                        .col(Alias::new(column))
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
