//! Holding a seat, reading one's own holds, giving a hold back early, and
//! the sweep that expires lapsed holds.

use chrono::{DateTime, Utc};

use super::{LOST_RACE_MEMORY, ReservationService, SeatKey, record_order};
use crate::{
    catalog::{
        domain::{Availability, SeatHold},
        ports::{SeatReads, SeatTx},
    },
    kernel::{
        Clock, Fault, Page, PageRequest, ReservationId, ScheduleId, SeatId, Transaction,
        UnitOfWork, UserId,
        events::{RelayWake, types},
        failpoint, retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    reservation::{
        domain::{MAX_PAGE, OrderView, Reservation, ReservationError, Transition},
        ports::{ReservationPorts, ReservationRepository, ReservationTx},
    },
};

impl<P: ReservationPorts> ReservationService<P> {
    /// Holds the seat for the user: exactly one of any number of
    /// concurrent requests for a free seat wins.
    pub async fn hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> Result<Reservation, ReservationError> {
        let key = (schedule, seat);
        if self.lost_races.is_fresh(&key, self.clock.now()) {
            return Err(ReservationError::SeatUnavailable(vec![seat]));
        }
        let _turn = self.gates.lock(key).await;
        let now = self.clock.now();
        if self.lost_races.is_fresh(&key, now) {
            return Err(ReservationError::SeatUnavailable(vec![seat]));
        }
        // A cheap look first: the losers of a visibly taken seat leave
        // without a transaction.
        match self.seats.seat(schedule, seat).await? {
            None => return Err(ReservationError::SeatNotFound { schedule, seat }),
            Some(found) if found.availability(now) != Availability::Available => {
                self.remember_taken(key, now);
                return Err(ReservationError::SeatUnavailable(vec![seat]));
            }
            Some(_) => {}
        }
        let seats = [seat];
        let order = retry_on_conflict(|| self.attempt_order(user, schedule, &seats)).await?;
        self.wake.wake();
        // An order of one.
        let id = order.order.id;
        (order.order.seats.into_iter().next())
            .ok_or_else(|| Fault::unexpected(format!("order {id} holds no seat")).into())
    }

    /// Holds every seat of `seats` (ids in order) for the user in one
    /// transaction, as one order, or none of them: a seat someone else has
    /// refuses the order naming every such seat, and dropping the
    /// transaction gives back the ones it took.
    pub(super) async fn attempt_order(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seats: &[SeatId],
    ) -> Result<OrderView, ReservationError> {
        let now = self.clock.now();
        let until = self.policy.until(now);
        let mut tx = self.uow.begin().await?;
        // The seats first, in id order (the lock order: seats, then
        // reservations): under a flood for one seat the losers learn it
        // from this one statement.
        let mut held = Vec::with_capacity(seats.len());
        let mut lost = Vec::new();
        for &seat in seats {
            let hold = SeatHold {
                schedule,
                seat,
                user,
                until,
            };
            match tx.try_hold(hold, now).await? {
                Some(won) => held.push((seat, won)),
                None => lost.push(seat),
            }
        }
        // Lets a test hold the seat rows' locks here while a payment races.
        failpoint::step("reservation::hold::after_seat")
            .await
            .map_err(|cause| ReservationError::Fault(Fault::Unavailable(cause)))?;
        if !lost.is_empty() {
            for &seat in &lost {
                if !tx.exists(schedule, seat).await? {
                    return Err(ReservationError::SeatNotFound { schedule, seat });
                }
                self.remember_taken((schedule, seat), now);
            }
            return Err(ReservationError::SeatUnavailable(lost));
        }
        // Dropping the transaction gives the seats back.
        if held
            .first()
            .is_some_and(|(_, won)| self.policy.sales_closed(won.starts_at, now))
        {
            return Err(ReservationError::SalesClosed(schedule));
        }
        let live = tx.lock_user_and_count_live(user, now).await?;
        if !self.policy.allows(live, held.len()) {
            return Err(ReservationError::HoldLimit(self.policy.per_user_limit));
        }
        let (order, events) = record_order(&mut tx, user, schedule, held, until, now).await?;
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(order)
    }

    fn remember_taken(&self, key: SeatKey, now: DateTime<Utc>) {
        self.lost_races.remember(key, (), now + LOST_RACE_MEMORY);
    }

    /// The user's own reservation; someone else's answers not found.
    pub async fn get(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<Reservation, ReservationError> {
        match self.repo.get(id).await? {
            Some(reservation) if reservation.user == user => Ok(reservation),
            _ => Err(ReservationError::NotFound(id)),
        }
    }

    /// A page of the user's own reservations, newest first.
    pub async fn mine(
        &self,
        user: UserId,
        asked: PageRequest,
    ) -> Result<Page<Reservation>, ReservationError> {
        let read = |page| self.repo.of_user(user, page);
        asked.read(MAX_PAGE, read, |r| r.id.value()).await
    }

    /// Gives an unpaid, unexpired hold back early.
    pub async fn release(&self, id: ReservationId, user: UserId) -> Result<(), ReservationError> {
        let reservation = self.get(id, user).await?;
        retry_on_conflict(|| self.release_once(&reservation, user)).await?;
        // Seats this instance remembered as taken may be free now.
        self.lost_races.clear();
        self.wake.wake();
        Ok(())
    }

    async fn release_once(
        &self,
        reservation: &Reservation,
        user: UserId,
    ) -> Result<(), ReservationError> {
        let now = self.clock.now();
        let release = Transition::Release { user, now };
        if !release.applies_to(reservation) {
            return Err(ReservationError::NotHeld(reservation.id));
        }
        let mut tx = self.uow.begin().await?;
        // Seat before reservation; if the hold is gone meanwhile, dropping
        // the transaction undoes the seat.
        tx.release(reservation.seat, reservation.id).await?;
        if !tx.transition(reservation.id, release, now).await? {
            return Err(ReservationError::NotHeld(reservation.id));
        }
        tx.append(vec![reservation.event(types::RESERVATION_RELEASED)], now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One sweep over lapsed holds (availability already treats them as
    /// free; this frees the seat rows and tells the user). Returns how
    /// many it expired.
    pub async fn sweep(&self, max: u64) -> Result<u64, ReservationError> {
        let mut expired = 0;
        for id in self.repo.lapsed(self.clock.now(), max).await? {
            if retry_on_conflict(|| self.expire_once(id)).await? {
                expired += 1;
            }
        }
        if expired > 0 {
            self.wake.wake();
        }
        Ok(expired)
    }

    async fn expire_once(&self, id: ReservationId) -> Result<bool, ReservationError> {
        let now = self.clock.now();
        let Some(reservation) = self.repo.get(id).await? else {
            return Ok(false);
        };
        let lapse = Transition::Lapse { now };
        // A payment may have claimed it since it was listed.
        if !lapse.applies_to(&reservation) {
            return Ok(false);
        }
        // A write first (the seat, in the lock order); the reservation's
        // compare-and-set below decides, and undoes the seat if it lost.
        let mut tx = self.uow.begin().await?;
        tx.release(reservation.seat, reservation.id).await?;
        if !tx.transition(reservation.id, lapse, now).await? {
            return Ok(false);
        }
        tx.append(vec![reservation.event(types::RESERVATION_EXPIRED)], now)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::SeatState,
        kernel::{CONFLICT_ATTEMPTS, Points},
        reservation::{
            domain::ReservationStatus,
            usecase::fake::{ALICE, BOB, SCHEDULE, harness},
        },
    };

    #[tokio::test]
    async fn buyers_list_their_own_reservations_newest_first_in_pages() {
        let h = harness(5, 10);
        let mut alice = Vec::new();
        for seat in &h.seats[..3] {
            alice.push(h.service.hold(ALICE, SCHEDULE, *seat).await.unwrap().id);
        }
        let bob = h.service.hold(BOB, SCHEDULE, h.seats[3]).await.unwrap().id;
        h.service.release(alice[1], ALICE).await.unwrap();
        let ids = |page: &Page<Reservation>| {
            page.items
                .iter()
                .map(|reservation| reservation.id)
                .collect::<Vec<_>>()
        };
        let mine =
            async |user, after, limit| h.service.mine(user, PageRequest::asked(after, limit)).await;

        let first = mine(ALICE, None, 2).await.unwrap();
        assert_eq!(ids(&first), vec![alice[2], alice[1]]);
        assert_eq!(first.next_cursor, Some(alice[1].value()));
        assert_eq!(
            first.items[1].status,
            ReservationStatus::Released,
            "a released hold is still listed"
        );
        let second = mine(ALICE, first.next_cursor, 2).await.unwrap();
        assert_eq!(ids(&second), vec![alice[0]]);
        assert_eq!(second.next_cursor, None);
        assert_eq!(ids(&mine(BOB, None, 20).await.unwrap()), vec![bob]);
        assert_eq!(
            ids(&mine(ALICE, None, 0).await.unwrap()),
            vec![alice[2]],
            "a page holds at least one"
        );
        h.store.set_down(true);
        assert!(matches!(
            mine(ALICE, None, 20).await,
            Err(ReservationError::Fault(Fault::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn a_free_seat_is_held_with_its_event_and_wakes_the_relay() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(r.status, ReservationStatus::Held);
        assert_eq!(r.price, Points::new(1_000).unwrap());
        assert_eq!(r.expires_at, h.clock.now() + TimeDelta::minutes(5));
        assert!(matches!(h.seat(h.seats[0]), SeatState::Held { holder, .. } if holder == ALICE));
        assert_eq!(h.store.world().seats[&h.seats[0]].reservation, Some(r.id));
        assert_eq!(h.events(), vec![types::RESERVATION_HELD]);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn a_taken_seat_is_refused_and_the_rush_after_it_is_answered_from_memory() {
        let h = harness(1, 4);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SeatUnavailable(_))
        ));
        // The store is gone, yet the remembered loss still answers.
        h.store.set_down(true);
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SeatUnavailable(_))
        ));
        // A second later the memory is gone and the store is asked again.
        h.clock.advance(TimeDelta::seconds(2));
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::Fault(Fault::Unavailable(_)))
        ));
        assert_eq!(h.store.world().reservations.len(), 1);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn an_unknown_seat_is_not_found_and_nothing_is_written() {
        let h = harness(1, 4);
        for (schedule, seat) in [(SCHEDULE, SeatId(999)), (ScheduleId(5), h.seats[0])] {
            assert!(matches!(
                h.service.hold(ALICE, schedule, seat).await,
                Err(ReservationError::SeatNotFound { .. })
            ));
        }
        assert!(h.events().is_empty());
        assert_eq!(h.store.commits(), 0);
    }

    #[tokio::test]
    async fn the_hold_limit_refuses_one_more_and_gives_the_seat_back() {
        let h = harness(3, 2);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[2]).await,
            Err(ReservationError::HoldLimit(2))
        ));
        assert_eq!(h.seat(h.seats[2]), SeatState::Available);
        assert_eq!(h.events().len(), 2);
        // Another user is not limited by Alice's holds; every committed
        // hold counted under its user's lock.
        h.service.hold(BOB, SCHEDULE, h.seats[2]).await.unwrap();
        assert_eq!(h.store.world().user_locks, vec![ALICE, ALICE, BOB]);
    }

    #[tokio::test]
    async fn an_expired_hold_no_longer_counts_against_the_limit_but_a_paid_one_does() {
        let h = harness(3, 1);
        let first = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(6));
        let second = h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        assert_ne!(first.id, second.id);
        h.pay(second.id);
        h.clock.advance(TimeDelta::minutes(6));
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[2]).await,
            Err(ReservationError::HoldLimit(1))
        ));
    }

    #[tokio::test]
    async fn a_lapsed_hold_is_replaced_and_expired_in_the_same_transaction() {
        let h = harness(1, 4);
        let old = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(5));
        let new = h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(h.status(old.id), ReservationStatus::Expired);
        assert_eq!(h.status(new.id), ReservationStatus::Held);
        assert_eq!(
            h.events(),
            vec![
                types::RESERVATION_HELD,
                types::RESERVATION_HELD,
                types::RESERVATION_EXPIRED
            ]
        );
    }

    #[tokio::test]
    async fn a_paid_lapsed_hold_is_not_expired_by_the_hold_that_took_its_seat() {
        let h = harness(1, 4);
        let paid = h.paid_hold_retaken().await;
        assert_eq!(
            h.status(paid.id),
            ReservationStatus::Held,
            "its confirmation decides"
        );
    }

    #[tokio::test]
    async fn a_conflict_is_retried_and_too_many_answer_conflict_with_nothing_written() {
        let h = harness(2, 4);
        h.store.conflict_next_commits(2);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(h.events(), vec![types::RESERVATION_HELD]);

        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[1]).await,
            Err(ReservationError::Fault(Fault::Conflict(_)))
        ));
        assert_eq!(h.seat(h.seats[1]), SeatState::Available);
        assert_eq!(h.events().len(), 1);
    }

    #[tokio::test]
    async fn a_user_releases_their_own_live_hold_only() {
        let h = harness(3, 4);
        let mine = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(matches!(
            h.service.release(mine.id, BOB).await,
            Err(ReservationError::NotFound(_))
        ));
        h.service.release(mine.id, ALICE).await.unwrap();
        assert_eq!(h.status(mine.id), ReservationStatus::Released);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.events().last(), Some(&types::RESERVATION_RELEASED));
        assert!(matches!(
            h.service.release(mine.id, ALICE).await,
            Err(ReservationError::NotHeld(_))
        ));

        let paid = h.paid_hold(ALICE, 1).await;
        let lapsed = h.service.hold(ALICE, SCHEDULE, h.seats[2]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(5));
        for id in [paid.id, lapsed.id] {
            assert!(matches!(
                h.service.release(id, ALICE).await,
                Err(ReservationError::NotHeld(_))
            ));
        }
        assert!(matches!(
            h.service.release(ReservationId(12345), ALICE).await,
            Err(ReservationError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_release_forgets_the_seats_this_instance_saw_taken() {
        let h = harness(1, 4);
        let mine = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(h.service.hold(BOB, SCHEDULE, h.seats[0]).await.is_err());
        h.service.release(mine.id, ALICE).await.unwrap();
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
    }

    #[tokio::test]
    async fn the_sweeper_expires_lapsed_unpaid_holds_only() {
        let h = harness(3, 4);
        let lapsing = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        let paid = h.paid_hold(ALICE, 1).await;
        h.clock.advance(TimeDelta::minutes(5));
        let fresh = h.service.hold(BOB, SCHEDULE, h.seats[2]).await.unwrap();
        let wakes = h.wakes.count();
        assert_eq!(h.service.sweep(10).await.unwrap(), 1);
        assert_eq!(h.status(lapsing.id), ReservationStatus::Expired);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.status(paid.id), ReservationStatus::Held);
        assert_eq!(h.status(fresh.id), ReservationStatus::Held);
        assert_eq!(h.events().last(), Some(&types::RESERVATION_EXPIRED));
        assert_eq!(h.wakes.count(), wakes + 1);
        assert_eq!(h.service.sweep(10).await.unwrap(), 0);
        assert_eq!(
            h.wakes.count(),
            wakes + 1,
            "nothing expired, nothing to relay"
        );
    }

    #[tokio::test]
    async fn no_hold_is_taken_once_sales_close_and_the_seat_stays_free() {
        // Sales close an hour before the show (the harness's policy).
        let h = harness(1, 10);
        h.show_in(TimeDelta::minutes(59));
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SalesClosed(SCHEDULE))
        ));
        assert_eq!(h.seat(h.seats[0]), SeatState::Available, "rolled back");
        assert!(h.events().is_empty());
    }
}
