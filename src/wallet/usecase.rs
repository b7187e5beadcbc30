use super::{
    domain::{ChargeAmount, LedgerEntry, MAX_PAGE, WalletError},
    ports::WalletRepository,
};
use crate::kernel::{Clock, Points, UserId, events::RelayWake};

#[derive(Clone)]
pub struct WalletService<R, C, W> {
    repo: R,
    clock: C,
    wake: W,
}

/// A page of ledger entries and the cursor of the next page.
pub struct Page {
    pub entries: Vec<LedgerEntry>,
    pub next_cursor: Option<i64>,
}

impl<R: WalletRepository, C: Clock, W: RelayWake> WalletService<R, C, W> {
    pub fn new(repo: R, clock: C, wake: W) -> Self {
        Self { repo, clock, wake }
    }

    pub async fn balance(&self, user: UserId) -> Result<Points, WalletError> {
        self.repo.balance(user).await
    }

    pub async fn charge(&self, user: UserId, amount: i64) -> Result<Points, WalletError> {
        let amount = ChargeAmount::parse(amount)?;
        let balance = self.repo.charge(user, amount, self.clock.now()).await?;
        self.wake.wake();
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
