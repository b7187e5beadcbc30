use super::{
    domain::{Compensation, CompensationStatus, Payment, PaymentError},
    ports::PaymentRepository,
};
use crate::kernel::{Clock, PaymentId, ReservationId, ScheduleId, UserId, events::RelayWake};

#[derive(Clone)]
pub struct PaymentService<R, C, W> {
    repo: R,
    clock: C,
    wake: W,
}

impl<R: PaymentRepository, C: Clock, W: RelayWake> PaymentService<R, C, W> {
    pub fn new(repo: R, clock: C, wake: W) -> Self {
        Self { repo, clock, wake }
    }

    pub async fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Payment, PaymentError> {
        let payment = self.repo.pay(user, reservation, self.clock.now()).await?;
        self.wake.wake();
        metrics::counter!("payments_total").increment(1);
        Ok(payment)
    }

    /// The user's own payment; someone else's answers not found.
    pub async fn get(&self, id: PaymentId, user: UserId) -> Result<Payment, PaymentError> {
        match self.repo.get(id).await? {
            Some(payment) if payment.user == user => Ok(payment),
            _ => Err(PaymentError::NotFound(id)),
        }
    }

    pub async fn schedule_of(
        &self,
        reservation: ReservationId,
        user: UserId,
    ) -> Result<ScheduleId, PaymentError> {
        self.repo
            .schedule_of(reservation, user)
            .await?
            .ok_or(PaymentError::ReservationNotFound(reservation))
    }

    pub async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        limit: u64,
    ) -> Result<Vec<Compensation>, PaymentError> {
        self.repo.compensations(status, limit.clamp(1, 500)).await
    }

    pub async fn retry_compensation(&self, id: i64) -> Result<(), PaymentError> {
        self.repo.retry_compensation(id, self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::{
        kernel::{ManualClock, Points},
        payment::domain::PaymentStatus,
    };

    #[derive(Clone, Default)]
    struct Wakes(Arc<Mutex<u32>>);

    impl RelayWake for Wakes {
        fn wake(&self) {
            *self.0.lock().unwrap() += 1;
        }
    }

    /// Answers `pay` with a scripted outcome.
    #[derive(Clone)]
    struct Scripted(Arc<dyn Fn() -> Result<Payment, PaymentError> + Send + Sync>);

    impl PaymentRepository for Scripted {
        async fn pay(
            &self,
            _: UserId,
            _: ReservationId,
            _: DateTime<Utc>,
        ) -> Result<Payment, PaymentError> {
            (self.0)()
        }
        async fn get(&self, _: PaymentId) -> Result<Option<Payment>, PaymentError> {
            (self.0)().map(Some)
        }
        async fn schedule_of(
            &self,
            _: ReservationId,
            _: UserId,
        ) -> Result<Option<ScheduleId>, PaymentError> {
            Ok(None)
        }
        async fn compensations(
            &self,
            _: Option<CompensationStatus>,
            _: u64,
        ) -> Result<Vec<Compensation>, PaymentError> {
            Ok(vec![])
        }
        async fn retry_compensation(&self, id: i64, _: DateTime<Utc>) -> Result<(), PaymentError> {
            Err(PaymentError::CompensationNotFound(id))
        }
    }

    fn payment(user: i64) -> Payment {
        Payment {
            id: PaymentId(1),
            user: UserId(user),
            reservation: ReservationId(2),
            amount: Points::new(100).unwrap(),
            status: PaymentStatus::Paid,
        }
    }

    fn service(
        script: impl Fn() -> Result<Payment, PaymentError> + Send + Sync + 'static,
    ) -> (PaymentService<Scripted, ManualClock, Wakes>, Wakes) {
        let wakes = Wakes::default();
        (
            PaymentService::new(
                Scripted(Arc::new(script)),
                ManualClock::new(Utc::now()),
                wakes.clone(),
            ),
            wakes,
        )
    }

    #[tokio::test]
    async fn a_payment_wakes_the_relay_and_a_refusal_does_not() {
        let (ok, wakes) = service(|| Ok(payment(7)));
        assert_eq!(
            ok.pay(UserId(7), ReservationId(2)).await.unwrap().status,
            PaymentStatus::Paid
        );
        assert_eq!(*wakes.0.lock().unwrap(), 1);

        for refusal in [
            || PaymentError::InsufficientPoints,
            || PaymentError::HoldExpired(ReservationId(2)),
            || PaymentError::AlreadyPaid(ReservationId(2)),
            || PaymentError::ReservationNotFound(ReservationId(2)),
        ] {
            let (refused, wakes) = service(move || Err(refusal()));
            assert!(refused.pay(UserId(7), ReservationId(2)).await.is_err());
            assert_eq!(
                *wakes.0.lock().unwrap(),
                0,
                "nothing was written, nothing to relay"
            );
        }
    }

    #[tokio::test]
    async fn someone_elses_payment_is_not_found() {
        let (service, _) = service(|| Ok(payment(7)));
        assert!(service.get(PaymentId(1), UserId(7)).await.is_ok());
        assert!(matches!(
            service.get(PaymentId(1), UserId(8)).await,
            Err(PaymentError::NotFound(_))
        ));
        assert!(matches!(
            service.schedule_of(ReservationId(2), UserId(7)).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
    }
}
