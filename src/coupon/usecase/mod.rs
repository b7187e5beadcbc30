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
pub use winners::RecordWinner;

use self::{campaigns::CampaignCache, sold_out::SoldOutMemo};
use super::ports::{CouponIssuer, CouponPorts};
use crate::kernel::{CouponId, keyed::KeyedLocks};

/// The adapters the service and the ledger's issuer both run over.
#[derive(Clone)]
pub struct CouponAdapters<P: CouponPorts> {
    pub uow: P::Uow,
    pub repo: P::Repo,
    pub ledger: P::Ledger,
    pub clock: P::Clock,
}

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
        adapters: CouponAdapters<P>,
        wake: P::Wake,
        grace: TimeDelta,
        issuer: Arc<dyn CouponIssuer>,
    ) -> Self {
        let CouponAdapters {
            uow,
            repo,
            ledger,
            clock,
        } = adapters;
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
