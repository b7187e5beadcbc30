//! The waitlist in the world: one place per (schedule, user) and the
//! waitlist transaction port.

use chrono::{DateTime, Utc};

use super::{MemTx, World};
use crate::{
    kernel::{ReservationId, ScheduleId, StoreError, UserId},
    reservation::{domain::WaitlistEntry, ports::WaitlistTx},
};

/// One (schedule, user) row of the waitlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemWaitlistPlace {
    pub id: i64,
    pub schedule: ScheduleId,
    pub user: UserId,
    pub quantity: u32,
    /// `waiting`, `offered`, `left` or `closed`.
    pub status: &'static str,
    pub reservation: Option<ReservationId>,
}

impl MemWaitlistPlace {
    fn entry(&self) -> WaitlistEntry {
        WaitlistEntry {
            id: self.id,
            schedule: self.schedule,
            user: self.user,
            quantity: self.quantity,
        }
    }
}

impl World {
    /// The users waiting on a schedule, first in line first.
    pub fn waiting(&self, schedule: ScheduleId) -> Vec<UserId> {
        self.waitlist
            .iter()
            .filter(|place| place.schedule == schedule && place.status == "waiting")
            .map(|place| place.user)
            .collect()
    }
}

impl WaitlistTx for MemTx {
    async fn join(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        quantity: u32,
        _now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        let work = &mut self.work;
        let existing = work
            .waitlist
            .iter()
            .position(|place| place.schedule == schedule && place.user == user);
        let place = match existing {
            Some(index) if work.waitlist[index].status == "waiting" => return Ok(None),
            Some(index) => {
                let mut place = work.waitlist.remove(index);
                place.status = "waiting";
                place.quantity = quantity;
                place.reservation = None;
                place
            }
            None => MemWaitlistPlace {
                id: work.next_id(),
                schedule,
                user,
                quantity,
                status: "waiting",
                reservation: None,
            },
        };
        let entry = place.entry();
        work.waitlist.push(place);
        Ok(Some(entry))
    }

    async fn leave(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        _now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .find(|place| {
                place.schedule == schedule && place.user == user && place.status == "waiting"
            })
            .map(|place| {
                place.status = "left";
                place.entry()
            }))
    }

    async fn waitlist_position(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
    ) -> Result<Option<(u64, u32)>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter()
            .filter(|place| place.schedule == schedule && place.status == "waiting")
            .enumerate()
            .find(|(_, place)| place.user == user)
            .map(|(index, place)| (index as u64 + 1, place.quantity)))
    }

    async fn close_waiting(
        &mut self,
        schedule: ScheduleId,
        _now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .filter(|place| place.schedule == schedule && place.status == "waiting")
            .take(max as usize)
            .map(|place| {
                place.status = "closed";
                place.entry()
            })
            .collect())
    }

    async fn next_waiting(
        &mut self,
        schedule: ScheduleId,
        fits: u64,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter()
            .find(|place| {
                place.schedule == schedule
                    && place.status == "waiting"
                    && u64::from(place.quantity) <= fits
            })
            .map(MemWaitlistPlace::entry))
    }

    async fn mark_offered(
        &mut self,
        entry: i64,
        reservation: ReservationId,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .find(|place| place.id == entry && place.status == "waiting")
            .map(|place| {
                place.status = "offered";
                place.reservation = Some(reservation);
            })
            .is_some())
    }
}
