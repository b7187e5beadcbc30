use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Traceparent,
}

#[derive(DeriveIden)]
enum Compensations {
    Table,
    Traceparent,
}

/// Outbox rows and compensation steps keep the W3C `traceparent` of the
/// request (or event handler) that wrote them, so whoever publishes,
/// handles or runs them continues that trace. Older rows have none.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(ColumnDef::new(Outbox::Traceparent).string_len(64).null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Compensations::Table)
                    .add_column(
                        ColumnDef::new(Compensations::Traceparent)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Compensations::Table)
                    .drop_column(Compensations::Traceparent)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .drop_column(Outbox::Traceparent)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
