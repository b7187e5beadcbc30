use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Vendors::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Vendors::Id))
                    .col(string_len(Vendors::Name, 200))
                    .col(big_integer(Vendors::Balance).default(0))
                    .col(timestamp_with_time_zone(Vendors::CreatedAt))
                    .check(Expr::col(Vendors::Balance).gte(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Coupons::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Coupons::Id))
                    .col(string_len(Coupons::Name, 200))
                    .col(big_integer(Coupons::Discount))
                    .col(big_integer(Coupons::Quantity))
                    .col(timestamp_with_time_zone(Coupons::ValidFrom))
                    .col(timestamp_with_time_zone(Coupons::ValidUntil))
                    .col(big_integer(Coupons::VendorId))
                    .col(timestamp_with_time_zone(Coupons::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Coupons::Table, Coupons::VendorId)
                            .to(Vendors::Table, Vendors::Id),
                    )
                    .check(Expr::col(Coupons::Quantity).gt(0))
                    .check(Expr::col(Coupons::Discount).gt(0))
                    .to_owned(),
            )
            .await?;
        // One row per issued coupon. The two unique indexes are the last
        // guard behind the Redis ledger: one coupon per user, and issue
        // numbers (1..=quantity, handed out by the ledger) never shared, so
        // the table cannot hold more rows than the quantity even if the
        // ledger was lost and rebuilt while winners were still writing.
        manager
            .create_table(
                Table::create()
                    .table(UserCoupons::Table)
                    .if_not_exists()
                    .col(big_pk_auto(UserCoupons::Id))
                    .col(big_integer(UserCoupons::CouponId))
                    .col(big_integer(UserCoupons::UserId))
                    .col(big_integer(UserCoupons::IssueNumber))
                    .col(string_len(UserCoupons::Status, 16))
                    .col(big_integer(UserCoupons::Version).default(0))
                    .col(string_len_null(UserCoupons::IssueKey, 128))
                    .col(timestamp_with_time_zone(UserCoupons::IssuedAt))
                    .col(timestamp_with_time_zone_null(UserCoupons::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserCoupons::Table, UserCoupons::CouponId)
                            .to(Coupons::Table, Coupons::Id),
                    )
                    .check(Expr::col(UserCoupons::Status).is_in(["issued", "used"]))
                    .check(Expr::col(UserCoupons::IssueNumber).gt(0))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("ux_user_coupons_coupon_user", UserCoupons::UserId),
            ("ux_user_coupons_coupon_number", UserCoupons::IssueNumber),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(UserCoupons::Table)
                        .col(UserCoupons::CouponId)
                        .col(col)
                        .unique()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_user_coupons_user_id")
                    .table(UserCoupons::Table)
                    .col(UserCoupons::UserId)
                    .col(UserCoupons::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CouponJobs::Table)
                    .if_not_exists()
                    .col(uuid(CouponJobs::Id).primary_key())
                    .col(big_integer(CouponJobs::UserId))
                    .col(big_integer(CouponJobs::UserCouponId))
                    .col(string_len(CouponJobs::Status, 16))
                    .col(string_len_null(CouponJobs::Reason, 32))
                    .col(timestamp_with_time_zone(CouponJobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(CouponJobs::FinishedAt))
                    .check(Expr::col(CouponJobs::Status).is_in(["pending", "succeeded", "failed"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_coupon_jobs_user_id")
                    .table(CouponJobs::Table)
                    .col(CouponJobs::UserId)
                    .to_owned(),
            )
            .await?;
        // One payment per used coupon: the unique user coupon id makes the
        // vendor payout idempotent.
        manager
            .create_table(
                Table::create()
                    .table(VendorPayments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(VendorPayments::Id))
                    .col(big_integer(VendorPayments::VendorId))
                    .col(big_integer_uniq(VendorPayments::UserCouponId))
                    .col(uuid(VendorPayments::JobId))
                    .col(big_integer(VendorPayments::Amount))
                    .col(timestamp_with_time_zone(VendorPayments::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(VendorPayments::Table, VendorPayments::VendorId)
                            .to(Vendors::Table, Vendors::Id),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            VendorPayments::Table.into_iden(),
            CouponJobs::Table.into_iden(),
            UserCoupons::Table.into_iden(),
            Coupons::Table.into_iden(),
            Vendors::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Vendors {
    Table,
    Id,
    Name,
    Balance,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Coupons {
    Table,
    Id,
    Name,
    Discount,
    Quantity,
    ValidFrom,
    ValidUntil,
    VendorId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UserCoupons {
    Table,
    Id,
    CouponId,
    UserId,
    IssueNumber,
    Status,
    Version,
    IssueKey,
    IssuedAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum CouponJobs {
    Table,
    Id,
    UserId,
    UserCouponId,
    Status,
    Reason,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum VendorPayments {
    Table,
    Id,
    VendorId,
    UserCouponId,
    JobId,
    Amount,
    CreatedAt,
}
