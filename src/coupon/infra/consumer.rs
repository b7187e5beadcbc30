//! The redemption worker: decides a `CouponRedemptionRequested` job, marks
//! the coupon used (optimistic version check), pays the vendor once, and
//! finishes the job, all in the consumer's transaction with its inbox row.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::db::{coupon, coupon_job, user_coupon, vendor, vendor_payment};
use crate::{
    coupon::domain::{FailReason, JobStatus, RedemptionFacts, redemption_verdict},
    kernel::{
        UserId,
        events::{
            CouponRedemptionFinished, CouponRedemptionRequested, EventEnvelope, NewEvent, types,
        },
    },
    outbox::infra::{consumer::EventHandler, db::append_events},
};

pub struct CouponRedeemer;

struct Paid {
    coupon_id: i64,
    vendor_id: i64,
    amount: i64,
}

async fn redeem(
    txn: &DatabaseTransaction,
    request: &CouponRedemptionRequested,
) -> anyhow::Result<Result<Paid, FailReason>> {
    let now = Utc::now();
    let held = user_coupon::Entity::find_by_id(request.user_coupon_id)
        .one(txn)
        .await?;
    let campaign = match &held {
        Some(row) => coupon::Entity::find_by_id(row.coupon_id).one(txn).await?,
        None => None,
    };
    let facts = held
        .as_ref()
        .zip(campaign.as_ref())
        .map(|(row, c)| RedemptionFacts {
            owner: UserId(row.user_id),
            used: row.status == "used",
            valid_from: c.valid_from,
            valid_until: c.valid_until,
        });
    if let Err(reason) = redemption_verdict(UserId(request.user_id), facts, now) {
        return Ok(Err(reason));
    }
    let (Some(row), Some(campaign)) = (held, campaign) else {
        return Ok(Err(FailReason::NotYourCoupon));
    };
    // Optimistic: only the version we read may be changed. A concurrent
    // job for the same coupon either committed first (we change nothing)
    // or waits for us and then finds the version moved.
    let marked = user_coupon::Entity::update_many()
        .col_expr(user_coupon::Column::Status, Expr::value("used"))
        .col_expr(
            user_coupon::Column::Version,
            Expr::col(user_coupon::Column::Version).add(1),
        )
        .col_expr(user_coupon::Column::UsedAt, Expr::value(now))
        .filter(user_coupon::Column::Id.eq(row.id))
        .filter(user_coupon::Column::Version.eq(row.version))
        .filter(user_coupon::Column::Status.eq("issued"))
        .exec(txn)
        .await?;
    if marked.rows_affected == 0 {
        return Ok(Err(FailReason::AlreadyUsed));
    }
    let paid = vendor_payment::Entity::insert(vendor_payment::ActiveModel {
        vendor_id: Set(campaign.vendor_id),
        user_coupon_id: Set(row.id),
        job_id: Set(request.job_id),
        amount: Set(campaign.discount),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::column(vendor_payment::Column::UserCouponId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    if paid == 1 {
        vendor::Entity::update_many()
            .col_expr(
                vendor::Column::Balance,
                Expr::col(vendor::Column::Balance).add(campaign.discount),
            )
            .filter(vendor::Column::Id.eq(campaign.vendor_id))
            .exec(txn)
            .await?;
    }
    Ok(Ok(Paid {
        coupon_id: campaign.id,
        vendor_id: campaign.vendor_id,
        amount: campaign.discount,
    }))
}

impl EventHandler for CouponRedeemer {
    fn name(&self) -> &'static str {
        "coupon-redemptions"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::COUPON_REDEMPTION_REQUESTED
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        envelope: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let request: CouponRedemptionRequested =
                serde_json::from_value(envelope.payload.clone())?;
            let Some(job) = coupon_job::Entity::find_by_id(request.job_id)
                .one(txn)
                .await?
            else {
                anyhow::bail!("redemption job {} does not exist", request.job_id);
            };
            if job.status != JobStatus::Pending.as_str() {
                return Ok(());
            }
            let outcome = redeem(txn, &request).await?;
            let now = Utc::now();
            let mut update = job.into_active_model();
            update.finished_at = Set(Some(now));
            let finished = match &outcome {
                Ok(paid) => {
                    update.status = Set(JobStatus::Succeeded.as_str().into());
                    metrics::counter!("coupon_redemptions_total", "result" => "succeeded")
                        .increment(1);
                    CouponRedemptionFinished {
                        job_id: request.job_id,
                        user_id: request.user_id,
                        user_coupon_id: request.user_coupon_id,
                        status: JobStatus::Succeeded.as_str().into(),
                        reason: None,
                        coupon_id: Some(paid.coupon_id),
                        vendor_id: Some(paid.vendor_id),
                        amount: paid.amount,
                    }
                }
                Err(reason) => {
                    update.status = Set(JobStatus::Failed.as_str().into());
                    update.reason = Set(Some(reason.code().into()));
                    metrics::counter!("coupon_redemptions_total", "result" => reason.code())
                        .increment(1);
                    CouponRedemptionFinished {
                        job_id: request.job_id,
                        user_id: request.user_id,
                        user_coupon_id: request.user_coupon_id,
                        status: JobStatus::Failed.as_str().into(),
                        reason: Some(reason.code().into()),
                        coupon_id: None,
                        vendor_id: None,
                        amount: 0,
                    }
                }
            };
            update.update(txn).await?;
            let event = NewEvent::new(
                types::COUPON_REDEMPTION_FINISHED,
                "coupon_job",
                request.job_id,
                &finished,
            );
            append_events(txn, vec![event], now).await?;
            Ok(())
        }
        .boxed()
    }
}
