use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Payments {
    Table,
    ScheduleId,
}

/// Every payment names the schedule of the seat it bought, so the payment
/// module finds a schedule's payments (a cancellation's refunds, its
/// progress) in its own table instead of reading the reservation module's.
/// Rows written before are filled from their reservation.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Payments::Table)
                    .add_column(ColumnDef::new(Payments::ScheduleId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE payments SET schedule_id = \
                 (SELECT r.schedule_id FROM reservations r WHERE r.id = payments.reservation_id)",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_payments_schedule_status")
                    .table(Payments::Table)
                    .col(Payments::ScheduleId)
                    .col(Alias::new("status"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_payments_schedule_status")
                    .table(Payments::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Payments::Table)
                    .drop_column(Payments::ScheduleId)
                    .to_owned(),
            )
            .await
    }
}
