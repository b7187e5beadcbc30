//! Schema migrations for boxoffice, run at start-up (`Migrator::up`) and by
//! `boxoffice migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_catalog;
mod m20261122_000002_create_event_pipeline;
mod m20261122_000003_create_queue_settings;
mod m20261122_000004_create_sales;
mod m20261122_000005_create_coupons;
mod m20261202_000006_add_retention_indexes;
mod m20261203_000007_add_coupon_counters;
mod m20261203_000008_buyer_lifecycle;
mod m20261203_000009_schedule_status;
mod m20261204_000010_queue_opening;
mod m20261204_000011_waitlist;
mod m20261204_000012_payment_schedule;
mod m20261204_000013_traceparent;
mod m20261207_000014_identity_subjects;
mod m20261207_000015_delivery_audit;
mod m20261207_000016_alert_delivery;
mod m20261207_000017_seat_places;
mod m20261207_000018_orders;
mod m20261207_000019_tickets;
mod m20261207_000020_checkins;
mod m20261207_000021_ticket_changes;
mod m20261207_000022_partial_refunds;
mod m20261207_000023_door_refusals;
mod m20261207_000024_waitlist_quantity;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_catalog::Migration),
            Box::new(m20261122_000002_create_event_pipeline::Migration),
            Box::new(m20261122_000003_create_queue_settings::Migration),
            Box::new(m20261122_000004_create_sales::Migration),
            Box::new(m20261122_000005_create_coupons::Migration),
            Box::new(m20261202_000006_add_retention_indexes::Migration),
            Box::new(m20261203_000007_add_coupon_counters::Migration),
            Box::new(m20261203_000008_buyer_lifecycle::Migration),
            Box::new(m20261203_000009_schedule_status::Migration),
            Box::new(m20261204_000010_queue_opening::Migration),
            Box::new(m20261204_000011_waitlist::Migration),
            Box::new(m20261204_000012_payment_schedule::Migration),
            Box::new(m20261204_000013_traceparent::Migration),
            Box::new(m20261207_000014_identity_subjects::Migration),
            Box::new(m20261207_000015_delivery_audit::Migration),
            Box::new(m20261207_000016_alert_delivery::Migration),
            Box::new(m20261207_000017_seat_places::Migration),
            Box::new(m20261207_000018_orders::Migration),
            Box::new(m20261207_000019_tickets::Migration),
            Box::new(m20261207_000020_checkins::Migration),
            Box::new(m20261207_000021_ticket_changes::Migration),
            Box::new(m20261207_000022_partial_refunds::Migration),
            Box::new(m20261207_000023_door_refusals::Migration),
            Box::new(m20261207_000024_waitlist_quantity::Migration),
        ]
    }
}

/// Adds `columns` to `table`, one statement each: SQLite adds one at a time.
async fn add_columns(
    manager: &SchemaManager<'_>,
    table: DynIden,
    columns: impl IntoIterator<Item = ColumnDef>,
) -> Result<(), DbErr> {
    for mut column in columns {
        let alter = Table::alter()
            .table(table.clone())
            .add_column(&mut column)
            .to_owned();
        manager.alter_table(alter).await?;
    }
    Ok(())
}

/// Drops `columns` of `table`, one statement each (as they were added).
async fn drop_columns(
    manager: &SchemaManager<'_>,
    table: DynIden,
    columns: impl IntoIterator<Item = DynIden>,
) -> Result<(), DbErr> {
    for column in columns {
        let alter = Table::alter()
            .table(table.clone())
            .drop_column(column)
            .to_owned();
        manager.alter_table(alter).await?;
    }
    Ok(())
}
