//! The redemption's stores in a transaction: the request writes the job,
//! the consumer's step decides it.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::db::{campaign_from, coupon, coupon_job, job_from, user_coupon, vendor, vendor_payment};
use crate::{
    coupon::{
        domain::{CouponStatus, FailReason, Job, JobStatus, RedeemableCoupon},
        ports::RedemptionTx,
    },
    db::{DbTx, insert_new, one_as},
    kernel::{StoreError, UserCouponId, UserId, VendorId},
};

impl RedemptionTx for DbTx {
    async fn insert_job(&mut self, job: &Job, now: DateTime<Utc>) -> Result<(), StoreError> {
        coupon_job::Entity::insert(coupon_job::ActiveModel {
            id: Set(job.id),
            user_id: Set(job.user.value()),
            user_coupon_id: Set(job.user_coupon.value()),
            status: Set(job.status.as_str().into()),
            reason: Set(job.reason.map(|r| r.code().into())),
            created_at: Set(now),
            finished_at: Set(None),
        })
        .exec_without_returning(self.conn())
        .await?;
        Ok(())
    }

    async fn job(&mut self, id: Uuid) -> Result<Option<Job>, StoreError> {
        one_as(coupon_job::Entity::find_by_id(id), self.conn(), job_from).await
    }

    async fn redeemable(
        &mut self,
        id: UserCouponId,
    ) -> Result<Option<RedeemableCoupon>, StoreError> {
        let Some(row) = user_coupon::Entity::find_by_id(id.value())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let Some(campaign) = coupon::Entity::find_by_id(row.coupon_id)
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(RedeemableCoupon {
            id,
            owner: UserId(row.user_id),
            status: CouponStatus::parse(&row.status).ok_or_else(|| {
                StoreError::Unexpected(anyhow!("coupon {} has status {:?}", row.id, row.status))
            })?,
            version: row.version,
            campaign: campaign_from(campaign).map_err(StoreError::Unexpected)?,
        }))
    }

    async fn mark_used(
        &mut self,
        id: UserCouponId,
        version: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let marked = user_coupon::Entity::update_many()
            .col_expr(
                user_coupon::Column::Status,
                Expr::value(CouponStatus::Used.as_str()),
            )
            .col_expr(
                user_coupon::Column::Version,
                Expr::col(user_coupon::Column::Version).add(1),
            )
            .col_expr(user_coupon::Column::UsedAt, Expr::value(now))
            .filter(user_coupon::Column::Id.eq(id.value()))
            .filter(user_coupon::Column::Version.eq(version))
            .filter(user_coupon::Column::Status.eq(CouponStatus::Issued.as_str()))
            .exec(self.conn())
            .await?;
        if marked.rows_affected != 1 {
            return Ok(false);
        }
        coupon::Entity::update_many()
            .col_expr(
                coupon::Column::RedeemedCount,
                Expr::col(coupon::Column::RedeemedCount).add(1),
            )
            .filter(
                coupon::Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(user_coupon::Column::CouponId)
                        .from(user_coupon::Entity)
                        .and_where(user_coupon::Column::Id.eq(id.value()))
                        .to_owned(),
                ),
            )
            .exec(self.conn())
            .await?;
        Ok(true)
    }

    async fn pay_vendor(
        &mut self,
        vendor_id: VendorId,
        coupon: UserCouponId,
        job: Uuid,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let payment = vendor_payment::ActiveModel {
            vendor_id: Set(vendor_id.value()),
            user_coupon_id: Set(coupon.value()),
            job_id: Set(job),
            amount: Set(amount),
            created_at: Set(now),
            ..Default::default()
        };
        let unique = [vendor_payment::Column::UserCouponId];
        if !insert_new(payment, unique, self.conn()).await? {
            return Ok(false);
        }
        vendor::Entity::update_many()
            .col_expr(
                vendor::Column::Balance,
                Expr::col(vendor::Column::Balance).add(amount),
            )
            .filter(vendor::Column::Id.eq(vendor_id.value()))
            .exec(self.conn())
            .await?;
        Ok(true)
    }

    async fn finish_job(
        &mut self,
        job: Uuid,
        status: JobStatus,
        reason: Option<FailReason>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        coupon_job::Entity::update_many()
            .col_expr(coupon_job::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                coupon_job::Column::Reason,
                Expr::value(reason.map(|r| r.code().to_owned())),
            )
            .col_expr(coupon_job::Column::FinishedAt, Expr::value(now))
            .filter(coupon_job::Column::Id.eq(job))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}
