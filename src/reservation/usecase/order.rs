//! Orders of several seats: held all together in one transaction or not at
//! all, by seat ids or best-available, and the buyer's orders.

use chrono::DateTime;

use super::ReservationService;
use crate::{
    catalog::{
        domain::{Availability, Seat, SeatSpot, best_available},
        ports::SeatReads,
    },
    kernel::{
        Clock, OrderId, Page, PageRequest, ScheduleId, SeatId, UserId, events::RelayWake,
        retry_on_conflict,
    },
    reservation::{
        domain::{MAX_PAGE, Order, OrderView, ReservationError, SeatChoice},
        ports::{ReservationPorts, ReservationRepository},
    },
};

/// How often best-available picks again when someone takes one of its
/// seats between the pick and the hold.
const PICK_ATTEMPTS: usize = 3;

impl<P: ReservationPorts> ReservationService<P> {
    /// Holds the chosen seats for the user as one order: every seat or
    /// none. The seats count against the hold limit together.
    pub async fn order(
        &self,
        user: UserId,
        schedule: ScheduleId,
        choice: SeatChoice,
    ) -> Result<OrderView, ReservationError> {
        let order = match choice {
            SeatChoice::Seats(mut seats) => {
                // Every transaction locks seats in id order.
                seats.sort_unstable();
                seats.dedup();
                retry_on_conflict(|| self.attempt_order(user, schedule, &seats)).await?
            }
            SeatChoice::BestAvailable { grade, quantity } => {
                self.best_available(user, schedule, &grade, quantity)
                    .await?
            }
        };
        self.wake.wake();
        metrics::counter!("orders_total").increment(1);
        // The answer comes from the transaction itself: once the order is
        // committed nothing may fail it.
        Ok(order)
    }

    /// The orders with their seats' places, in one read of the catalog.
    async fn views(&self, orders: Vec<Order>) -> Result<Vec<OrderView>, ReservationError> {
        let ids: Vec<SeatId> = (orders.iter())
            .flat_map(|order| order.seats.iter().map(|r| r.seat))
            .collect();
        let hall = self.seats.seats_by_id(&ids).await?;
        Ok(orders
            .into_iter()
            .map(|order| OrderView {
                places: (hall.iter())
                    .filter(|seat| order.seats.iter().any(|r| r.seat == seat.id))
                    .cloned()
                    .collect(),
                order,
            })
            .collect())
    }

    /// Picks the best free seats of the grade (together in one row when
    /// the hall allows, stranding no lone seat when it can) and holds
    /// them; if someone takes one meanwhile, picks again.
    async fn best_available(
        &self,
        user: UserId,
        schedule: ScheduleId,
        grade: &str,
        quantity: usize,
    ) -> Result<OrderView, ReservationError> {
        // One pick at a time per schedule on this instance: a crowd asking
        // for the best seats would otherwise all pick the same block and
        // all but one lose it. Between instances a lost pick picks again.
        let _turn = self.picks.lock(schedule).await;
        let mut attempt = 1;
        loop {
            let hall = self.seats.schedule_seats(schedule).await?;
            if hall.is_empty() {
                return Err(ReservationError::ScheduleNotFound(schedule));
            }
            let picked = pick(&hall, grade, quantity, self.clock.now()).ok_or_else(|| {
                ReservationError::TooFewSeats {
                    grade: grade.to_owned(),
                    quantity,
                }
            })?;
            match retry_on_conflict(|| self.attempt_order(user, schedule, &picked)).await {
                Err(ReservationError::SeatUnavailable(_)) if attempt < PICK_ATTEMPTS => {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// The user's own order; someone else's answers not found.
    pub async fn get_order(
        &self,
        id: OrderId,
        user: UserId,
    ) -> Result<OrderView, ReservationError> {
        let theirs = (self.repo.order(id).await?).filter(|order| order.user == user);
        let order = theirs.ok_or(ReservationError::OrderNotFound(id))?;
        Ok(self.views(vec![order]).await?.remove(0))
    }

    /// A page of the user's own orders, newest first, with their seats.
    pub async fn my_orders(
        &self,
        user: UserId,
        asked: PageRequest,
    ) -> Result<Page<OrderView>, ReservationError> {
        let page = (asked.read(
            MAX_PAGE,
            |page| self.repo.orders_of_user(user, page),
            |o| o.id.value(),
        ))
        .await?;
        let next_cursor = page.next_cursor;
        let items = self.views(page.items).await?;
        Ok(Page { items, next_cursor })
    }
}

/// The seats best-available holds for `quantity` of `grade` in this hall
/// at `now`, in id order; `None` when fewer are free.
fn pick(
    hall: &[Seat],
    grade: &str,
    quantity: usize,
    now: DateTime<chrono::Utc>,
) -> Option<Vec<SeatId>> {
    let spots: Vec<SeatSpot<SeatId>> = hall
        .iter()
        .map(|seat| SeatSpot {
            id: seat.id,
            section: seat.place.section.clone(),
            row: seat.place.row.clone(),
            number: seat.number,
            free: seat.availability(now) == Availability::Available,
            of_grade: seat.grade == grade,
        })
        .collect();
    let mut picked = best_available(&spots, quantity)?;
    picked.sort_unstable();
    Some(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::domain::{SeatPlace, SeatState},
        kernel::events::types,
        reservation::{
            domain::{HoldPolicy, OrderStatus, ReservationStatus},
            usecase::fake::{ALICE, BOB, Harness, SCHEDULE, harness},
        },
    };

    fn seats(h: &Harness, which: &[usize]) -> SeatChoice {
        SeatChoice::Seats(which.iter().map(|i| h.seats[*i]).collect())
    }

    fn best(quantity: usize) -> SeatChoice {
        SeatChoice::BestAvailable {
            grade: "R".into(),
            quantity,
        }
    }

    /// Lays the harness's seats out in rows of `per_row`, rows "1", "2", …
    fn rows(h: &Harness, per_row: usize) {
        let mut world = h.store.world();
        for (at, id) in h.seats.iter().enumerate() {
            let seat = world.seats.get_mut(id).unwrap();
            seat.place = SeatPlace {
                section: None,
                row: Some((at / per_row + 1).to_string()),
            };
        }
    }

    fn held_by(h: &Harness, at: usize) -> Option<crate::kernel::UserId> {
        match h.seat(h.seats[at]) {
            SeatState::Held { holder, .. } => Some(holder),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_order_holds_every_seat_it_names_in_one_order() {
        let h = harness(6, 4);
        let view = h
            .service
            .order(ALICE, SCHEDULE, seats(&h, &[4, 1, 2]))
            .await
            .unwrap();
        let order = &view.order;
        assert_eq!(order.status_at(h.clock.now()), OrderStatus::Held);
        let held: Vec<_> = order.seats.iter().map(|r| r.seat).collect();
        assert_eq!(held, vec![h.seats[1], h.seats[2], h.seats[4]], "by seat id");
        assert!(
            order
                .seats
                .iter()
                .all(|r| r.order == Some(order.id) && r.user == ALICE)
        );
        assert_eq!(order.amount().value(), 3_000);
        assert_eq!(view.places.len(), 3, "each seat's number and place");
        for at in [1, 2, 4] {
            assert_eq!(held_by(&h, at), Some(ALICE));
        }
        assert_eq!(h.events(), vec![types::RESERVATION_HELD; 3]);
        assert_eq!(
            h.store.world().payloads(types::RESERVATION_HELD)[0]["orderId"],
            order.id.value()
        );
        assert_eq!(h.wakes.count(), 1);
        // The buyer reads it back; someone else cannot.
        assert_eq!(
            h.service.get_order(order.id, ALICE).await.unwrap().order,
            *order
        );
        assert!(matches!(
            h.service.get_order(order.id, BOB).await,
            Err(ReservationError::OrderNotFound(_))
        ));
    }

    #[tokio::test]
    async fn one_taken_seat_refuses_the_whole_order_naming_it_and_nothing_is_held() {
        let h = harness(4, 4);
        h.service.hold(BOB, SCHEDULE, h.seats[2]).await.unwrap();
        let events_before = h.events().len();
        let refused = h
            .service
            .order(ALICE, SCHEDULE, seats(&h, &[1, 2, 3]))
            .await;
        match refused {
            Err(ReservationError::SeatUnavailable(taken)) => assert_eq!(taken, vec![h.seats[2]]),
            other => panic!("expected seat_unavailable, got {other:?}"),
        }
        assert_eq!(held_by(&h, 1), None, "the seats it took were given back");
        assert_eq!(held_by(&h, 3), None);
        assert_eq!(held_by(&h, 2), Some(BOB));
        assert_eq!(h.events().len(), events_before, "nothing written");
        assert_eq!(h.store.world().orders.len(), 1, "only Bob's order of one");
    }

    #[tokio::test]
    async fn the_hold_limit_counts_seats() {
        let h = harness(8, 4);
        h.service
            .order(ALICE, SCHEDULE, seats(&h, &[0, 1]))
            .await
            .unwrap();
        assert!(matches!(
            h.service
                .order(ALICE, SCHEDULE, seats(&h, &[2, 3, 4]))
                .await,
            Err(ReservationError::HoldLimit(4))
        ));
        assert_eq!(held_by(&h, 2), None, "the refused order held nothing");
        h.service
            .order(ALICE, SCHEDULE, seats(&h, &[2, 3]))
            .await
            .unwrap();
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[5]).await,
            Err(ReservationError::HoldLimit(4))
        ));
    }

    #[tokio::test]
    async fn best_available_seats_a_party_together_without_stranding_a_seat() {
        // Two rows of five: row 1 has seat 1 taken, row 2 is empty.
        let h = harness(10, 4);
        rows(&h, 5);
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        let view = h.service.order(ALICE, SCHEDULE, best(3)).await.unwrap();
        let picked: Vec<_> = view.order.seats.iter().map(|r| r.seat).collect();
        // Row 1's seats 2-4 would strand seat 5; 3-5 strand seat 2; but
        // 2-4 leaves seat 5 at the wall, not between taken seats.
        assert_eq!(picked, vec![h.seats[1], h.seats[2], h.seats[3]]);
        // Two more: row 1 has only seat 5 left, so row 2's front.
        let view = h.service.order(BOB, SCHEDULE, best(2)).await.unwrap();
        let picked: Vec<_> = view.order.seats.iter().map(|r| r.seat).collect();
        assert_eq!(picked, vec![h.seats[5], h.seats[6]]);
    }

    #[tokio::test]
    async fn best_available_refuses_when_too_few_seats_of_the_grade_are_free() {
        let h = harness(3, 4);
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(matches!(
            h.service.order(ALICE, SCHEDULE, best(3)).await,
            Err(ReservationError::TooFewSeats { quantity: 3, .. })
        ));
        let other_grade = SeatChoice::BestAvailable {
            grade: "VIP".into(),
            quantity: 1,
        };
        assert!(matches!(
            h.service.order(ALICE, SCHEDULE, other_grade).await,
            Err(ReservationError::TooFewSeats { .. })
        ));
        assert!(matches!(
            h.service
                .order(ALICE, crate::kernel::ScheduleId(404), best(1))
                .await,
            Err(ReservationError::ScheduleNotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_single_hold_is_an_order_of_one_and_lists_with_the_buyers_orders() {
        let h = harness(5, 4);
        let hold = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        let pair = h
            .service
            .order(ALICE, SCHEDULE, seats(&h, &[1, 2]))
            .await
            .unwrap();
        h.service
            .order(BOB, SCHEDULE, seats(&h, &[3]))
            .await
            .unwrap();
        let page = h
            .service
            .my_orders(ALICE, PageRequest::asked(None, 1))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].order.id, pair.order.id, "newest first");
        let rest = h
            .service
            .my_orders(ALICE, PageRequest::asked(page.next_cursor, 10))
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].order.seats, vec![hold.clone()]);
        assert_eq!(hold.order, Some(rest.items[0].order.id));
        assert_eq!(rest.next_cursor, None);
        // A lapsed order reads as expired.
        h.clock.advance(chrono::TimeDelta::minutes(6));
        let lapsed = h.service.get_order(pair.order.id, ALICE).await.unwrap();
        assert_eq!(lapsed.order.status_at(h.clock.now()), OrderStatus::Expired);
        assert!(
            (lapsed.order.seats.iter())
                .all(|r| r.status_at(h.clock.now()) == ReservationStatus::Expired)
        );
    }

    #[test]
    fn an_order_names_its_seats_or_a_grade_and_quantity_within_the_hold_limit() {
        let policy = HoldPolicy {
            hold_minutes: 5,
            per_user_limit: 4,
            sales_close_before_minutes: 0,
        };
        let parse = |ids: Option<Vec<i64>>, grade: Option<&str>, quantity: Option<u32>| {
            SeatChoice::parse(ids, grade.map(str::to_owned), quantity, policy)
        };
        assert_eq!(
            parse(Some(vec![3, 1]), None, None).unwrap(),
            SeatChoice::Seats(vec![SeatId(1), SeatId(3)])
        );
        assert_eq!(
            parse(None, Some(" R "), Some(2)).unwrap(),
            SeatChoice::BestAvailable {
                grade: "R".into(),
                quantity: 2
            }
        );
        for invalid in [
            parse(Some(vec![1, 1]), None, None),
            parse(Some(vec![]), None, None),
            parse(None, None, None),
            parse(Some(vec![1]), Some("R"), Some(1)),
            parse(None, Some("R"), None),
            parse(None, Some("  "), Some(1)),
            parse(None, Some("R"), Some(0)),
        ] {
            assert!(
                matches!(invalid, Err(ReservationError::InvalidOrder(_))),
                "{invalid:?}"
            );
        }
        assert!(matches!(
            parse(Some(vec![1, 2, 3, 4, 5]), None, None),
            Err(ReservationError::HoldLimit(4))
        ));
        assert!(matches!(
            parse(None, Some("R"), Some(5)),
            Err(ReservationError::HoldLimit(4))
        ));
    }
}
