use super::{
    domain::{HoldPolicy, Reservation, ReservationError},
    ports::ReservationRepository,
};
use crate::kernel::{Clock, ReservationId, ScheduleId, SeatId, UserId, events::RelayWake};

#[derive(Clone)]
pub struct ReservationService<R, C, W> {
    repo: R,
    clock: C,
    wake: W,
    policy: HoldPolicy,
}

impl<R: ReservationRepository, C: Clock, W: RelayWake> ReservationService<R, C, W> {
    pub fn new(repo: R, clock: C, wake: W, policy: HoldPolicy) -> Self {
        Self {
            repo,
            clock,
            wake,
            policy,
        }
    }

    pub async fn hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> Result<Reservation, ReservationError> {
        let reservation = self
            .repo
            .hold(user, schedule, seat, self.policy, self.clock.now())
            .await?;
        self.wake.wake();
        Ok(reservation)
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

    pub async fn release(&self, id: ReservationId, user: UserId) -> Result<(), ReservationError> {
        self.get(id, user).await?;
        self.repo.release(id, user, self.clock.now()).await?;
        self.wake.wake();
        Ok(())
    }

    /// One sweep over lapsed holds.
    pub async fn sweep(&self, max: u64) -> Result<u64, ReservationError> {
        let expired = self.repo.expire_due(self.clock.now(), max).await?;
        if expired > 0 {
            self.wake.wake();
        }
        Ok(expired)
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}
