//! The catalog's seats and schedule statuses in the world: the seat
//! transaction port and the seat reads.

use chrono::{DateTime, Utc};

use super::{MemTx, MemoryUow, World};
use crate::{
    catalog::{
        domain::{HeldSeat, ScheduleStatus, Seat, SeatHold, SeatPlace, SeatState},
        ports::{SeatReads, SeatTx},
    },
    kernel::{ConcertId, Points, ReservationId, ScheduleId, SeatId, StoreError},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSeat {
    pub schedule: ScheduleId,
    pub concert: ConcertId,
    pub number: u32,
    pub price: Points,
    pub state: SeatState,
    pub reservation: Option<ReservationId>,
    pub grade: String,
    pub place: SeatPlace,
}

/// Whether a seat in this state can be held at `now` (a lapsed hold frees
/// it).
fn free_at(state: SeatState, now: DateTime<Utc>) -> bool {
    match state {
        SeatState::Available => true,
        SeatState::Held { until, .. } => until <= now,
        SeatState::Sold { .. } => false,
    }
}

impl World {
    pub fn add_seat(
        &mut self,
        schedule: ScheduleId,
        concert: ConcertId,
        number: u32,
        price: i64,
    ) -> SeatId {
        let id = SeatId(self.next_id());
        self.seats.insert(
            id,
            MemSeat {
                schedule,
                concert,
                number,
                price: Points::new(price).expect("a valid price"),
                state: SeatState::Available,
                reservation: None,
                grade: "R".into(),
                place: SeatPlace::default(),
            },
        );
        id
    }

    fn seat_of(&self, id: SeatId) -> Option<Seat> {
        self.seats.get(&id).map(|seat| Seat {
            id,
            schedule_id: seat.schedule,
            number: seat.number,
            grade: seat.grade.clone(),
            price: seat.price,
            place: seat.place.clone(),
            state: seat.state,
        })
    }

    /// The seat, if this reservation holds it.
    fn held_seat(&mut self, seat: SeatId, reservation: ReservationId) -> Option<&mut MemSeat> {
        self.seats.get_mut(&seat).filter(|found| {
            found.reservation == Some(reservation) && matches!(found.state, SeatState::Held { .. })
        })
    }
}

impl SeatTx for MemTx {
    async fn try_hold(
        &mut self,
        hold: SeatHold,
        now: DateTime<Utc>,
    ) -> Result<Option<HeldSeat>, StoreError> {
        self.check()?;
        let (schedule, seat) = (hold.schedule, hold.seat);
        if self
            .work
            .schedule_statuses
            .get(&schedule)
            .is_some_and(|(status, _)| *status != ScheduleStatus::OnSale)
        {
            return Ok(None);
        }
        let Some(found) = self
            .work
            .seats
            .get_mut(&seat)
            .filter(|found| found.schedule == schedule)
        else {
            return Ok(None);
        };
        if !free_at(found.state, now) {
            return Ok(None);
        }
        found.state = SeatState::Held {
            holder: hold.user,
            until: hold.until,
        };
        found.reservation = None;
        let (price, concert) = (found.price, found.concert);
        let held = self.work.seat_of(seat).ok_or_else(|| {
            StoreError::Unexpected(anyhow::anyhow!("seat {seat} vanished while held"))
        })?;
        Ok(Some(HeldSeat {
            price,
            concert,
            seat: held,
            // A schedule the test gave no start to starts in the far future.
            starts_at: self
                .work
                .shows
                .get(&schedule)
                .copied()
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }))
    }

    async fn exists(&mut self, schedule: ScheduleId, seat: SeatId) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self
            .work
            .seats
            .get(&seat)
            .is_some_and(|found| found.schedule == schedule))
    }

    async fn attach(&mut self, seat: SeatId, reservation: ReservationId) -> Result<(), StoreError> {
        self.check()?;
        if let Some(found) = self.work.seats.get_mut(&seat) {
            found.reservation = Some(reservation);
        }
        Ok(())
    }

    async fn release(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let Some(held) = self.work.held_seat(seat, reservation) else {
            return Ok(false);
        };
        held.state = SeatState::Available;
        held.reservation = None;
        Ok(true)
    }

    async fn extend(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let Some(held) = self.work.held_seat(seat, reservation) else {
            return Ok(false);
        };
        if let SeatState::Held { holder, .. } = held.state {
            held.state = SeatState::Held { holder, until };
        }
        Ok(true)
    }

    async fn sell(&mut self, seat: SeatId, reservation: ReservationId) -> Result<bool, StoreError> {
        self.check()?;
        let Some(held) = self.work.held_seat(seat, reservation) else {
            return Ok(false);
        };
        if let SeatState::Held { holder, .. } = held.state {
            held.state = SeatState::Sold { owner: holder };
        }
        Ok(true)
    }

    async fn unsell(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.seats.get_mut(&seat) {
            Some(sold)
                if sold.reservation == Some(reservation)
                    && matches!(sold.state, SeatState::Sold { .. }) =>
            {
                sold.state = SeatState::Available;
                sold.reservation = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn schedule_status(
        &mut self,
        schedule: ScheduleId,
    ) -> Result<Option<(ScheduleStatus, DateTime<Utc>)>, StoreError> {
        self.check()?;
        if let Some(known) = self.work.schedule_statuses.get(&schedule) {
            return Ok(Some(*known));
        }
        Ok(self
            .work
            .seats
            .values()
            .any(|seat| seat.schedule == schedule)
            .then_some((ScheduleStatus::OnSale, DateTime::<Utc>::UNIX_EPOCH)))
    }

    async fn set_schedule_status(
        &mut self,
        schedule: ScheduleId,
        from: ScheduleStatus,
        to: ScheduleStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self.schedule_status(schedule).await? {
            Some((status, _)) if status == from => {
                self.work.schedule_statuses.insert(schedule, (to, now));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn starts_at(
        &mut self,
        schedule: ScheduleId,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.check()?;
        Ok(self.work.shows.get(&schedule).copied())
    }

    async fn free_seats(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self
            .work
            .seats
            .values()
            .filter(|seat| seat.schedule == schedule && free_at(seat.state, now))
            .count() as u64)
    }

    async fn free_seat_ids(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<SeatId>, StoreError> {
        self.check()?;
        // By id: the seats are kept in id order.
        Ok((self.work.seats.iter())
            .filter(|(_, seat)| seat.schedule == schedule && free_at(seat.state, now))
            .map(|(id, _)| *id)
            .take(usize::try_from(max).unwrap_or(usize::MAX))
            .collect())
    }
}

impl SeatReads for MemoryUow {
    /// A schedule the test gave no start to starts in the far future.
    async fn starting_by(
        &self,
        schedules: &[ScheduleId],
        by: DateTime<Utc>,
    ) -> Result<Vec<ScheduleId>, StoreError> {
        self.check()?;
        let world = self.world();
        Ok(schedules
            .iter()
            .copied()
            .filter(|schedule| {
                world
                    .shows
                    .get(schedule)
                    .is_some_and(|starts| *starts <= by)
            })
            .collect())
    }

    async fn seats_by_id(&self, ids: &[SeatId]) -> Result<Vec<Seat>, StoreError> {
        self.check()?;
        let world = self.world();
        Ok(ids.iter().filter_map(|id| world.seat_of(*id)).collect())
    }

    async fn schedule_seats(&self, schedule: ScheduleId) -> Result<Vec<Seat>, StoreError> {
        self.check()?;
        let world = self.world();
        Ok((world.seats.keys())
            .filter_map(|id| world.seat_of(*id))
            .filter(|seat| seat.schedule_id == schedule)
            .collect())
    }

    async fn seat(&self, schedule: ScheduleId, seat: SeatId) -> Result<Option<Seat>, StoreError> {
        self.check()?;
        Ok(self
            .world()
            .seat_of(seat)
            .filter(|found| found.schedule_id == schedule))
    }
}
