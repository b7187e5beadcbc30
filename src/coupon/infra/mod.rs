pub mod consumer;
pub mod db;
pub mod memory;
pub mod reconciler;
pub mod redis;

use chrono::{DateTime, Utc};

use crate::{
    coupon::{
        domain::{CouponError, LedgerEntry, LedgerSnapshot, LedgerStep},
        ports::CouponLedger,
    },
    kernel::{CouponId, UserId},
};

/// The ledger the composition root picked: Redis in production, in-process
/// in the embedded shape.
#[derive(Clone)]
pub enum AnyCouponLedger {
    Redis(redis::RedisCouponLedger),
    Memory(memory::MemoryCouponLedger),
}

macro_rules! delegate {
    ($self:ident, $ledger:ident => $call:expr) => {
        match $self {
            AnyCouponLedger::Redis($ledger) => $call,
            AnyCouponLedger::Memory($ledger) => $call,
        }
    };
}

impl CouponLedger for AnyCouponLedger {
    async fn issue(
        &self,
        coupon: CouponId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<LedgerStep, CouponError> {
        delegate!(self, l => l.issue(coupon, user, now).await)
    }

    async fn revoke(
        &self,
        coupon: CouponId,
        user: UserId,
        number: u32,
        free_number: bool,
    ) -> Result<bool, CouponError> {
        delegate!(self, l => l.revoke(coupon, user, number, free_number).await)
    }

    async fn load(
        &self,
        coupon: CouponId,
        quantity: u32,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        delegate!(self, l => l.load(coupon, quantity, holders).await)
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        delegate!(self, l => l.snapshot(coupon).await)
    }

    async fn repair(
        &self,
        coupon: CouponId,
        add: &[(UserId, u32)],
        remove: &[LedgerEntry],
    ) -> Result<(), CouponError> {
        delegate!(self, l => l.repair(coupon, add, remove).await)
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        delegate!(self, l => l.issued(coupon).await)
    }
}
