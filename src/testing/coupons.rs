//! Coupons in the world: the winners' writes and the request side of a
//! redemption.

use chrono::{DateTime, Utc};

use super::MemTx;
use crate::{
    coupon::{
        domain::{FailReason, IssuedCoupon, Job, JobStatus, RecordError, RedeemableCoupon, Winner},
        ports::{IssueTx, RedemptionTx},
    },
    kernel::{StoreError, UserCouponId, VendorId},
};

impl IssueTx for MemTx {
    async fn insert_winners(
        &mut self,
        winners: &[Winner],
        _: DateTime<Utc>,
    ) -> Result<Vec<IssuedCoupon>, RecordError> {
        let mut written = Vec::new();
        for winner in winners {
            let same_coupon = |won: &IssuedCoupon| won.coupon == winner.coupon;
            if self
                .work
                .won
                .iter()
                .any(|won| same_coupon(won) && won.user == winner.user)
            {
                return Err(RecordError::DuplicateUser);
            }
            if self
                .work
                .won
                .iter()
                .any(|won| same_coupon(won) && won.number == winner.number)
            {
                return Err(RecordError::DuplicateNumber);
            }
            let row = IssuedCoupon {
                id: UserCouponId(self.work.next_id()),
                coupon: winner.coupon,
                user: winner.user,
                number: winner.number,
            };
            self.work.won.push(row.clone());
            written.push(row);
        }
        Ok(written)
    }
}

/// Only the request side of a redemption lives here (the step's own tests
/// use a smaller fake).
impl RedemptionTx for MemTx {
    async fn insert_job(&mut self, job: &Job, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        self.work.jobs.insert(job.id, job.clone());
        Ok(())
    }

    async fn job(&mut self, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
        self.check()?;
        Ok(self.work.jobs.get(&id).cloned())
    }

    async fn redeemable(
        &mut self,
        _: UserCouponId,
    ) -> Result<Option<RedeemableCoupon>, StoreError> {
        Ok(None)
    }

    async fn mark_used(
        &mut self,
        _: UserCouponId,
        _: i64,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn pay_vendor(
        &mut self,
        _: VendorId,
        _: UserCouponId,
        _: uuid::Uuid,
        _: i64,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn finish_job(
        &mut self,
        job: uuid::Uuid,
        status: JobStatus,
        reason: Option<FailReason>,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check()?;
        if let Some(job) = self.work.jobs.get_mut(&job) {
            job.status = status;
            job.reason = reason;
        }
        Ok(())
    }
}
