//! The coupon room's flows: first-come-first-served issue (its sold-out
//! memory, the ledger's issuer and the winners' writer), the ledger's
//! reconciler, redemption, and the admin's vendors and campaigns.

mod campaigns;
#[cfg(test)]
mod fake;
mod issue;
mod ledger_issuer;
mod reconcile;
mod redeem;
mod sold_out;
mod winners;

use std::sync::Arc;

use chrono::TimeDelta;

pub use ledger_issuer::LedgerIssuer;
pub use redeem::{CouponRedeemer, Redemption, redeem};
pub use sold_out::holders_by_rows;
pub use winners::{record_winner, record_winners};

use self::{campaigns::CampaignCache, sold_out::SoldOutMemo};
use super::ports::{CouponIssuer, CouponPorts};
use crate::kernel::{CouponId, keyed::KeyedLocks};

#[derive(Clone)]
pub struct CouponService<P: CouponPorts> {
    uow: P::Uow,
    repo: P::Repo,
    ledger: P::Ledger,
    clock: P::Clock,
    wake: P::Wake,
    /// Campaigns never change, so the flood is answered without reading them.
    campaigns: CampaignCache,
    /// One reconciler rebuild per campaign at a time in this instance.
    rebuilds: KeyedLocks<CouponId>,
    /// Ledger entries without a row younger than this may still be writing.
    grace: TimeDelta,
    /// Campaigns this instance just saw sold out, with who held them then.
    sold_out: SoldOutMemo,
    /// Decides who wins and writes the winners.
    issuer: Arc<dyn CouponIssuer>,
}

impl<P: CouponPorts> CouponService<P> {
    /// `issuer` decides the issues: a [`LedgerIssuer`] over the same
    /// ledger in a release.
    pub fn new(
        uow: P::Uow,
        repo: P::Repo,
        ledger: P::Ledger,
        clock: P::Clock,
        wake: P::Wake,
        grace: TimeDelta,
        issuer: Arc<dyn CouponIssuer>,
    ) -> Self {
        Self {
            uow,
            repo,
            ledger,
            clock,
            wake,
            campaigns: CampaignCache::default(),
            rebuilds: KeyedLocks::default(),
            grace,
            sold_out: SoldOutMemo::default(),
            issuer,
        }
    }
}
