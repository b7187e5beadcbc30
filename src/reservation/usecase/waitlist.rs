//! The waitlist: joining, leaving and one's place in line, offering each
//! freed seat to the first in line, and closing the lines when sales close.

use chrono::{DateTime, Utc};

use super::{ReservationService, record_order};
use crate::{
    catalog::{
        domain::SeatHold,
        ports::{SeatReads, SeatTx},
    },
    kernel::{
        Clock, Fault, ScheduleId, SeatId, Transaction, UnitOfWork, UserId,
        events::{NewEvent, RelayWake, ReservationChanged, WaitlistChanged, types},
        retry_on_conflict,
    },
    outbox::ports::{Delivered, OutboxWriter, Subscriber, Subscription},
    reservation::{
        domain::{
            HoldPolicy, Order, ReservationError, SEAT_FREEING, WaitlistEntry, may_join_waitlist,
        },
        ports::{ReservationPorts, ReservationRepository, ReservationTx, WaitlistTx},
    },
};

/// How many waited-on schedules one pass of [`ReservationService::close_waitlists`]
/// looks at (the lowest ids first).
pub const WAITLISTS_CHECKED: u64 = 10_000;

impl<P: ReservationPorts> ReservationService<P> {
    /// Puts the user on the waitlist of a schedule on sale with fewer
    /// than `quantity` seats free (1 to the hold limit); answers their
    /// place (1 = first in line).
    pub async fn join_waitlist(
        &self,
        user: UserId,
        schedule: ScheduleId,
        quantity: u32,
    ) -> Result<u64, ReservationError> {
        let quantity = self.policy.waitlist_quantity(quantity)?;
        retry_on_conflict(|| self.join_once(user, schedule, quantity)).await
    }

    async fn join_once(
        &self,
        user: UserId,
        schedule: ScheduleId,
        quantity: u32,
    ) -> Result<u64, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The write first; a refusal below drops the transaction with it.
        let joined = tx.join(schedule, user, quantity, now).await?;
        let Some((status, _)) = tx.schedule_status(schedule).await? else {
            return Err(ReservationError::ScheduleNotFound(schedule));
        };
        if tx
            .starts_at(schedule)
            .await?
            .is_some_and(|starts_at| self.policy.sales_closed(starts_at, now))
        {
            return Err(ReservationError::SalesClosed(schedule));
        }
        may_join_waitlist(
            schedule,
            status,
            tx.free_seats(schedule, now).await?,
            quantity,
        )?;
        let Some(entry) = joined else {
            return Err(ReservationError::AlreadyWaitlisted);
        };
        let (position, _) = tx
            .waitlist_position(schedule, user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a place just joined is not waiting"))?;
        tx.append(
            vec![waitlist_event(types::WAITLIST_JOINED, &entry, None)],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Takes the user off the schedule's waitlist.
    pub async fn leave_waitlist(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<(), ReservationError> {
        retry_on_conflict(|| async {
            let now = self.clock.now();
            let mut tx = self.uow.begin().await?;
            let Some(entry) = tx.leave(schedule, user, now).await? else {
                return Err(ReservationError::NotWaitlisted);
            };
            tx.append(
                vec![waitlist_event(types::WAITLIST_LEFT, &entry, None)],
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The user's place on the schedule's waitlist and how many seats it
    /// waits for.
    pub async fn waitlist_position(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<(u64, u32), ReservationError> {
        let mut tx = self.uow.begin().await?;
        tx.waitlist_position(schedule, user)
            .await?
            .ok_or(ReservationError::NotWaitlisted)
    }

    /// Ends the waitlists of schedules whose sales have closed: every place
    /// still waiting leaves the line as `closed` with a `WaitlistClosed`
    /// event (its user is notified), `max` places per transaction. Looks
    /// at the first [`WAITLISTS_CHECKED`] schedules anyone waits on.
    /// Returns how many places it closed.
    pub async fn close_waitlists(&self, max: u64) -> Result<u64, ReservationError> {
        let waited_on = self.repo.waitlisted_schedules(WAITLISTS_CHECKED).await?;
        if waited_on.is_empty() {
            return Ok(0);
        }
        let by = self.policy.sales_closed_for_starts_by(self.clock.now());
        let mut closed = 0;
        for schedule in self.seats.starting_by(&waited_on, by).await? {
            loop {
                let batch = retry_on_conflict(|| self.close_waitlist_batch(schedule, max)).await?;
                closed += batch;
                if batch < max.max(1) {
                    break;
                }
            }
        }
        if closed > 0 {
            metrics::counter!("waitlist_places_closed_total").increment(closed);
            self.wake.wake();
        }
        Ok(closed)
    }

    async fn close_waitlist_batch(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<u64, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let places = tx.close_waiting(schedule, now, max.max(1)).await?;
        if places.is_empty() {
            return Ok(0);
        }
        let events = places
            .iter()
            .map(|place| waitlist_event(types::WAITLIST_CLOSED, place, None))
            .collect();
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(places.len() as u64)
    }
}

fn waitlist_event(
    event_type: &'static str,
    entry: &WaitlistEntry,
    offer: Option<&Order>,
) -> NewEvent {
    let first = offer.and_then(|order| order.seats.first());
    NewEvent::new(
        event_type,
        "waitlist",
        entry.id,
        &WaitlistChanged {
            entry_id: entry.id,
            schedule_id: entry.schedule.value(),
            user_id: entry.user.value(),
            reservation_id: first.map(|offer| offer.id.value()),
            seat_id: first.map(|offer| offer.seat.value()),
            expires_at: first.map(|offer| offer.expires_at),
            quantity: Some(entry.quantity),
            order_id: offer.map(|order| order.id.value()),
        },
    )
}

/// Offers the seat `freed` names to the first place on its schedule's
/// waitlist whose quantity fits the seats free now, inside the consumer's
/// transaction (so the offer is made exactly once, with the event's inbox
/// row): the freed seat and, for a place waiting for N seats, the next
/// N - 1 free seats (lowest ids) are held in the user's name as one order
/// until `policy.until(now)`, the place leaves the line, and the order's
/// `ReservationHeld` events + `WaitlistOffered` are written.
///
/// The fairness rule: a place waiting for more seats than are free keeps
/// its place at the head of the line while a place behind it that fits
/// takes the freed seats (an entry for 4 waits while an entry for 1
/// behind it takes a single freed seat); it is offered its seats as soon
/// as that many are free at once.
///
/// `None` (nothing written) when no place fits, or the freed seat is no
/// longer free — someone else took it, or the schedule went off sale —
/// and the line waits for the next freed seat. An offer is not refused
/// for the hold limit: they are the seats the user waited for. Returns
/// the order held.
pub async fn offer_freed_seat<T: WaitlistTx + ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    freed: &ReservationChanged,
    policy: HoldPolicy,
    now: DateTime<Utc>,
) -> Result<Option<Order>, ReservationError> {
    let schedule = ScheduleId(freed.schedule_id);
    let seat = SeatId(freed.seat_id);
    let free = tx.free_seats(schedule, now).await?;
    let Some(next) = tx.next_waiting(schedule, free).await? else {
        return Ok(None);
    };
    // Past the close of sales a freed seat is offered to nobody.
    if tx
        .starts_at(schedule)
        .await?
        .is_some_and(|starts_at| policy.sales_closed(starts_at, now))
    {
        return Ok(None);
    }
    let expires_at = policy.until(now);
    let hold = |seat| SeatHold {
        schedule,
        seat,
        user: next.user,
        until: expires_at,
    };
    // The freed seat first: if it is gone, nothing was written.
    let Some(held) = tx.try_hold(hold(seat), now).await? else {
        return Ok(None);
    };
    let mut seats = vec![(seat, held)];
    let more = u64::from(next.quantity.saturating_sub(1));
    if more > 0 {
        for other in tx.free_seat_ids(schedule, now, more).await? {
            let Some(held) = tx.try_hold(hold(other), now).await? else {
                break;
            };
            seats.push((other, held));
        }
    }
    if seats.len() < next.quantity as usize {
        // Another transaction took a seat counted free: the event is
        // delivered again and counts afresh (this one rolls back).
        return Err(Fault::conflict(format!(
            "seats for waitlist place {} were taken while they were offered",
            next.id
        ))
        .into());
    }
    seats.sort_unstable_by_key(|(seat, _)| *seat);
    let (view, mut events) = record_order(tx, next.user, schedule, seats, expires_at, now).await?;
    let order = view.order;
    let Some(first) = order.seats.first() else {
        return Err(Fault::unexpected(format!("order {} holds no seat", order.id)).into());
    };
    if !tx.mark_offered(next.id, first.id, now).await? {
        return Err(Fault::conflict(format!(
            "waitlist place {} changed while seats were offered to it",
            next.id
        ))
        .into());
    }
    events.push(waitlist_event(types::WAITLIST_OFFERED, &next, Some(&order)));
    tx.append(events, now).await?;
    metrics::counter!("waitlist_offers_total").increment(1);
    Ok(Some(order))
}

/// The waitlist's consumer: every seat freed again (a hold lapsed, given
/// back or withdrawn; a ticket cancelled) is offered to the next in line.
pub struct WaitlistOffers<C> {
    clock: C,
    policy: HoldPolicy,
}

impl<C> WaitlistOffers<C> {
    pub fn new(clock: C, policy: HoldPolicy) -> Self {
        Self { clock, policy }
    }
}

impl<T, C> Subscriber<T> for WaitlistOffers<C>
where
    T: WaitlistTx + ReservationTx + SeatTx + OutboxWriter,
    C: Clock,
{
    const SUBSCRIPTION: Subscription = Subscription::of("waitlist", SEAT_FREEING);
    type Payload = ReservationChanged;
    type Error = ReservationError;

    async fn on(
        &self,
        tx: &mut T,
        freed: Delivered<'_, ReservationChanged>,
    ) -> Result<(), ReservationError> {
        offer_freed_seat(tx, &freed.payload, self.policy, self.clock.now()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::outbox::ports::EventHandler;
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::{ScheduleStatus, SeatState},
        kernel::{ManualClock, ReservationId},
        reservation::{
            domain::{Reservation, ReservationStatus},
            usecase::fake::{ALICE, BOB, CAROL, Harness, SCHEDULE, harness},
        },
        testing::MemTx,
    };

    impl Harness {
        /// Holds every seat for ALICE (the schedule is sold out).
        async fn sell_out(&self) -> Vec<ReservationId> {
            let mut holds = Vec::new();
            for seat in &self.seats {
                holds.push(self.service.hold(ALICE, SCHEDULE, *seat).await.unwrap().id);
            }
            holds
        }

        /// Runs the waitlist's consumer on the last event of `event_type`
        /// written, in its own transaction, as the bus would deliver it.
        async fn deliver_last(&self, event_type: &str) -> Option<Reservation> {
            let order = self.deliver_last_order(event_type).await?;
            assert_eq!(order.seats.len(), 1, "one seat offered");
            order.seats.into_iter().next()
        }

        /// As [`Self::deliver_last`], the whole order offered.
        async fn deliver_last_order(&self, event_type: &str) -> Option<Order> {
            let payload =
                (self.store.world().payloads(event_type).pop()).expect("the event was written");
            let freed: ReservationChanged = serde_json::from_value(payload).unwrap();
            let mut tx = self.store.begin().await.unwrap();
            let offer = offer_freed_seat(&mut tx, &freed, self.service.policy(), self.clock.now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            offer
        }

        fn waiting(&self) -> Vec<UserId> {
            self.store.world().waiting(SCHEDULE)
        }
    }

    /// One seat, sold out to ALICE while BOB then CAROL wait in line, given
    /// back: its release is written, not yet delivered.
    async fn released_with_bob_and_carol_in_line() -> Harness {
        let h = harness(1, 10);
        let holds = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE, 1).await.unwrap();
        h.service.release(holds[0], ALICE).await.unwrap();
        h
    }

    #[tokio::test]
    async fn the_waitlist_takes_people_only_while_nothing_is_free_one_place_each() {
        let h = harness(2, 10);
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE, 1).await,
            Err(ReservationError::SeatsAvailable(2))
        ));
        assert!(h.waiting().is_empty(), "a refusal leaves no place behind");
        h.sell_out().await;
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap(), 1);
        assert_eq!(
            h.service.join_waitlist(CAROL, SCHEDULE, 1).await.unwrap(),
            2
        );
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE, 1).await,
            Err(ReservationError::AlreadyWaitlisted)
        ));
        assert_eq!(h.waiting(), [BOB, CAROL]);
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            (2, 1)
        );
        let joined = h
            .events()
            .into_iter()
            .filter(|event| *event == types::WAITLIST_JOINED)
            .count();
        assert_eq!(joined, 2);
        assert!(matches!(
            h.service.join_waitlist(BOB, ScheduleId(404), 1).await,
            Err(ReservationError::ScheduleNotFound(ScheduleId(404)))
        ));
    }

    #[tokio::test]
    async fn a_cancelled_schedule_has_no_waitlist() {
        let h = harness(1, 10);
        h.sell_out().await;
        h.store
            .world()
            .schedule_statuses
            .insert(SCHEDULE, (ScheduleStatus::Cancelling, h.clock.now()));
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE, 1).await,
            Err(ReservationError::NotOnSale(SCHEDULE))
        ));
    }

    #[tokio::test]
    async fn when_sales_close_every_place_still_waiting_ends_with_an_event_each() {
        let h = harness(1, 10);
        h.show_in(TimeDelta::minutes(90));
        h.sell_out().await;
        for user in [BOB, CAROL, UserId(4), UserId(5)] {
            h.service.join_waitlist(user, SCHEDULE, 1).await.unwrap();
        }
        h.service.leave_waitlist(CAROL, SCHEDULE).await.unwrap();
        assert_eq!(
            h.service.close_waitlists(2).await.unwrap(),
            0,
            "still on sale"
        );

        // Sales close an hour before the show (the harness's policy).
        h.clock.advance(TimeDelta::minutes(30));
        assert_eq!(
            h.service.close_waitlists(2).await.unwrap(),
            3,
            "in batches of two"
        );
        assert!(h.waiting().is_empty());
        let closed: Vec<i64> = (h.store.world().payloads(types::WAITLIST_CLOSED).iter())
            .map(|payload| payload["userId"].as_i64().unwrap())
            .collect();
        assert_eq!(
            closed,
            vec![BOB.value(), 4, 5],
            "in line order, not who left"
        );
        assert_eq!(h.service.close_waitlists(2).await.unwrap(), 0, "once each");
        assert!(matches!(
            h.service.waitlist_position(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
    }

    #[tokio::test]
    async fn once_sales_close_nobody_joins_the_waitlist_and_a_freed_seat_is_offered_to_nobody() {
        let h = harness(1, 10);
        h.show_in(TimeDelta::minutes(63));
        let held = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap();
        // Four minutes later (the hold still live) sales have closed, an
        // hour before the show.
        h.clock.advance(TimeDelta::minutes(4));
        assert!(matches!(
            h.service.join_waitlist(CAROL, SCHEDULE, 1).await,
            Err(ReservationError::SalesClosed(SCHEDULE))
        ));
        h.service.release(held[0], ALICE).await.unwrap();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available, "no offer made");
    }

    #[tokio::test]
    async fn leaving_the_waitlist_moves_everyone_behind_up_and_rejoining_goes_to_the_tail() {
        let h = harness(1, 10);
        h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE, 1).await.unwrap();
        h.service.leave_waitlist(BOB, SCHEDULE).await.unwrap();
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            (1, 1)
        );
        assert!(matches!(
            h.service.leave_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert!(matches!(
            h.service.waitlist_position(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap(), 2);
        assert_eq!(h.events().last(), Some(&types::WAITLIST_JOINED));
        assert!(h.events().contains(&types::WAITLIST_LEFT));
    }

    #[tokio::test]
    async fn a_released_seat_is_held_for_the_first_in_line_and_offered_once() {
        let h = released_with_bob_and_carol_in_line().await;

        let offer = h
            .deliver_last(types::RESERVATION_RELEASED)
            .await
            .expect("an offer");
        assert_eq!((offer.user, offer.seat), (BOB, h.seats[0]));
        assert_eq!(offer.expires_at, h.clock.now() + TimeDelta::minutes(5));
        assert_eq!(h.status(offer.id), ReservationStatus::Held);
        assert!(matches!(
            h.seat(h.seats[0]),
            SeatState::Held { holder: BOB, .. }
        ));
        assert_eq!(h.waiting(), [CAROL], "BOB's place became the offer");
        let offered = (h
            .store
            .world()
            .payloads(types::WAITLIST_OFFERED)
            .into_iter()
            .next())
        .expect("WaitlistOffered");
        assert_eq!(offered["userId"], BOB.value());
        assert_eq!(offered["reservationId"], offer.id.value());
        assert_eq!(offered["seatId"], h.seats[0].value());

        // The same event again finds the seat taken: nothing changes.
        let before = h.store.world().outbox.len();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.waiting(), [CAROL]);
        assert_eq!(h.store.world().outbox.len(), before);
    }

    #[tokio::test]
    async fn a_lapsed_offer_passes_to_the_next_in_line() {
        let h = released_with_bob_and_carol_in_line().await;
        let bobs = h.deliver_last(types::RESERVATION_RELEASED).await.unwrap();

        h.clock.advance(TimeDelta::minutes(6));
        assert_eq!(h.service.sweep(10).await.unwrap(), 1);
        assert_eq!(h.status(bobs.id), ReservationStatus::Expired);
        let carols = h
            .deliver_last(types::RESERVATION_EXPIRED)
            .await
            .expect("the next offer");
        assert_eq!((carols.user, carols.seat), (CAROL, bobs.seat));
        assert!(h.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_seat_taken_before_the_offer_or_an_empty_line_offers_nothing() {
        let h = harness(1, 10);
        let holds = h.sell_out().await;
        h.service.release(holds[0], ALICE).await.unwrap();
        assert_eq!(
            h.deliver_last(types::RESERVATION_RELEASED).await,
            None,
            "nobody waits"
        );
        assert!(matches!(h.seat(h.seats[0]), SeatState::Available));

        // A buyer takes it before the event arrives; BOB keeps his place.
        h.service.hold(CAROL, SCHEDULE, h.seats[0]).await.unwrap();
        h.service.join_waitlist(BOB, SCHEDULE, 1).await.unwrap();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.waiting(), [BOB]);
        assert!(!h.events().contains(&types::WAITLIST_OFFERED));
    }

    #[tokio::test]
    async fn only_freed_seats_are_offered() {
        let handler = WaitlistOffers::new(
            ManualClock::new(Utc::now()),
            HoldPolicy {
                hold_minutes: 5,
                per_user_limit: 4,
                sales_close_before_minutes: 0,
            },
        );
        let handles = |event_type| {
            <WaitlistOffers<ManualClock> as EventHandler<MemTx>>::handles(&handler, event_type)
        };
        for freed in [
            types::RESERVATION_EXPIRED,
            types::RESERVATION_RELEASED,
            types::TICKET_CANCELLED,
        ] {
            assert!(handles(freed), "{freed}");
        }
        for other in [
            types::PAYMENT_REFUNDED,
            types::RESERVATION_HELD,
            types::RESERVATION_CONFIRMED,
            types::WAITLIST_OFFERED,
        ] {
            assert!(!handles(other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_place_for_two_is_offered_two_seats_as_one_order_once_two_are_free() {
        let h = harness(3, 10);
        let holds = h.sell_out().await;
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE, 2).await.unwrap(), 1);
        assert_eq!(
            h.service.waitlist_position(BOB, SCHEDULE).await.unwrap(),
            (1, 2)
        );

        h.service.release(holds[0], ALICE).await.unwrap();
        assert_eq!(
            h.deliver_last_order(types::RESERVATION_RELEASED).await,
            None,
            "one seat free does not fit a place for two"
        );
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.waiting(), [BOB]);

        h.service.release(holds[1], ALICE).await.unwrap();
        let order = h
            .deliver_last_order(types::RESERVATION_RELEASED)
            .await
            .expect("an offer of two");
        assert_eq!(order.user, BOB);
        let offered: Vec<SeatId> = order.seats.iter().map(|r| r.seat).collect();
        assert_eq!(
            offered,
            [h.seats[0], h.seats[1]],
            "both at once, in seat order"
        );
        for reservation in &order.seats {
            assert_eq!(reservation.order, Some(order.id));
            assert_eq!(reservation.user, BOB);
            assert_eq!(h.status(reservation.id), ReservationStatus::Held);
            assert!(matches!(
                h.seat(reservation.seat),
                SeatState::Held { holder: BOB, .. }
            ));
        }
        assert!(h.waiting().is_empty());
        let payloads = h.store.world().payloads(types::WAITLIST_OFFERED);
        assert_eq!(payloads.len(), 1, "offered once");
        assert_eq!(payloads[0]["quantity"], 2);
        assert_eq!(payloads[0]["orderId"], order.id.value());

        // The first release delivered again: its seat is taken, nothing changes.
        let before = h.store.world().outbox.len();
        let first: ReservationChanged = serde_json::from_value(
            h.store.world().payloads(types::RESERVATION_RELEASED)[0].clone(),
        )
        .unwrap();
        let mut tx = h.store.begin().await.unwrap();
        let again = offer_freed_seat(&mut tx, &first, h.service.policy(), h.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(again, None);
        assert_eq!(h.store.world().outbox.len(), before);
    }

    #[tokio::test]
    async fn a_place_for_more_than_is_free_keeps_its_place_while_a_smaller_one_behind_takes_the_seat()
     {
        let h = harness(2, 10);
        let holds = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE, 2).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE, 1).await.unwrap();

        h.service.release(holds[0], ALICE).await.unwrap();
        let carols = h
            .deliver_last(types::RESERVATION_RELEASED)
            .await
            .expect("the single seat goes to the place that fits");
        assert_eq!((carols.user, carols.seat), (CAROL, h.seats[0]));
        assert_eq!(h.waiting(), [BOB]);
        assert_eq!(
            h.service.waitlist_position(BOB, SCHEDULE).await.unwrap(),
            (1, 2),
            "BOB is still first in line"
        );

        h.service.release(holds[1], ALICE).await.unwrap();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);

        // CAROL gives hers back: two are free at once, and BOB gets both.
        h.service.release(carols.id, CAROL).await.unwrap();
        let bobs = h
            .deliver_last_order(types::RESERVATION_RELEASED)
            .await
            .expect("BOB's two seats");
        assert_eq!(bobs.user, BOB);
        assert_eq!(bobs.seats.len(), 2);
        assert!(h.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_place_waits_for_one_to_the_hold_limit_seats_while_fewer_are_free() {
        let h = harness(3, 4);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        for quantity in [0, 5] {
            assert!(
                matches!(
                    h.service.join_waitlist(BOB, SCHEDULE, quantity).await,
                    Err(ReservationError::InvalidOrder(_))
                ),
                "{quantity}"
            );
        }
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE, 1).await,
            Err(ReservationError::SeatsAvailable(1))
        ));
        assert!(h.waiting().is_empty(), "refusals leave no place behind");
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE, 4).await.unwrap(), 1);
        assert_eq!(
            h.service.waitlist_position(BOB, SCHEDULE).await.unwrap(),
            (1, 4)
        );
    }
}
