use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{ChargeAmount, LedgerEntry, WalletError};
use crate::kernel::{Points, UserId};

pub trait WalletRepository: Clone + Send + Sync + 'static {
    /// Zero for a user who never charged.
    fn balance(&self, user: UserId) -> impl Future<Output = Result<Points, WalletError>> + Send;

    /// Adds the amount and its ledger row atomically; returns the new balance.
    fn charge(
        &self,
        user: UserId,
        amount: ChargeAmount,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Points, WalletError>> + Send;

    /// Newest first, ids below `before` when given.
    fn entries(
        &self,
        user: UserId,
        before: Option<i64>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, WalletError>> + Send;
}
