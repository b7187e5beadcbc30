//! Wallets in the world: balances and their ledger, the wallet transaction
//! port and the wallet reads.

use chrono::{DateTime, Utc};

use super::{MemTx, MemoryUow, World, newest_first};
use crate::{
    kernel::{PageRequest, Points, StoreError, UserId},
    wallet::{
        domain::{LedgerEntry, Posting, WalletError},
        ports::{WalletRepository, WalletTx},
    },
};

impl World {
    pub fn balance(&self, user: UserId) -> i64 {
        self.points(user).value()
    }

    fn points(&self, user: UserId) -> Points {
        self.balances.get(&user).copied().unwrap_or(Points::ZERO)
    }

    /// Sets the user's balance and writes the ledger row that explains it.
    fn book(&mut self, posting: Posting, amount: i64, after: Points, now: DateTime<Utc>) {
        let Posting {
            user,
            kind,
            payment,
            ..
        } = posting;
        self.balances.insert(user, after);
        let id = self.next_id();
        self.ledger.push((
            user,
            LedgerEntry {
                id,
                kind,
                amount,
                balance_after: after,
                created_at: now,
            },
            payment,
        ));
    }
}

impl WalletTx for MemTx {
    async fn credit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let amount = posting.amount;
        let Some(after) = self.work.points(posting.user).checked_add(amount) else {
            return Ok(None);
        };
        self.work.book(posting, amount.value(), after, now);
        Ok(Some(after))
    }

    async fn debit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let (balance, amount) = (self.work.balance(posting.user), posting.amount.value());
        if balance < amount {
            return Ok(None);
        }
        let after = Points::new(balance - amount).expect("not negative");
        self.work.book(posting, -amount, after, now);
        Ok(Some(after))
    }
}

impl WalletRepository for MemoryUow {
    async fn balance(&self, user: UserId) -> Result<Points, WalletError> {
        self.check()?;
        Ok(self.world().points(user))
    }

    async fn entries(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        self.check()?;
        let world = self.world();
        let theirs = (world.ledger.iter())
            .filter(|(owner, _, _)| *owner == user)
            .map(|(_, entry, _)| entry.clone());
        Ok(newest_first(theirs, |entry| entry.id, page))
    }
}
