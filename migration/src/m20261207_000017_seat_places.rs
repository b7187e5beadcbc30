use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Seats {
    Table,
    Section,
    RowLabel,
}

/// Where a seat stands in the hall, when the admin says so: its section and
/// its row (`row_label`: `row` is a keyword in SQL). Both optional, so the
/// schedules created before keep working; seats next to each other in a
/// row are the ones whose numbers follow on.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Seats::Section)
                .string_len(32)
                .null()
                .to_owned(),
            ColumnDef::new(Seats::RowLabel)
                .string_len(16)
                .null()
                .to_owned(),
        ];
        // One column per statement: SQLite adds one at a time.
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Seats::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Seats::Section, Seats::RowLabel] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Seats::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
