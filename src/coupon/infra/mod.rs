pub mod db;
#[cfg(feature = "bench-strategies")]
pub mod locks;
pub mod memory;
pub mod reconciler;
pub mod redemption_tx;
pub mod redis;
pub mod winner_queue;

use crate::{
    coupon::{
        domain::{Campaign, CouponError, LedgerDrift, LedgerSnapshot, LedgerStep, Winner},
        ports::{CouponLedger, IssueRequest},
    },
    kernel::{CouponId, UserId},
    redis_or_memory::{RedisOrMemory, dispatch},
};

/// The ledger the composition root picked: Redis in production, in-process
/// in the embedded shape.
pub type AnyCouponLedger = RedisOrMemory<redis::RedisCouponLedger, memory::MemoryCouponLedger>;

impl<R: CouponLedger, M: CouponLedger> CouponLedger for RedisOrMemory<R, M> {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<LedgerStep, CouponError> {
        dispatch!(self, l => l.issue(request).await)
    }

    async fn revoke(&self, winner: &Winner, free_number: bool) -> Result<bool, CouponError> {
        dispatch!(self, l => l.revoke(winner, free_number).await)
    }

    async fn load(
        &self,
        campaign: &Campaign,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        dispatch!(self, l => l.load(campaign, holders).await)
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        dispatch!(self, l => l.snapshot(coupon).await)
    }

    async fn repair(&self, coupon: CouponId, drift: &LedgerDrift) -> Result<(), CouponError> {
        dispatch!(self, l => l.repair(coupon, drift).await)
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        dispatch!(self, l => l.issued(coupon).await)
    }

    async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
        dispatch!(self, l => l.issued_many(coupons).await)
    }
}
