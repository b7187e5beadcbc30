use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Coupons {
    Table,
    IssuedCount,
    RedeemedCount,
}

/// The campaign list shows each campaign's issued and redeemed counts
/// without counting rows: the issue and redemption transactions keep them
/// on the campaign's row. Existing rows are counted once here.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [Coupons::IssuedCount, Coupons::RedeemedCount] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Coupons::Table)
                        .add_column(ColumnDef::new(column).big_integer().not_null().default(0))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE coupons SET \
                 issued_count = (SELECT COUNT(*) FROM user_coupons u WHERE u.coupon_id = coupons.id), \
                 redeemed_count = (SELECT COUNT(*) FROM user_coupons u \
                   WHERE u.coupon_id = coupons.id AND u.status = 'used')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Coupons::IssuedCount, Coupons::RedeemedCount] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Coupons::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
