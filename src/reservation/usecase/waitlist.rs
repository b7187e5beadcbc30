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
            HoldPolicy, Reservation, ReservationError, SEAT_FREEING, WaitlistEntry,
            may_join_waitlist,
        },
        ports::{ReservationPorts, ReservationRepository, ReservationTx, WaitlistTx},
    },
};

/// How many waited-on schedules one pass of [`ReservationService::close_waitlists`]
/// looks at (the lowest ids first).
pub const WAITLISTS_CHECKED: u64 = 10_000;

impl<P: ReservationPorts> ReservationService<P> {
    /// Puts the user on the waitlist of a schedule on sale with no seat
    /// free; answers their place (1 = the next freed seat is theirs).
    pub async fn join_waitlist(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<u64, ReservationError> {
        retry_on_conflict(|| self.join_once(user, schedule)).await
    }

    async fn join_once(&self, user: UserId, schedule: ScheduleId) -> Result<u64, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The write first; a refusal below drops the transaction with it.
        let joined = tx.join(schedule, user, now).await?;
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
        may_join_waitlist(schedule, status, tx.free_seats(schedule, now).await?)?;
        let Some(entry) = joined else {
            return Err(ReservationError::AlreadyWaitlisted);
        };
        let position = tx
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

    /// The user's place on the schedule's waitlist.
    pub async fn waitlist_position(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<u64, ReservationError> {
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
    offer: Option<&Reservation>,
) -> NewEvent {
    NewEvent::new(
        event_type,
        "waitlist",
        entry.id,
        &WaitlistChanged {
            entry_id: entry.id,
            schedule_id: entry.schedule.value(),
            user_id: entry.user.value(),
            reservation_id: offer.map(|offer| offer.id.value()),
            seat_id: offer.map(|offer| offer.seat.value()),
            expires_at: offer.map(|offer| offer.expires_at),
        },
    )
}

/// Offers the seat `freed` names to the first user on its schedule's
/// waitlist, inside the consumer's transaction (so the offer is made
/// exactly once, with the event's inbox row): a hold in their name until
/// `policy.until(now)`, their place leaves the line, and
/// `ReservationHeld` + `WaitlistOffered` are written. `None` (nothing
/// written) when nobody waits, or the seat is no longer free — someone
/// else took it, or the schedule went off sale — and the line waits for
/// the next freed seat. An offer is not refused for the hold limit: it is
/// the one seat the user waited for.
pub async fn offer_freed_seat<T: WaitlistTx + ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    freed: &ReservationChanged,
    policy: HoldPolicy,
    now: DateTime<Utc>,
) -> Result<Option<Reservation>, ReservationError> {
    let schedule = ScheduleId(freed.schedule_id);
    let seat = SeatId(freed.seat_id);
    let Some(next) = tx.next_waiting(schedule).await? else {
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
    let Some(held) = tx
        .try_hold(
            SeatHold {
                schedule,
                seat,
                user: next.user,
                until: expires_at,
            },
            now,
        )
        .await?
    else {
        return Ok(None);
    };
    let (view, mut events) =
        record_order(tx, next.user, schedule, vec![(seat, held)], expires_at, now).await?;
    let id = view.order.id;
    let Some(offer) = view.order.seats.into_iter().next() else {
        return Err(Fault::unexpected(format!("order {id} holds no seat")).into());
    };
    if !tx.mark_offered(next.id, offer.id, now).await? {
        return Err(Fault::conflict(format!(
            "waitlist place {} changed while a seat was offered to it",
            next.id
        ))
        .into());
    }
    events.push(waitlist_event(types::WAITLIST_OFFERED, &next, Some(&offer)));
    tx.append(events, now).await?;
    metrics::counter!("waitlist_offers_total").increment(1);
    Ok(Some(offer))
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
            domain::ReservationStatus,
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
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap();
        h.service.release(holds[0], ALICE).await.unwrap();
        h
    }

    #[tokio::test]
    async fn the_waitlist_takes_people_only_while_nothing_is_free_one_place_each() {
        let h = harness(2, 10);
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::SeatsAvailable(2))
        ));
        assert!(h.waiting().is_empty(), "a refusal leaves no place behind");
        h.sell_out().await;
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE).await.unwrap(), 1);
        assert_eq!(h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap(), 2);
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::AlreadyWaitlisted)
        ));
        assert_eq!(h.waiting(), [BOB, CAROL]);
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            2
        );
        let joined = h
            .events()
            .into_iter()
            .filter(|event| *event == types::WAITLIST_JOINED)
            .count();
        assert_eq!(joined, 2);
        assert!(matches!(
            h.service.join_waitlist(BOB, ScheduleId(404)).await,
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
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::NotOnSale(SCHEDULE))
        ));
    }

    #[tokio::test]
    async fn when_sales_close_every_place_still_waiting_ends_with_an_event_each() {
        let h = harness(1, 10);
        h.show_in(TimeDelta::minutes(90));
        h.sell_out().await;
        for user in [BOB, CAROL, UserId(4), UserId(5)] {
            h.service.join_waitlist(user, SCHEDULE).await.unwrap();
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
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        // Four minutes later (the hold still live) sales have closed, an
        // hour before the show.
        h.clock.advance(TimeDelta::minutes(4));
        assert!(matches!(
            h.service.join_waitlist(CAROL, SCHEDULE).await,
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
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap();
        h.service.leave_waitlist(BOB, SCHEDULE).await.unwrap();
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            1
        );
        assert!(matches!(
            h.service.leave_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert!(matches!(
            h.service.waitlist_position(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE).await.unwrap(), 2);
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
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
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
}
