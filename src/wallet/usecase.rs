use super::{
    domain::{ChargeAmount, EntryKind, LedgerEntry, MAX_PAGE, WalletError},
    ports::{WalletRepository, WalletTx},
};
use crate::{
    kernel::{
        Clock, Points, Transaction, UnitOfWork, UserId,
        events::{NewEvent, RelayWake, WalletCharged, types},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
};

#[derive(Clone)]
pub struct WalletService<U, R, C, W> {
    uow: U,
    repo: R,
    clock: C,
    wake: W,
}

/// A page of ledger entries and the cursor of the next page.
pub struct Page {
    pub entries: Vec<LedgerEntry>,
    pub next_cursor: Option<i64>,
}

impl<U, R, C, W> WalletService<U, R, C, W>
where
    U: UnitOfWork,
    U::Tx: WalletTx + OutboxWriter,
    R: WalletRepository,
    C: Clock,
    W: RelayWake,
{
    pub fn new(uow: U, repo: R, clock: C, wake: W) -> Self {
        Self {
            uow,
            repo,
            clock,
            wake,
        }
    }

    pub async fn balance(&self, user: UserId) -> Result<Points, WalletError> {
        self.repo.balance(user).await
    }

    /// Adds points and writes `WalletCharged`, in one transaction.
    pub async fn charge(&self, user: UserId, amount: i64) -> Result<Points, WalletError> {
        let amount = ChargeAmount::parse(amount)?;
        let balance = retry_on_conflict(|| self.charge_once(user, amount)).await?;
        self.wake.wake();
        Ok(balance)
    }

    async fn charge_once(&self, user: UserId, amount: ChargeAmount) -> Result<Points, WalletError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let Some(balance) = tx
            .credit(user, amount.points(), EntryKind::Charge, None, now)
            .await?
        else {
            return Err(WalletError::BalanceLimit);
        };
        let event = NewEvent::new(
            types::WALLET_CHARGED,
            "wallet",
            user,
            &WalletCharged {
                user_id: user.value(),
                amount: amount.points().value(),
                balance_after: balance.value(),
            },
        );
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(balance)
    }

    pub async fn transactions(
        &self,
        user: UserId,
        cursor: Option<i64>,
        limit: u64,
    ) -> Result<Page, WalletError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let entries = self.repo.entries(user, cursor, limit).await?;
        let next_cursor = (entries.len() as u64 == limit)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        Ok(Page {
            entries,
            next_cursor,
        })
    }
}
