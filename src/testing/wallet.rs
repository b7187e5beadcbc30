//! Wallets in the world: balances and their ledger, the wallet transaction
//! port and the wallet reads.

use chrono::{DateTime, Utc};

use super::{MemTx, MemoryUow, World, newest_first};
use crate::{
    kernel::{PageRequest, PaymentId, Points, StoreError, UserId},
    wallet::{
        domain::{EntryKind, LedgerEntry, WalletError},
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
    fn book(
        &mut self,
        user: UserId,
        kind: EntryKind,
        amount: i64,
        after: Points,
        payment: Option<PaymentId>,
        now: DateTime<Utc>,
    ) {
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
        user: UserId,
        amount: Points,
        kind: EntryKind,
        payment: Option<PaymentId>,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let Some(after) = self.work.points(user).checked_add(amount) else {
            return Ok(None);
        };
        self.work
            .book(user, kind, amount.value(), after, payment, now);
        Ok(Some(after))
    }

    async fn debit(
        &mut self,
        user: UserId,
        amount: Points,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let balance = self.work.balance(user);
        if balance < amount.value() {
            return Ok(None);
        }
        let after = Points::new(balance - amount.value()).expect("not negative");
        self.work.book(
            user,
            EntryKind::Payment,
            -amount.value(),
            after,
            Some(payment),
            now,
        );
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
