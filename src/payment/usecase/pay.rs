//! Paying for a hold: the buyer's hold read once, a keyed retry answered
//! from the first payment, the pay transaction, and the buyer's payments.

use chrono::TimeDelta;

use super::{PaymentService, from_reservations};
use crate::kernel::Fault;
use crate::{
    catalog::{domain::sales_closed, ports::SeatTx},
    kernel::{
        Clock, OrderId, Page, PageRequest, PaymentId, ReservationId, UnitOfWork, UserId,
        events::RelayWake,
        failpoint,
        idempotency::{self, RequestKey},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            CONFIRMATION_GRACE_MINUTES, MAX_PAGE, NewPayment, Payment, PaymentError, Purchase,
        },
        ports::{PaymentPorts, PaymentRepository, PaymentTx},
    },
    reservation::{domain::NotPayable, ports::ReservationRepository, usecase as reservations},
    wallet::{domain::Posting, ports::WalletTx},
};

impl<P: PaymentPorts> PaymentService<P> {
    /// The user's own hold, read once before paying: its user, seat,
    /// schedule, price and concert never change, so the waiting-room check
    /// and the pay transaction both work from this copy.
    pub async fn hold_of(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Purchase, PaymentError> {
        self.reservations
            .get(reservation)
            .await
            .map_err(from_reservations)?
            .filter(|hold| hold.user == user)
            .map(Purchase::of_hold)
            .ok_or(PaymentError::ReservationNotFound(reservation))
    }

    /// The payment a request with `key` already made, if one did: a retry
    /// gets it back even though its queue token was finished by it.
    pub async fn replay(&self, key: Option<&RequestKey>) -> Result<Option<Payment>, PaymentError> {
        Ok(idempotency::replay(&self.uow, key).await?)
    }

    /// What paying for the user's order buys: its seats still held.
    pub async fn order_of(&self, user: UserId, order: OrderId) -> Result<Purchase, PaymentError> {
        let found = self
            .reservations
            .order(order)
            .await
            .map_err(from_reservations)?
            .ok_or(PaymentError::OrderNotFound(order))?;
        Purchase::of_order(&found, user, self.clock.now())
    }

    /// In one transaction: claim every hold of the purchase, record one
    /// payment for them all, take their price from the wallet and write
    /// `PaymentCompleted`. With a key, a retry of a payment that happened
    /// answers that payment as it was then, and takes nothing.
    pub async fn pay(
        &self,
        purchase: &Purchase,
        key: Option<&RequestKey>,
    ) -> Result<Payment, PaymentError> {
        let payment = retry_on_conflict(|| self.pay_once(purchase, key)).await?;
        self.wake.wake();
        metrics::counter!("payments_total").increment(1);
        Ok(payment)
    }

    async fn pay_once(
        &self,
        purchase: &Purchase,
        key: Option<&RequestKey>,
    ) -> Result<Payment, PaymentError> {
        let user = purchase.user;
        let Some(first) = purchase.seats.first() else {
            return Err(PaymentError::InvalidRequest("nothing to pay for".into()));
        };
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The key is the first row written: a retry with it waits here.
        if let Some(first) = idempotency::claim(&mut tx, key, now).await? {
            return Ok(first);
        }
        // Dropping the transaction on any refusal undoes everything below.
        let keep_seat_until = now + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES);
        for hold in &purchase.seats {
            let id = hold.id;
            match reservations::claim_for_payment(&mut tx, hold, user, keep_seat_until, now).await?
            {
                Ok(()) => {}
                Err(NotPayable::NotFound) => return Err(PaymentError::ReservationNotFound(id)),
                Err(NotPayable::Expired) => return Err(PaymentError::HoldExpired(id)),
                Err(NotPayable::AlreadyPaid) => return Err(PaymentError::AlreadyPaid(id)),
            }
        }
        // After the claims (the writes that take the locks first);
        // dropping the transaction undoes them.
        if tx
            .starts_at(purchase.schedule)
            .await?
            .is_some_and(|starts_at| sales_closed(starts_at, self.sales_close_before, now))
        {
            return Err(PaymentError::SalesClosed(purchase.schedule));
        }
        // Lets a test keep the seat and reservation locked here while a
        // hold races.
        failpoint::step("payment::after_claim")
            .await
            .map_err(|cause| PaymentError::Fault(Fault::Unavailable(cause)))?;
        let amount = purchase.amount();
        let payment = tx
            .insert_payment(
                &NewPayment {
                    user,
                    reservation: first.id,
                    order: purchase.order,
                    concert: purchase.concert,
                    schedule: purchase.schedule,
                    amount,
                },
                now,
            )
            .await?;
        if tx
            .debit(Posting::payment(user, amount, payment.id), now)
            .await?
            .is_none()
        {
            return Err(PaymentError::InsufficientPoints);
        }
        for hold in &purchase.seats {
            reservations::mark_paid(&mut tx, hold.id, payment.id, now).await?;
        }
        tx.append(vec![payment.completed(&purchase.reservations())], now)
            .await?;
        failpoint::step("payment::before_commit")
            .await
            .map_err(|cause| PaymentError::Fault(Fault::Unavailable(cause)))?;
        idempotency::finish(tx, key, &payment).await?;
        Ok(payment)
    }

    /// The user's own payment; someone else's answers not found.
    pub async fn get(&self, id: PaymentId, user: UserId) -> Result<Payment, PaymentError> {
        match self.payments.get(id).await? {
            Some(payment) if payment.user == user => Ok(payment),
            _ => Err(PaymentError::NotFound(id)),
        }
    }

    /// A page of the user's own payments, newest first.
    pub async fn mine(
        &self,
        user: UserId,
        asked: PageRequest,
    ) -> Result<Page<Payment>, PaymentError> {
        let read = |page| self.payments.of_user(user, page);
        asked.read(MAX_PAGE, read, |p| p.id.value()).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        kernel::{CONFLICT_ATTEMPTS, ScheduleId, events::types},
        payment::{domain::PaymentStatus, usecase::fake::*},
        reservation::domain::ReservationStatus,
    };

    #[tokio::test]
    async fn paying_claims_the_hold_debits_the_wallet_and_writes_the_event_at_once() {
        let h = harness();
        let r = h.funded_hold(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Paid);
        assert_eq!(payment.amount.value(), PRICE);
        assert_eq!(h.balance(ALICE), 4_000);
        let world = h.store.world();
        assert_eq!(world.reservations[&r.id].payment, Some(payment.id));
        let (_, row, paid_for) = world.ledger.last().cloned().unwrap();
        assert_eq!((row.amount, paid_for), (-PRICE, Some(payment.id)));
        assert!(matches!(
            world.seats[&r.seat].state,
            crate::catalog::domain::SeatState::Held { until, .. }
                if until == h.clock.now() + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES)
        ));
        assert_eq!(world.event_types(), vec![types::PAYMENT_COMPLETED]);
        assert_eq!(world.outbox[0].payload["reservationId"], r.id.value());
        drop(world);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn too_few_points_refuses_the_payment_and_changes_nothing() {
        let h = harness();
        let r = h.funded_hold(ALICE, PRICE - 1);
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::InsufficientPoints)
        ));
        let world = h.store.world();
        assert!(world.payments.is_empty());
        assert_eq!(world.reservations[&r.id].payment, None);
        assert!(world.outbox.is_empty());
        assert_eq!(world.balance(ALICE), PRICE - 1);
        drop(world);
        assert_eq!(h.wakes.count(), 0);
    }

    #[tokio::test]
    async fn each_refusal_of_the_hold_has_its_own_answer() {
        let h = harness();
        let r = h.funded_hold(ALICE, 10_000);
        assert!(matches!(
            h.pay(BOB, r.id).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
        assert!(matches!(
            h.pay(ALICE, ReservationId(4_242)).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
        h.pay(ALICE, r.id).await.unwrap();
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::AlreadyPaid(_))
        ));
        let lapsed = h.held(ALICE);
        h.clock.advance(TimeDelta::minutes(5));
        assert!(matches!(
            h.pay(ALICE, lapsed.id).await,
            Err(PaymentError::HoldExpired(_))
        ));
        assert_eq!(h.balance(ALICE), 10_000 - PRICE, "only one payment taken");
    }

    #[tokio::test]
    async fn no_payment_once_sales_close_and_nothing_is_taken() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        h.store
            .world()
            .shows
            .insert(ScheduleId(3), h.clock.now() + TimeDelta::minutes(20));
        let hold = h.held(ALICE);
        let closing = h.payments.clone().with_sales_close(TimeDelta::minutes(30));
        let copy = closing.hold_of(ALICE, hold.id).await.unwrap();
        assert!(matches!(
            closing.pay(&copy, None).await,
            Err(PaymentError::SalesClosed(ScheduleId(3)))
        ));
        assert_eq!(h.balance(ALICE), 10 * PRICE, "nothing debited");
        assert!(h.store.world().payments.is_empty(), "nothing recorded");
        assert_eq!(
            h.store.world().reservations[&hold.id].status,
            ReservationStatus::Held,
            "the claim rolled back"
        );
        // Without the close (sales until the show starts) it pays.
        h.pay(ALICE, hold.id).await.unwrap();
    }

    #[tokio::test]
    async fn a_deadlocked_payment_is_run_again_and_gives_up_after_a_bound() {
        let h = harness();
        let r = h.funded_hold(ALICE, 5_000);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS - 1);
        h.pay(ALICE, r.id).await.unwrap();
        assert_eq!(h.balance(ALICE), 4_000, "debited once");

        let other = h.held(ALICE);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.pay(ALICE, other.id).await,
            Err(PaymentError::Fault(Fault::Conflict(_)))
        ));
        assert_eq!(h.balance(ALICE), 4_000);
        assert_eq!(h.store.world().payments.len(), 1);
    }

    #[tokio::test]
    async fn an_outage_is_unavailable() {
        let h = harness();
        let r = h.held(ALICE);
        h.store.set_down(true);
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::Fault(Fault::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn a_user_sees_their_own_payment_and_hold_only() {
        let h = harness();
        let payment = h.paid(ALICE).await;
        assert_eq!(h.payments.get(payment.id, ALICE).await.unwrap(), payment);
        assert!(matches!(
            h.payments.get(payment.id, BOB).await,
            Err(PaymentError::NotFound(_))
        ));
        assert_eq!(
            h.payments
                .hold_of(ALICE, payment.reservation)
                .await
                .unwrap()
                .schedule,
            ScheduleId(3)
        );
        assert!(matches!(
            h.payments.hold_of(BOB, payment.reservation).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
    }

    fn pay_key(reservation: ReservationId, key: &str) -> RequestKey {
        RequestKey::new(ALICE, "payment.pay", key, &reservation).unwrap()
    }

    #[tokio::test]
    async fn a_retried_key_gets_the_first_payment_back_and_pays_nothing_more() {
        let h = harness();
        let r = h.funded_hold(ALICE, 5_000);
        let key = pay_key(r.id, "p");
        let first = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        // The saga moves on; the retry still hears the answer of then.
        h.answer(types::RESERVATION_CONFIRMED, &first).await;
        let again = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(again.status, PaymentStatus::Paid);
        // Straight into the transaction (no replay look first): the claim
        // answers it just the same.
        let hold = h.payments.hold_of(ALICE, r.id).await.unwrap();
        assert_eq!(h.payments.pay(&hold, Some(&key)).await.unwrap(), first);
        assert_eq!(h.balance(ALICE), 4_000, "debited once");
        assert_eq!(h.store.world().payments.len(), 1);

        // The same key for another hold is refused and changes nothing.
        let other = h.held(ALICE);
        assert!(matches!(
            h.pay_keyed(ALICE, other.id, Some(&pay_key(other.id, "p")))
                .await,
            Err(PaymentError::Fault(Fault::KeyReused))
        ));
        let hold = h.payments.hold_of(ALICE, other.id).await.unwrap();
        assert!(matches!(
            h.payments.pay(&hold, Some(&pay_key(other.id, "p"))).await,
            Err(PaymentError::Fault(Fault::KeyReused))
        ));
        assert_eq!(h.balance(ALICE), 4_000);
    }

    #[tokio::test]
    async fn a_refused_or_failed_payment_leaves_its_key_free_for_a_retry() {
        let h = harness();
        let r = h.held(ALICE);
        let key = pay_key(r.id, "p");
        assert!(matches!(
            h.pay_keyed(ALICE, r.id, Some(&key)).await,
            Err(PaymentError::InsufficientPoints)
        ));
        h.fund(ALICE, 5_000);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.pay_keyed(ALICE, r.id, Some(&key)).await,
            Err(PaymentError::Fault(Fault::Conflict(_)))
        ));
        assert!(h.store.world().keys.is_empty(), "no key left behind");
        let paid = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        assert_eq!(paid.amount.value(), PRICE);
        assert_eq!(h.balance(ALICE), 4_000);
    }

    #[tokio::test]
    async fn buyers_list_their_own_payments_newest_first_in_pages() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        h.fund(BOB, 10 * PRICE);
        let mut alice = Vec::new();
        for _ in 0..3 {
            let hold = h.held(ALICE);
            alice.push(h.pay(ALICE, hold.id).await.unwrap().id);
        }
        let hold = h.held(BOB);
        let bob = h.pay(BOB, hold.id).await.unwrap().id;
        let ids = |page: &Page<Payment>| page.items.iter().map(|p| p.id).collect::<Vec<_>>();
        let mine = async |user, after, limit| {
            h.payments
                .mine(user, PageRequest::asked(after, limit))
                .await
        };

        let first = mine(ALICE, None, 2).await.unwrap();
        assert_eq!(ids(&first), vec![alice[2], alice[1]]);
        assert_eq!(first.next_cursor, Some(alice[1].value()));
        let second = mine(ALICE, first.next_cursor, 2).await.unwrap();
        assert_eq!(ids(&second), vec![alice[0]]);
        assert_eq!(second.next_cursor, None);
        assert_eq!(ids(&mine(BOB, None, 20).await.unwrap()), vec![bob]);
        h.store.set_down(true);
        assert!(matches!(
            mine(ALICE, None, 20).await,
            Err(PaymentError::Fault(Fault::Unavailable(_)))
        ));
    }
}
