//! The admission gate other modules ask: whether a queue token admits its
//! holder to a concert, or to the concert a schedule belongs to.

use super::QueueService;
use crate::{
    kernel::{Clock, ConcertId, ScheduleId, UserId},
    queue::{
        domain::{QueueError, QueuePass},
        ports::{ConcertDirectory, QueuePorts, QueueStore},
    },
};

impl<P: QueuePorts> QueueService<P> {
    /// Ok when `token` is the caller's own, for `concert`, and admitted.
    pub async fn check_admission(
        &self,
        token: &str,
        user: UserId,
        concert: ConcertId,
    ) -> Result<QueuePass, QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        if pass.user != user {
            return Err(QueueError::NotYourToken);
        }
        if pass.concert != concert {
            return Err(QueueError::WrongConcert {
                token: pass.concert,
                wanted: concert,
            });
        }
        if !self.store.is_active(&pass, now).await? {
            return Err(QueueError::NotAdmitted(concert));
        }
        Ok(pass)
    }

    /// The gate of the seat map, holds and payments: Ok when the queue
    /// token admits `user` to the concert `schedule` belongs to. An unknown
    /// schedule passes: the caller answers 404.
    pub async fn check_schedule(
        &self,
        token: &str,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<(), QueueError> {
        // Verify the token before touching the catalog.
        self.tokens.verify(token, self.clock.now())?;
        match self.directory.concert_of_schedule(schedule).await? {
            Some(concert) => self.check_admission(token, user, concert).await.map(|_| ()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::queue::usecase::fake::{ALICE, BOB, HALL, OTHER_HALL, harness, unavailable};

    // --- check_admission ---

    #[tokio::test]
    async fn an_active_token_of_the_caller_for_the_concert_is_admitted() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        let pass = h
            .service
            .check_admission(&alice.token, ALICE, HALL)
            .await
            .unwrap();
        assert_eq!(pass.token_id, alice.token_id);
    }

    #[tokio::test]
    async fn a_waiting_token_is_not_admitted() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        assert!(matches!(
            h.service.check_admission(&alice.token, ALICE, HALL).await,
            Err(QueueError::NotAdmitted(HALL))
        ));
    }

    #[tokio::test]
    async fn an_active_token_is_refused_past_its_time_to_another_user_or_concert() {
        // Alice is admitted to `admitted_to` for five minutes; `asker` asks
        // about `asked_for` once `later` has passed.
        let refusal = |admitted_to, asker, asked_for, later| async move {
            let h = harness();
            let alice = h.admitted(ALICE, admitted_to, TimeDelta::minutes(5)).await;
            h.clock.advance(later);
            h.service
                .check_admission(&alice.token, asker, asked_for)
                .await
                .unwrap_err()
        };
        let past_its_time = refusal(HALL, ALICE, HALL, TimeDelta::minutes(5)).await;
        assert!(matches!(past_its_time, QueueError::NotAdmitted(HALL)));
        let another_user = refusal(HALL, BOB, HALL, TimeDelta::zero()).await;
        assert!(matches!(another_user, QueueError::NotYourToken));
        let another_concert = refusal(OTHER_HALL, ALICE, HALL, TimeDelta::zero()).await;
        assert!(matches!(
            another_concert,
            QueueError::WrongConcert {
                token: OTHER_HALL,
                wanted: HALL
            }
        ));
    }

    #[tokio::test]
    async fn a_forged_token_is_not_admitted() {
        let h = harness();
        assert!(matches!(
            h.service.check_admission("forged", ALICE, HALL).await,
            Err(QueueError::BadToken)
        ));
    }

    // --- check_schedule ---

    #[tokio::test]
    async fn a_schedule_of_the_admitted_concert_passes() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        h.service
            .check_schedule(&alice.token, ALICE, ScheduleId(100))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_schedule_of_another_concert_is_refused() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        assert!(matches!(
            h.service
                .check_schedule(&alice.token, ALICE, ScheduleId(200))
                .await,
            Err(QueueError::WrongConcert {
                token: HALL,
                wanted: OTHER_HALL
            })
        ));
    }

    #[tokio::test]
    async fn a_schedule_is_refused_to_a_waiting_user_and_to_someone_else() {
        let h = harness();
        let waiting = h.service.enter(ALICE, HALL).await.unwrap();
        assert!(matches!(
            h.service
                .check_schedule(&waiting.token, ALICE, ScheduleId(100))
                .await,
            Err(QueueError::NotAdmitted(HALL))
        ));
        let bob = h.admitted(BOB, HALL, TimeDelta::minutes(5)).await;
        assert!(matches!(
            h.service
                .check_schedule(&bob.token, ALICE, ScheduleId(100))
                .await,
            Err(QueueError::NotYourToken)
        ));
    }

    #[tokio::test]
    async fn an_unknown_schedule_passes_so_the_caller_can_answer_not_found() {
        let h = harness();
        let waiting = h.service.enter(ALICE, HALL).await.unwrap();
        h.service
            .check_schedule(&waiting.token, ALICE, ScheduleId(999))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_forged_token_is_refused_before_the_catalog_is_asked() {
        let h = harness();
        assert!(matches!(
            h.service
                .check_schedule("forged", ALICE, ScheduleId(999))
                .await,
            Err(QueueError::BadToken)
        ));
        assert_eq!(*h.directory.lookups.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_schedule_check_while_the_catalog_is_down_is_unavailable() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        *h.directory.down.lock().unwrap() = true;
        assert!(unavailable(
            h.service
                .check_schedule(&alice.token, ALICE, ScheduleId(100))
                .await
        ));
    }
}
