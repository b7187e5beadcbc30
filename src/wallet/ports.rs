use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{EntryKind, LedgerEntry, WalletError};
use crate::{
    kernel::{
        Clock, PageRequest, PaymentId, Points, StoreError, UnitOfWork, UserId, events::RelayWake,
        idempotency::IdempotencyTx,
    },
    outbox::ports::OutboxWriter,
};

/// The adapters the wallet's use cases run over, named once: the
/// composition root picks them (`app::services`), tests pick fakes.
pub trait WalletPorts: Clone + Send + Sync + 'static {
    /// A charge, its event and its key commit together.
    type Uow: UnitOfWork<Tx: WalletTx + OutboxWriter + IdempotencyTx>;
    type Repo: WalletRepository;
    type Clock: Clock;
    type Wake: RelayWake;
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
    /// Adds `amount` (a charge or a refund); the new balance, or `None`
    /// when it would pass the cap (nothing changed then).
    fn credit(
        &mut self,
        user: UserId,
        amount: Points,
        kind: EntryKind,
        payment: Option<PaymentId>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Points>, StoreError>> + Send;

    /// Takes `amount` for a payment; the new balance, or `None` when the
    /// balance does not cover it (nothing changed then).
    fn debit(
        &mut self,
        user: UserId,
        amount: Points,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Points>, StoreError>> + Send;
}
