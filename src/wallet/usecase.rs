use super::{
    domain::{ChargeAmount, LedgerEntry, MAX_PAGE, Posting, WalletError},
    ports::{WalletPorts, WalletRepository, WalletTx},
};
use crate::{
    kernel::{
        Clock, Page, PageRequest, Points, UnitOfWork, UserId,
        events::{NewEvent, RelayWake, WalletCharged, types},
        idempotency::{self, RequestKey},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
};

#[derive(Clone)]
pub struct WalletService<P: WalletPorts> {
    uow: P::Uow,
    repo: P::Repo,
    clock: P::Clock,
    wake: P::Wake,
}

impl<P: WalletPorts> WalletService<P> {
    pub fn new(uow: P::Uow, repo: P::Repo, clock: P::Clock, wake: P::Wake) -> Self {
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

    /// Adds points and writes `WalletCharged`, in one transaction. With a
    /// key, a retry of a charge that happened answers the balance it
    /// answered then, and charges nothing.
    pub async fn charge(
        &self,
        user: UserId,
        amount: i64,
        key: Option<&RequestKey>,
    ) -> Result<Points, WalletError> {
        let amount = ChargeAmount::parse(amount)?;
        let balance = retry_on_conflict(|| self.charge_once(user, amount, key)).await?;
        self.wake.wake();
        Ok(balance)
    }

    async fn charge_once(
        &self,
        user: UserId,
        amount: ChargeAmount,
        key: Option<&RequestKey>,
    ) -> Result<Points, WalletError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        if let Some(first) = idempotency::claim(&mut tx, key, now).await? {
            return Ok(first);
        }
        let Some(balance) = tx
            .credit(Posting::charge(user, amount.points()), now)
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
        idempotency::finish(tx, key, &balance).await?;
        Ok(balance)
    }

    /// A page of the user's ledger, newest first.
    pub async fn transactions(
        &self,
        user: UserId,
        asked: PageRequest,
    ) -> Result<Page<LedgerEntry>, WalletError> {
        let read = |page| self.repo.entries(user, page);
        asked.read(MAX_PAGE, read, |e| e.id).await
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Fault;

    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        kernel::{CONFLICT_ATTEMPTS, ManualClock},
        testing::{MemoryUow, Wakes},
        wallet::{
            domain::{EntryKind, MAX_CHARGE},
            ports::WalletAdapters,
        },
    };

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// The in-memory unit of work and its ledger, with the helpers these
    /// tests read it through.
    type FakeRepo = MemoryUow;

    trait LedgerView {
        fn rows(&self) -> Vec<(UserId, LedgerEntry)>;
        fn set_balance(&self, user: UserId, balance: i64);
    }

    impl LedgerView for MemoryUow {
        fn rows(&self) -> Vec<(UserId, LedgerEntry)> {
            self.world()
                .ledger
                .iter()
                .map(|(user, entry, _)| (*user, entry.clone()))
                .collect()
        }

        fn set_balance(&self, user: UserId, balance: i64) {
            self.world()
                .balances
                .insert(user, Points::new(balance).unwrap());
        }
    }

    /// The wallet's ports as these tests fake them.
    type Fakes = WalletAdapters<MemoryUow, FakeRepo, ManualClock, Wakes>;

    struct Harness {
        service: WalletService<Fakes>,
        repo: FakeRepo,
        clock: ManualClock,
        wake: Wakes,
    }

    fn harness() -> Harness {
        let repo = FakeRepo::default();
        let clock = ManualClock::new(t0());
        let wake = Wakes::default();
        Harness {
            service: WalletService::new(repo.clone(), repo.clone(), clock.clone(), wake.clone()),
            repo,
            clock,
            wake,
        }
    }

    impl Harness {
        fn wakes(&self) -> u32 {
            self.wake.count()
        }

        /// A page of `user`'s ledger, which must be read.
        async fn page(&self, user: UserId, after: Option<i64>, limit: u64) -> Page<LedgerEntry> {
            self.service
                .transactions(user, PageRequest::asked(after, limit))
                .await
                .unwrap()
        }

        async fn charges(&self, user: UserId, amounts: &[i64]) {
            for &amount in amounts {
                self.service.charge(user, amount, None).await.unwrap();
            }
        }
    }

    fn ids(page: &Page<LedgerEntry>) -> Vec<i64> {
        page.items.iter().map(|e| e.id).collect()
    }

    // --- balance ---

    #[tokio::test]
    async fn a_user_who_never_charged_has_nothing() {
        let h = harness();
        assert_eq!(h.service.balance(ALICE).await.unwrap(), Points::ZERO);
    }

    #[tokio::test]
    async fn the_balance_is_the_users_own() {
        let h = harness();
        h.charges(ALICE, &[300, 200]).await;
        h.charges(BOB, &[7]).await;
        assert_eq!(h.service.balance(ALICE).await.unwrap().value(), 500);
        assert_eq!(h.service.balance(BOB).await.unwrap().value(), 7);
    }

    #[tokio::test]
    async fn the_balance_cannot_be_read_while_the_database_is_down() {
        let h = harness();
        h.repo.set_down(true);
        assert!(matches!(
            h.service.balance(ALICE).await,
            Err(WalletError::Fault(Fault::Unavailable(_)))
        ));
    }

    // --- charge ---

    #[tokio::test]
    async fn a_charge_adds_a_ledger_row_at_the_clock_time_and_wakes_the_relay() {
        let h = harness();
        h.clock.advance(TimeDelta::seconds(9));
        let balance = h.service.charge(ALICE, 1_500, None).await.unwrap();

        assert_eq!(balance.value(), 1_500);
        let rows = h.repo.rows();
        assert_eq!(rows.len(), 1);
        let (user, entry) = &rows[0];
        assert_eq!(*user, ALICE);
        assert_eq!(entry.kind, EntryKind::Charge);
        assert_eq!(entry.amount, 1_500);
        assert_eq!(entry.balance_after.value(), 1_500);
        assert_eq!(entry.created_at, t0() + TimeDelta::seconds(9));
        assert_eq!(h.wakes(), 1);
    }

    fn charge_key(amount: i64, key: &str) -> RequestKey {
        RequestKey::new(ALICE, "wallet.charge", key, &amount).unwrap()
    }

    #[tokio::test]
    async fn a_retried_key_answers_the_first_balance_and_charges_once() {
        let h = harness();
        let key = charge_key(100, "c");
        let first = h.service.charge(ALICE, 100, Some(&key)).await.unwrap();
        h.charges(ALICE, &[50]).await;
        let again = h.service.charge(ALICE, 100, Some(&key)).await.unwrap();
        assert_eq!(again, first, "the balance of then, not of now");
        assert_eq!(h.service.balance(ALICE).await.unwrap().value(), 150);
        assert_eq!(h.repo.rows().len(), 2);
        assert!(matches!(
            h.service
                .charge(ALICE, 200, Some(&charge_key(200, "c")))
                .await,
            Err(WalletError::Fault(Fault::KeyReused))
        ));
        assert_eq!(h.service.balance(ALICE).await.unwrap().value(), 150);
    }

    #[tokio::test]
    async fn a_charge_that_fails_before_its_commit_leaves_its_key_free() {
        let h = harness();
        let key = charge_key(100, "c");
        h.repo.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.service.charge(ALICE, 100, Some(&key)).await,
            Err(WalletError::Fault(Fault::Conflict(_)))
        ));
        assert!(h.repo.world().keys.is_empty());
        assert_eq!(
            h.service
                .charge(ALICE, 100, Some(&key))
                .await
                .unwrap()
                .value(),
            100
        );
        assert_eq!(h.repo.rows().len(), 1);
    }

    #[tokio::test]
    async fn charges_add_up_and_answer_the_new_balance() {
        let h = harness();
        assert_eq!(
            h.service.charge(ALICE, 100, None).await.unwrap().value(),
            100
        );
        assert_eq!(
            h.service.charge(ALICE, 250, None).await.unwrap().value(),
            350
        );
        assert_eq!(h.wakes(), 2);
    }

    #[tokio::test]
    async fn the_largest_single_charge_is_accepted() {
        let h = harness();
        assert_eq!(
            h.service
                .charge(ALICE, MAX_CHARGE, None)
                .await
                .unwrap()
                .value(),
            MAX_CHARGE
        );
    }

    #[tokio::test]
    async fn an_invalid_amount_is_refused_before_the_ledger_is_touched() {
        let h = harness();
        for amount in [0, -1, i64::MIN, MAX_CHARGE + 1, i64::MAX] {
            assert!(
                matches!(
                    h.service.charge(ALICE, amount, None).await,
                    Err(WalletError::InvalidAmount(_))
                ),
                "{amount}"
            );
        }
        assert!(h.repo.rows().is_empty());
        assert_eq!(h.wakes(), 0);
    }

    #[tokio::test]
    async fn a_charge_past_the_balance_limit_is_refused_and_wakes_nobody() {
        let h = harness();
        h.repo.set_balance(ALICE, Points::MAX - 10);
        assert!(matches!(
            h.service.charge(ALICE, 11, None).await,
            Err(WalletError::BalanceLimit)
        ));
        assert_eq!(
            h.service.balance(ALICE).await.unwrap().value(),
            Points::MAX - 10
        );
        assert_eq!(h.wakes(), 0);
        assert_eq!(
            h.service.charge(ALICE, 10, None).await.unwrap().value(),
            Points::MAX
        );
    }

    #[tokio::test]
    async fn a_charge_while_the_database_is_down_is_unavailable_and_wakes_nobody() {
        let h = harness();
        h.repo.set_down(true);
        assert!(matches!(
            h.service.charge(ALICE, 10, None).await,
            Err(WalletError::Fault(Fault::Unavailable(_)))
        ));
        assert_eq!(h.wakes(), 0);
    }

    // --- transactions ---

    #[tokio::test]
    async fn a_full_page_points_to_the_next_and_a_short_page_ends_the_list() {
        let h = harness();
        h.charges(ALICE, &[1, 2, 3, 4, 5]).await;

        let first = h.page(ALICE, None, 2).await;
        assert_eq!(ids(&first), vec![5, 4]);
        assert_eq!(first.next_cursor, Some(4));

        let second = h.page(ALICE, first.next_cursor, 2).await;
        assert_eq!(ids(&second), vec![3, 2]);
        assert_eq!(second.next_cursor, Some(2));

        let last = h.page(ALICE, second.next_cursor, 2).await;
        assert_eq!(ids(&last), vec![1]);
        assert_eq!(last.next_cursor, None);

        let exact = h.page(ALICE, None, 5).await;
        assert_eq!(ids(&exact), vec![5, 4, 3, 2, 1]);
        assert_eq!(exact.next_cursor, None, "a full last page ends the list");
    }

    #[tokio::test]
    async fn a_page_lists_only_the_callers_rows() {
        let h = harness();
        h.charges(ALICE, &[1]).await;
        h.charges(BOB, &[2, 3]).await;
        let page = h.page(ALICE, None, 10).await;
        assert_eq!(ids(&page), vec![1]);
        assert_eq!(page.next_cursor, None);
    }

    #[tokio::test]
    async fn an_empty_ledger_is_one_empty_page() {
        let h = harness();
        let page = h.page(ALICE, None, 10).await;
        assert!(page.items.is_empty());
        assert_eq!(page.next_cursor, None);
    }

    #[tokio::test]
    async fn the_page_size_is_kept_between_one_and_the_maximum() {
        let h = harness();
        h.charges(ALICE, &[1; MAX_PAGE as usize + 5]).await;
        let single = h.page(ALICE, None, 0).await;
        assert_eq!(ids(&single), vec![MAX_PAGE as i64 + 5]);
        assert_eq!(single.next_cursor, Some(MAX_PAGE as i64 + 5));
        for limit in [MAX_PAGE + 1, u64::MAX] {
            let page = h.page(ALICE, None, limit).await;
            assert_eq!(page.items.len() as u64, MAX_PAGE);
        }
    }

    #[tokio::test]
    async fn transactions_cannot_be_read_while_the_database_is_down() {
        let h = harness();
        h.repo.set_down(true);
        assert!(matches!(
            h.service
                .transactions(ALICE, PageRequest::asked(None, 10))
                .await,
            Err(WalletError::Fault(Fault::Unavailable(_)))
        ));
    }
}
