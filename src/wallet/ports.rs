use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{LedgerEntry, Posting, WalletError};
use crate::{
    kernel::{
        Clock, PageRequest, Points, StoreError, UnitOfWork, UserId, events::RelayWake,
        idempotency::IdempotencyTx,
    },
    outbox::ports::OutboxWriter,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the wallet's use cases run over, named once: the
    /// composition root picks them (`app::services`), tests pick fakes.
    pub trait WalletPorts for WalletAdapters<U, R, C, W> {
        /// A charge, its event and its key commit together.
        type Uow: UnitOfWork<Tx: WalletTx + OutboxWriter + IdempotencyTx>;
        type Repo: WalletRepository;
        type Clock: Clock;
        type Wake: RelayWake;
    }
}

pub trait WalletRepository: Clone + Send + Sync + 'static {
    /// Zero for a user who never charged.
    fn balance(&self, user: UserId) -> impl Future<Output = Result<Points, WalletError>> + Send;

    /// Up to `page.fetch()` of the user's ledger rows, newest first, older
    /// than the row `page.after`.
    fn entries(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, WalletError>> + Send;
}

/// Wallets inside a unit of work. Each change is one conditional update of
/// the balance plus its ledger row, so concurrent changes add up exactly
/// and a balance never goes below zero or past [`Points::MAX`].
pub trait WalletTx: Send {
    /// Adds a charge's or a refund's amount; the new balance, or `None`
    /// when it would pass the cap (nothing changed then).
    fn credit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Points>, StoreError>> + Send;

    /// Takes a payment's amount ([`Posting::payment`]); the new balance, or
    /// `None` when the balance does not cover it (nothing changed then).
    fn debit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Points>, StoreError>> + Send;
}
