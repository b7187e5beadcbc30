//! Campaigns, vendors, issued coupons and redemption jobs in the database.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, SqlErr, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use crate::{
    coupon::{
        domain::{
            Campaign, CampaignCounts, CampaignDraft, CouponError, CouponState, CouponStatus,
            FailReason, HeldCoupon, IssuedCoupon, Job, JobStatus, RecordError, Vendor, Winner,
        },
        ports::{CouponRepository, IssueTx},
    },
    db::{DbTx, Paged, all_as, one_as},
    kernel::{CouponId, PageRequest, Transaction, UserCouponId, UserId, VendorId},
    outbox::ports::OutboxWriter,
};

pub mod vendor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vendors")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub balance: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupons")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub discount: i64,
        pub quantity: i64,
        pub valid_from: DateTimeUtc,
        pub valid_until: DateTimeUtc,
        pub vendor_id: i64,
        pub created_at: DateTimeUtc,
        /// Winners' rows written so far (kept by the issue transaction).
        pub issued_count: i64,
        /// Coupons used so far (kept by the redemption transaction).
        pub redeemed_count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user_coupon {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_coupons")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub coupon_id: i64,
        pub user_id: i64,
        pub issue_number: i64,
        pub status: String,
        pub version: i64,
        pub issue_key: Option<String>,
        pub issued_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon_job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupon_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: i64,
        pub user_coupon_id: i64,
        pub status: String,
        pub reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod vendor_payment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vendor_payments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub vendor_id: i64,
        #[sea_orm(unique)]
        pub user_coupon_id: i64,
        pub job_id: Uuid,
        pub amount: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(CouponError);

pub fn job_from(row: coupon_job::Model) -> anyhow::Result<Job> {
    Ok(Job {
        id: row.id,
        user: UserId(row.user_id),
        user_coupon: UserCouponId(row.user_coupon_id),
        status: JobStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("job {} has status {:?}", row.id, row.status))?,
        reason: row.reason.as_deref().and_then(FailReason::parse),
    })
}

pub fn campaign_from(row: coupon::Model) -> anyhow::Result<Campaign> {
    Ok(Campaign {
        id: CouponId(row.id),
        quantity: u32::try_from(row.quantity)
            .map_err(|_| anyhow!("coupon {} has quantity {}", row.id, row.quantity))?,
        name: row.name,
        discount: row.discount,
        valid_from: row.valid_from,
        valid_until: row.valid_until,
        vendor: VendorId(row.vendor_id),
    })
}

fn issued_from(row: user_coupon::Model) -> IssuedCoupon {
    IssuedCoupon {
        id: UserCouponId(row.id),
        coupon: CouponId(row.coupon_id),
        user: UserId(row.user_id),
        number: u32::try_from(row.issue_number).unwrap_or(u32::MAX),
    }
}

fn vendor_from(row: vendor::Model) -> Vendor {
    Vendor {
        id: VendorId(row.id),
        name: row.name,
        balance: row.balance,
    }
}

#[derive(Clone)]
pub struct DbCoupons {
    db: DatabaseConnection,
}

impl DbCoupons {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl IssueTx for DbTx {
    async fn insert_winners(
        &mut self,
        winners: &[Winner],
        now: DateTime<Utc>,
    ) -> Result<Vec<IssuedCoupon>, RecordError> {
        let rows = winners.iter().map(|w| user_coupon::ActiveModel {
            coupon_id: Set(w.coupon.value()),
            user_id: Set(w.user.value()),
            issue_number: Set(i64::from(w.number)),
            status: Set(CouponStatus::Issued.as_str().into()),
            version: Set(0),
            // Keys live with every other request's keys now.
            issue_key: Set(None),
            issued_at: Set(now),
            used_at: Set(None),
            ..Default::default()
        });
        let written = user_coupon::Entity::insert_many(rows)
            .exec_with_returning(self.conn())
            .await
            .map_err(record_error)?;
        // Campaign rows in id order, so two batches never wait on each
        // other in opposite orders.
        let mut per_campaign: std::collections::BTreeMap<i64, i64> = Default::default();
        for row in &written {
            *per_campaign.entry(row.coupon_id).or_default() += 1;
        }
        for (campaign, count) in per_campaign {
            coupon::Entity::update_many()
                .col_expr(
                    coupon::Column::IssuedCount,
                    Expr::col(coupon::Column::IssuedCount).add(count),
                )
                .filter(coupon::Column::Id.eq(campaign))
                .exec(self.conn())
                .await
                .map_err(|err| RecordError::Failed(err.into()))?;
        }
        Ok(written.into_iter().map(issued_from).collect())
    }
}

/// Which unique index refused a winner's row, if one did. PostgreSQL names
/// the index (`ux_user_coupons_coupon_number`), SQLite the columns
/// (`user_coupons.issue_number`); both mention "number" only for that one.
fn record_error(err: DbErr) -> RecordError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("number") => {
            RecordError::DuplicateNumber
        }
        Some(SqlErr::UniqueConstraintViolation(_)) => RecordError::DuplicateUser,
        _ => RecordError::Failed(err.into()),
    }
}

impl CouponRepository for DbCoupons {
    async fn create_vendor(
        &self,
        name: String,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vendor, CouponError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let row = vendor::ActiveModel {
            name: Set(name),
            balance: Set(0),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(tx.conn())
        .await?;
        let vendor = vendor_from(row);
        tx.append(vec![vendor.created(admin)], now).await?;
        tx.commit().await?;
        Ok(vendor)
    }

    async fn vendors(&self, page: PageRequest) -> Result<Vec<Vendor>, CouponError> {
        Ok(vendor::Entity::find()
            .oldest_first(vendor::Column::Id, page)
            .all(&self.db)
            .await?
            .into_iter()
            .map(vendor_from)
            .collect())
    }

    async fn create_campaign(
        &self,
        draft: CampaignDraft,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> Result<Campaign, CouponError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let txn = tx.conn();
        let row = coupon::ActiveModel {
            name: Set(draft.name),
            discount: Set(draft.discount),
            quantity: Set(i64::from(draft.quantity)),
            valid_from: Set(draft.valid_from),
            valid_until: Set(draft.valid_until),
            vendor_id: Set(draft.vendor.value()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await
        .map_err(|err| match err.sql_err() {
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => CouponError::VendorNotFound,
            _ => err.into(),
        })?;
        let campaign = campaign_from(row)?;
        let event = campaign.created(admin);
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(campaign)
    }

    async fn campaign(&self, id: CouponId) -> Result<Option<Campaign>, CouponError> {
        Ok(one_as(
            coupon::Entity::find_by_id(id.value()),
            &self.db,
            campaign_from,
        )
        .await?)
    }

    async fn campaigns(
        &self,
        ending_after: Option<DateTime<Utc>>,
    ) -> Result<Vec<Campaign>, CouponError> {
        let mut query = coupon::Entity::find();
        if let Some(after) = ending_after {
            query = query.filter(coupon::Column::ValidUntil.gt(after));
        }
        let query = query.order_by_desc(coupon::Column::Id);
        Ok(all_as(query, &self.db, campaign_from).await?)
    }

    async fn campaign_page(
        &self,
        page: PageRequest,
    ) -> Result<Vec<(Campaign, CampaignCounts)>, CouponError> {
        let rows = coupon::Entity::find()
            .newest_first(coupon::Column::Id, page)
            .all(&self.db)
            .await?;
        let vendor_ids: Vec<i64> = rows.iter().map(|r| r.vendor_id).collect();
        let balances: std::collections::HashMap<i64, i64> = vendor::Entity::find()
            .filter(vendor::Column::Id.is_in(vendor_ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|v| (v.id, v.balance))
            .collect();
        rows.into_iter()
            .map(|row| {
                let counts = counts_of(&row, balances.get(&row.vendor_id).copied());
                Ok((campaign_from(row)?, counts))
            })
            .collect()
    }

    async fn holders(&self, coupon: CouponId) -> Result<Vec<(UserId, u32)>, CouponError> {
        let rows: Vec<(i64, i64)> = user_coupon::Entity::find()
            .select_only()
            .column(user_coupon::Column::UserId)
            .column(user_coupon::Column::IssueNumber)
            .filter(user_coupon::Column::CouponId.eq(coupon.value()))
            .order_by_asc(user_coupon::Column::IssueNumber)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(user, number)| {
                u32::try_from(number)
                    .map(|n| (UserId(user), n))
                    .map_err(|_| anyhow!("coupon {coupon} has issue number {number}").into())
            })
            .collect()
    }

    async fn held_by(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> Result<Option<IssuedCoupon>, CouponError> {
        Ok(user_coupon::Entity::find()
            .filter(user_coupon::Column::CouponId.eq(coupon.value()))
            .filter(user_coupon::Column::UserId.eq(user.value()))
            .one(&self.db)
            .await?
            .map(issued_from))
    }

    async fn wallet_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Vec<HeldCoupon>, CouponError> {
        let rows = user_coupon::Entity::find()
            .filter(user_coupon::Column::UserId.eq(user.value()))
            .newest_first(user_coupon::Column::Id, page)
            .all(&self.db)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.coupon_id).collect();
        let campaigns: std::collections::HashMap<i64, coupon::Model> = coupon::Entity::find()
            .filter(coupon::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        rows.into_iter()
            .map(|row| {
                let campaign = campaigns
                    .get(&row.coupon_id)
                    .ok_or_else(|| anyhow!("user coupon {} names no campaign", row.id))?;
                Ok(HeldCoupon {
                    id: UserCouponId(row.id),
                    coupon: CouponId(row.coupon_id),
                    name: campaign.name.clone(),
                    discount: campaign.discount,
                    number: u32::try_from(row.issue_number).unwrap_or(u32::MAX),
                    state: CouponState::of(
                        row.status == CouponStatus::Used.as_str(),
                        campaign.valid_until,
                        now,
                    ),
                    valid_until: campaign.valid_until,
                    issued_at: row.issued_at,
                })
            })
            .collect()
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>, CouponError> {
        Ok(one_as(coupon_job::Entity::find_by_id(id), &self.db, job_from).await?)
    }

    async fn stats(&self, campaign: &Campaign) -> Result<CampaignCounts, CouponError> {
        let row = coupon::Entity::find_by_id(campaign.id.value())
            .one(&self.db)
            .await?
            .ok_or(CouponError::NotFound)?;
        let balance = vendor::Entity::find_by_id(row.vendor_id)
            .one(&self.db)
            .await?
            .map(|v| v.balance);
        Ok(counts_of(&row, balance))
    }
}

fn counts_of(row: &coupon::Model, vendor_balance: Option<i64>) -> CampaignCounts {
    CampaignCounts {
        issued: u64::try_from(row.issued_count).unwrap_or(0),
        redeemed: u64::try_from(row.redeemed_count).unwrap_or(0),
        vendor_balance: vendor_balance.unwrap_or(0),
    }
}

/// Finished redemption jobs past their retention (pending ones stay).
pub fn expiring_jobs(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "coupon_jobs",
        "coupon_jobs",
        "finished_at IS NOT NULL AND finished_at < {before}",
    )
}
