pub mod db;
#[cfg(feature = "bench-strategies")]
pub mod locks;
pub mod memory;
pub mod reconciler;
pub mod redemption_tx;
pub mod redis;
pub mod winner_queue;

use chrono::{DateTime, Utc};

use crate::{
    coupon::{
        domain::{CouponError, LedgerEntry, LedgerSnapshot, LedgerStep},
        ports::CouponLedger,
    },
    kernel::{CouponId, UserId},
    redis_or_memory::{RedisOrMemory, dispatch},
};

/// The ledger the composition root picked: Redis in production, in-process
/// in the embedded shape.
pub type AnyCouponLedger = RedisOrMemory<redis::RedisCouponLedger, memory::MemoryCouponLedger>;

impl<R: CouponLedger, M: CouponLedger> CouponLedger for RedisOrMemory<R, M> {
    async fn issue(
        &self,
        coupon: CouponId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<LedgerStep, CouponError> {
        dispatch!(self, l => l.issue(coupon, user, now).await)
    }

    async fn revoke(
        &self,
        coupon: CouponId,
        user: UserId,
        number: u32,
        free_number: bool,
    ) -> Result<bool, CouponError> {
        dispatch!(self, l => l.revoke(coupon, user, number, free_number).await)
    }

    async fn load(
        &self,
        coupon: CouponId,
        quantity: u32,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        dispatch!(self, l => l.load(coupon, quantity, holders).await)
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        dispatch!(self, l => l.snapshot(coupon).await)
    }

    async fn repair(
        &self,
        coupon: CouponId,
        add: &[(UserId, u32)],
        remove: &[LedgerEntry],
    ) -> Result<(), CouponError> {
        dispatch!(self, l => l.repair(coupon, add, remove).await)
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        dispatch!(self, l => l.issued(coupon).await)
    }

    async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
        dispatch!(self, l => l.issued_many(coupons).await)
    }
}
