//! Reservations in the world: the reservation transaction port and the
//! reservation reads.

use chrono::{DateTime, Utc};

use super::{MemTx, MemoryUow, newest_first};
use crate::{
    kernel::{
        OrderId, PageRequest, PaymentId, ReservationId, ScheduleId, SeatId, StoreError, UserId,
    },
    reservation::{
        domain::{
            NewOrder, NewReservation, Order, Reservation, ReservationError, ReservationStatus,
            Transition,
        },
        ports::{ReservationRepository, ReservationTx},
    },
};

impl MemoryUow {
    /// Holds on a schedule that could still be withdrawn (asked by both the
    /// reservation and the payment reads).
    pub(super) fn unpaid_holds_of(&self, schedule: ScheduleId, max: u64) -> Vec<ReservationId> {
        self.world()
            .reservations
            .values()
            .filter(|held| held.schedule == schedule && Transition::Withdraw.applies_to(held))
            .map(|held| held.id)
            .take(max as usize)
            .collect()
    }
}

impl ReservationTx for MemTx {
    async fn lock_user_and_count_live(
        &mut self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.work.user_locks.push(user);
        Ok(self
            .work
            .reservations
            .values()
            .filter(|reservation| reservation.user == user && reservation.is_live(now))
            .count() as u64)
    }

    async fn insert(
        &mut self,
        new: &NewReservation,
        _: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        self.check()?;
        let reservation = Reservation {
            id: ReservationId(self.work.next_id()),
            user: new.user,
            concert: new.concert,
            schedule: new.schedule,
            seat: new.seat,
            price: new.price,
            status: ReservationStatus::Held,
            expires_at: new.expires_at,
            payment: None,
            order: new.order,
        };
        self.work
            .reservations
            .insert(reservation.id, reservation.clone());
        Ok(reservation)
    }

    async fn get(&mut self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        self.check()?;
        Ok(self.work.reservations.get(&id).cloned())
    }

    async fn insert_order(
        &mut self,
        new: &NewOrder,
        now: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        self.check()?;
        let order = new.stored(OrderId(self.work.next_id()), now);
        self.work.orders.insert(order.id, order.clone());
        Ok(order)
    }

    async fn of_payment(&mut self, payment: PaymentId) -> Result<Vec<Reservation>, StoreError> {
        self.check()?;
        Ok(self.work.seats_where(|r| r.payment == Some(payment)))
    }

    async fn held_on_seat(
        &mut self,
        seat: SeatId,
        except: ReservationId,
    ) -> Result<Vec<Reservation>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .reservations
            .values()
            .filter(|other| {
                other.seat == seat && other.id != except && other.status == ReservationStatus::Held
            })
            .cloned()
            .collect())
    }

    async fn transition(
        &mut self,
        id: ReservationId,
        change: Transition,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let Some(reservation) = self.work.reservations.get_mut(&id) else {
            return Ok(false);
        };
        if !change.applies_to(reservation) {
            return Ok(false);
        }
        reservation.status = change.target();
        Ok(true)
    }

    async fn set_payment(
        &mut self,
        id: ReservationId,
        payment: PaymentId,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check()?;
        if let Some(reservation) = self.work.reservations.get_mut(&id) {
            reservation.payment = Some(payment);
        }
        Ok(())
    }
}

impl super::World {
    /// The reservations that match, by seat id.
    fn seats_where(&self, matches: impl Fn(&Reservation) -> bool) -> Vec<Reservation> {
        let mut found: Vec<Reservation> = (self.reservations.values())
            .filter(|r| matches(r))
            .cloned()
            .collect();
        found.sort_by_key(|r| r.seat);
        found
    }

    /// The stored order with its seats.
    pub fn order(&self, id: OrderId) -> Option<Order> {
        let order = self.orders.get(&id)?;
        Some(Order {
            seats: self.seats_where(|r| r.order == Some(id)),
            ..order.clone()
        })
    }
}

impl ReservationRepository for MemoryUow {
    async fn order(&self, id: OrderId) -> Result<Option<Order>, ReservationError> {
        self.check()?;
        Ok(self.world().order(id))
    }

    async fn orders_of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<Order>, ReservationError> {
        self.check()?;
        let world = self.world();
        let theirs = (world.orders.values()).filter(|order| order.user == user);
        let page = newest_first(theirs, |order| order.id.value(), page);
        Ok(page
            .into_iter()
            .filter_map(|order| world.order(order.id))
            .collect())
    }

    async fn get(&self, id: ReservationId) -> Result<Option<Reservation>, ReservationError> {
        self.check()?;
        Ok(self.world().reservations.get(&id).cloned())
    }

    async fn unpaid_holds(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        self.check()?;
        Ok(self.unpaid_holds_of(schedule, max))
    }

    async fn of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<Reservation>, ReservationError> {
        self.check()?;
        let world = self.world();
        let theirs = (world.reservations.values()).filter(|reservation| reservation.user == user);
        Ok(newest_first(
            theirs.cloned(),
            |reservation| reservation.id.value(),
            page,
        ))
    }

    async fn waitlisted_schedules(&self, max: u64) -> Result<Vec<ScheduleId>, ReservationError> {
        self.check()?;
        let mut ids: Vec<ScheduleId> = self
            .world()
            .waitlist
            .iter()
            .filter(|place| place.status == "waiting")
            .map(|place| place.schedule)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(max as usize);
        Ok(ids)
    }

    async fn lapsed(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        self.check()?;
        Ok(self
            .world()
            .reservations
            .values()
            .filter(|reservation| Transition::Lapse { now }.applies_to(reservation))
            .map(|reservation| reservation.id)
            .take(max as usize)
            .collect())
    }
}
