use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AdminAlerts {
    Table,
    Condition,
    ResolvedAt,
    Traceparent,
    WebhookAttempts,
    WebhookNextAt,
    WebhookDeliveredAt,
    WebhookError,
}

/// Alerts delivered, not fired: each alert raised while a webhook is
/// configured is queued in its own row (`webhook_next_at`, retried with
/// backoff, `webhook_delivered_at` once the webhook answered 2xx) with the
/// trace it was raised in. Watchdog alerts name their `condition` and are
/// `resolved_at` when it clears (one open alert per condition).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(AdminAlerts::Condition)
                .string_len(128)
                .null()
                .to_owned(),
            ColumnDef::new(AdminAlerts::ResolvedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(AdminAlerts::Traceparent)
                .string_len(64)
                .null()
                .to_owned(),
            ColumnDef::new(AdminAlerts::WebhookAttempts)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(AdminAlerts::WebhookNextAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(AdminAlerts::WebhookDeliveredAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(AdminAlerts::WebhookError)
                .string_len(512)
                .null()
                .to_owned(),
        ];
        // One column per statement: SQLite adds one at a time.
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(AdminAlerts::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_admin_alerts_webhook_next_at")
                    .table(AdminAlerts::Table)
                    .col(AdminAlerts::WebhookNextAt)
                    .to_owned(),
            )
            .await?;
        // One open alert per watchdog condition, whichever instance's
        // watchdog sees it first (both engines know partial indexes).
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_admin_alerts_open_condition ON admin_alerts (condition) \
                 WHERE condition IS NOT NULL AND resolved_at IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "ux_admin_alerts_open_condition",
            "ix_admin_alerts_webhook_next_at",
        ] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(AdminAlerts::Table)
                        .to_owned(),
                )
                .await?;
        }
        for column in [
            AdminAlerts::WebhookError,
            AdminAlerts::WebhookDeliveredAt,
            AdminAlerts::WebhookNextAt,
            AdminAlerts::WebhookAttempts,
            AdminAlerts::Traceparent,
            AdminAlerts::ResolvedAt,
            AdminAlerts::Condition,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AdminAlerts::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
