//! A visit to a concert's waiting room: entering it with a signed token,
//! polling one's place (the heartbeat), and leaving it.

use chrono::TimeDelta;
use uuid::Uuid;

use super::QueueService;
use crate::{
    kernel::{Clock, ConcertId, UserId, Validity},
    queue::{
        domain::{Entry, Place, QueueError, QueuePass, QueueStatus},
        ports::{ConcertDirectory, QueuePorts, QueueStore},
    },
};

/// How long a queue token's signature stays valid. Whether its holder may
/// buy is decided by the store (active, not expired), not by this.
pub const QUEUE_TOKEN_TTL: TimeDelta = TimeDelta::hours(12);

/// What entering the room answers.
#[derive(Debug, Clone)]
pub struct Admission {
    pub token: String,
    pub token_id: Uuid,
    pub status: QueueStatus,
}

impl<P: QueuePorts> QueueService<P> {
    /// Enters the concert's waiting room (or answers the place the user
    /// already holds) with a signed token for it.
    pub async fn enter(&self, user: UserId, concert: ConcertId) -> Result<Admission, QueueError> {
        if !self.directory.concert_exists(concert).await? {
            return Err(QueueError::ConcertNotFound(concert));
        }
        let now = self.clock.now();
        let settings = self.settings_for(concert).await?;
        let lineup = settings.lineup(now, (self.draw)());
        let newcomer = QueuePass {
            token_id: Uuid::new_v4(),
            user,
            concert,
        };
        let Entry { token_id, place } = self.store.enter(&newcomer, lineup, now).await?;
        if place == Place::Gone {
            // Only a closed room places nobody.
            return Err(QueueError::Closed(concert));
        }
        // A user who already held a place keeps its token id.
        let pass = QueuePass {
            token_id,
            ..newcomer
        };
        let token = self
            .tokens
            .issue(&pass, Validity::new(now, QUEUE_TOKEN_TTL))?;
        Ok(Admission {
            token,
            token_id,
            status: QueueStatus::at(place, 0, &settings, now),
        })
    }

    /// The poll and the heartbeat in one.
    pub async fn status(&self, token: &str) -> Result<QueueStatus, QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        if let Some(pacing) = &self.pacing {
            pacing.check(pass.token_id)?;
        }
        let (place, admitted_last_minute) = self.store.status(&pass, now).await?;
        let settings = self.settings_for(pass.concert).await?;
        Ok(QueueStatus::at(place, admitted_last_minute, &settings, now))
    }

    /// Leaves the room; an active slot goes to the next person at the next tick.
    pub async fn leave(&self, token: &str) -> Result<(), QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        self.store.leave(&pass, now).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Fault;
    use chrono::TimeDelta;

    use super::*;
    use crate::queue::{
        domain::{
            DRAW_RANGE, Lineup, MAX_POLL_AFTER_SECONDS, POLL_BURST, PollPacing, QueueingMethod,
        },
        ports::QueueTokens,
        usecase::fake::{
            ALICE, BOB, HALL, Harness, OTHER_HALL, defaults, harness, slow, t0, unavailable,
        },
    };

    // --- enter ---

    #[tokio::test]
    async fn entering_an_unknown_concert_is_refused_before_the_room_is_touched() {
        let h = harness();
        assert!(matches!(
            h.service.enter(ALICE, ConcertId(9)).await,
            Err(QueueError::ConcertNotFound(ConcertId(9)))
        ));
        assert_eq!(h.store.0.lock().unwrap().enters, 0);
        assert!(h.tokens.issued.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn entering_while_the_catalog_is_down_is_unavailable_and_takes_no_place() {
        let h = harness();
        *h.directory.down.lock().unwrap() = true;
        assert!(unavailable(h.service.enter(ALICE, HALL).await));
        assert_eq!(h.store.0.lock().unwrap().enters, 0);
    }

    #[tokio::test]
    async fn a_new_entry_waits_at_the_tail_with_a_token_signed_for_its_place() {
        let h = harness();
        h.service.enter(ALICE, HALL).await.unwrap();
        let bob = h.service.enter(BOB, HALL).await.unwrap();

        assert_eq!(bob.status.place, Place::Waiting { position: 2 });
        assert_eq!(bob.status.ahead, 1);
        let pass = h.tokens.verify(&bob.token, t0()).unwrap();
        assert_eq!(
            pass,
            QueuePass {
                token_id: bob.token_id,
                user: BOB,
                concert: HALL,
            }
        );
        let issued = h.tokens.issued.lock().unwrap();
        assert_eq!(issued.len(), 2);
        assert_eq!(issued[1], (pass, Validity::new(t0(), QUEUE_TOKEN_TTL)));
    }

    #[tokio::test]
    async fn entering_twice_answers_the_same_place_and_token_id() {
        let h = harness();
        let first = h.service.enter(ALICE, HALL).await.unwrap();
        h.service.enter(BOB, HALL).await.unwrap();
        h.clock.advance(TimeDelta::seconds(5));
        let again = h.service.enter(ALICE, HALL).await.unwrap();

        assert_eq!(again.token_id, first.token_id);
        assert_eq!(again.status.place, Place::Waiting { position: 1 });
        assert_eq!(
            h.tokens
                .verify(&again.token, h.clock.now())
                .unwrap()
                .token_id,
            first.token_id
        );
        assert_eq!(h.store.0.lock().unwrap().places.len(), 2, "no second place");
    }

    #[tokio::test]
    async fn an_active_user_entering_again_keeps_the_active_place() {
        let h = harness();
        let first = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        let again = h.service.enter(ALICE, HALL).await.unwrap();
        assert_eq!(again.token_id, first.token_id);
        assert_eq!(
            again.status.place,
            Place::Active {
                until: t0() + TimeDelta::minutes(5)
            }
        );
    }

    #[tokio::test]
    async fn the_entry_estimate_uses_the_concert_settings_or_the_defaults() {
        let h = harness();
        h.settings.stored.lock().unwrap().insert(OTHER_HALL, slow());
        for user in 1..=3 {
            h.service.enter(UserId(user), HALL).await.unwrap();
            h.service.enter(UserId(user), OTHER_HALL).await.unwrap();
        }
        let by_default = h.service.enter(UserId(4), HALL).await.unwrap();
        let slow_room = h.service.enter(UserId(4), OTHER_HALL).await.unwrap();
        // Fourth in line: 4 / 50 per second rounds up to 1 s; 4 / 1 per second is 4 s.
        assert_eq!(by_default.status.estimated_wait_seconds, 1);
        assert_eq!(slow_room.status.estimated_wait_seconds, 4);
    }

    #[tokio::test]
    async fn entering_fails_when_the_token_cannot_be_signed() {
        let h = harness();
        *h.tokens.fail_issue.lock().unwrap() = true;
        assert!(matches!(
            h.service.enter(ALICE, HALL).await,
            Err(QueueError::Fault(Fault::Unexpected(_)))
        ));
    }

    #[tokio::test]
    async fn entering_while_the_store_is_down_is_unavailable_and_signs_nothing() {
        let h = harness();
        h.store.0.lock().unwrap().down = true;
        assert!(unavailable(h.service.enter(ALICE, HALL).await));
        assert!(h.tokens.issued.lock().unwrap().is_empty());
    }

    // --- status ---

    #[tokio::test]
    async fn a_waiting_poll_renews_the_heartbeat_now_and_uses_the_measured_rate() {
        let h = harness();
        h.service.enter(ALICE, HALL).await.unwrap();
        let bob = h.service.enter(BOB, HALL).await.unwrap();
        h.store.0.lock().unwrap().admitted_last_minute = 60;
        h.clock.advance(TimeDelta::seconds(7));

        let status = h.service.status(&bob.token).await.unwrap();
        assert_eq!(status.place, Place::Waiting { position: 2 });
        assert_eq!(status.ahead, 1);
        assert_eq!(status.estimated_wait_seconds, 2, "one admitted per second");
        assert_eq!(
            h.store.0.lock().unwrap().polls,
            vec![(bob.token_id, t0() + TimeDelta::seconds(7))]
        );
    }

    #[tokio::test]
    async fn a_poll_before_anyone_is_admitted_estimates_with_the_rooms_settings() {
        let h = harness();
        h.settings.stored.lock().unwrap().insert(HALL, slow());
        h.service.enter(ALICE, HALL).await.unwrap();
        let bob = h.service.enter(BOB, HALL).await.unwrap();
        let status = h.service.status(&bob.token).await.unwrap();
        assert_eq!(
            status.estimated_wait_seconds, 2,
            "second in line at 1 per second"
        );
        h.settings.stored.lock().unwrap().clear();
        let status = h.service.status(&bob.token).await.unwrap();
        assert_eq!(
            status.estimated_wait_seconds, 1,
            "2 / 50 per second rounds up"
        );
    }

    #[tokio::test]
    async fn an_active_poll_has_nobody_ahead_and_polls_slowly() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(10)).await;
        let status = h.service.status(&alice.token).await.unwrap();
        assert_eq!(
            status.place,
            Place::Active {
                until: t0() + TimeDelta::minutes(10)
            }
        );
        assert_eq!((status.ahead, status.estimated_wait_seconds), (0, 0));
        assert_eq!(status.poll_after_seconds, MAX_POLL_AFTER_SECONDS);
    }

    #[tokio::test]
    async fn a_poll_after_leaving_is_gone_and_says_stop_polling() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        h.service.leave(&alice.token).await.unwrap();
        let status = h.service.status(&alice.token).await.unwrap();
        assert_eq!(status.place, Place::Gone);
        assert_eq!(status.poll_after_seconds, 0);
    }

    #[tokio::test]
    async fn a_token_polling_far_faster_than_told_is_answered_without_the_store() {
        let h = harness();
        let service = h
            .service
            .clone()
            .pacing_polls(PollPacing::every(std::time::Duration::from_secs(1)));
        let flood = service.enter(ALICE, HALL).await.unwrap();
        let honest = service.enter(BOB, HALL).await.unwrap();
        let mut paced = 0;
        for _ in 0..50 {
            match service.status(&flood.token).await {
                Ok(status) => assert_eq!(status.place, Place::Waiting { position: 1 }),
                Err(QueueError::PollingTooFast(wait)) => {
                    assert!(wait <= std::time::Duration::from_secs(1));
                    paced += 1;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(paced >= 50 - 1 - POLL_BURST as usize, "{paced} paced");
        let polled = h.store.0.lock().unwrap().polls.len();
        assert_eq!(polled, 50 - paced, "a paced poll never reaches the store");
        let status = service.status(&honest.token).await.unwrap();
        assert_eq!(status.place, Place::Waiting { position: 2 });
        assert_eq!(h.store.0.lock().unwrap().polls.len(), polled + 1);
    }

    #[tokio::test]
    async fn a_forged_token_is_refused_before_the_store_is_polled() {
        let h = harness();
        assert!(matches!(
            h.service.status("forged").await,
            Err(QueueError::BadToken)
        ));
        assert!(h.store.0.lock().unwrap().polls.is_empty());
    }

    // --- leave ---

    #[tokio::test]
    async fn leaving_gives_up_exactly_the_callers_place_at_once() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        let bob = h.service.enter(BOB, HALL).await.unwrap();
        h.clock.advance(TimeDelta::seconds(2));
        h.service.leave(&alice.token).await.unwrap();

        let leaves = h.store.0.lock().unwrap().leaves.clone();
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0].0.token_id, alice.token_id);
        assert_eq!(leaves[0].1, t0() + TimeDelta::seconds(2));
        assert_eq!(
            h.service.status(&alice.token).await.unwrap().place,
            Place::Gone
        );
        assert_ne!(
            h.service.status(&bob.token).await.unwrap().place,
            Place::Gone
        );
    }

    #[tokio::test]
    async fn leaving_twice_is_not_an_error() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        h.service.leave(&alice.token).await.unwrap();
        h.service.leave(&alice.token).await.unwrap();
        assert_eq!(h.store.0.lock().unwrap().leaves.len(), 2);
    }

    #[tokio::test]
    async fn leaving_with_a_forged_token_is_refused_and_frees_nothing() {
        let h = harness();
        h.service.enter(ALICE, HALL).await.unwrap();
        assert!(matches!(
            h.service.leave("pass:10:1:not-a-uuid").await,
            Err(QueueError::BadToken)
        ));
        let room = h.store.0.lock().unwrap();
        assert!(room.leaves.is_empty());
        assert_eq!(room.places.len(), 1);
    }

    #[tokio::test]
    async fn polling_or_leaving_while_the_store_is_down_is_unavailable() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        h.store.0.lock().unwrap().down = true;
        assert!(unavailable(h.service.status(&alice.token).await));
        assert!(unavailable(h.service.leave(&alice.token).await));
    }

    // --- entering a room with opening rules ---

    const DRAWN: u64 = 0xABCD_0000_0000_1234;

    fn drawn() -> u64 {
        DRAWN
    }

    fn opening(harness: &Harness, opens_in: TimeDelta, method: QueueingMethod, paused: bool) {
        harness.settings.stored.lock().unwrap().insert(
            HALL,
            defaults().with_opening(Some(harness.clock.now() + opens_in), method, paused),
        );
    }

    fn lineups(harness: &Harness) -> Vec<Lineup> {
        harness.store.0.lock().unwrap().lineups.clone()
    }

    #[tokio::test]
    async fn before_the_opening_arrivals_enter_the_draw_and_hear_prequeue_until_when() {
        let mut h = harness();
        h.service = h.service.drawing_with(drawn);
        opening(&h, TimeDelta::seconds(90), QueueingMethod::Fifo, false);
        let admission = h.service.enter(ALICE, HALL).await.unwrap();
        assert_eq!(lineups(&h), [Lineup::Draw(DRAWN % DRAW_RANGE)]);
        let status = admission.status;
        assert!(status.is_prequeue());
        assert_eq!(status.opens_at, Some(t0() + TimeDelta::seconds(90)));
        assert_eq!(
            (status.ahead, status.estimated_wait_seconds),
            (0, 90),
            "no place is revealed before the opening; the wait is the time to it"
        );
        assert_eq!(status.poll_after_seconds, MAX_POLL_AFTER_SECONDS);

        h.clock.advance(TimeDelta::seconds(88));
        let polled = h.service.status(&admission.token).await.unwrap();
        assert!(polled.is_prequeue());
        assert_eq!(
            (polled.estimated_wait_seconds, polled.poll_after_seconds),
            (2, 1)
        );
        h.clock.advance(TimeDelta::seconds(2));
        let open = h.service.status(&admission.token).await.unwrap();
        assert!(!open.is_prequeue(), "at opensAt the place is a position");
        assert_eq!(open.place, Place::Waiting { position: 1 });
    }

    #[tokio::test]
    async fn after_the_opening_a_fifo_room_queues_and_a_random_room_draws() {
        let mut h = harness();
        h.service = h.service.drawing_with(drawn);
        opening(&h, TimeDelta::seconds(-1), QueueingMethod::Fifo, false);
        let status = h.service.enter(ALICE, HALL).await.unwrap().status;
        assert!(!status.is_prequeue());
        opening(&h, TimeDelta::seconds(-1), QueueingMethod::Random, false);
        h.service.enter(BOB, HALL).await.unwrap();
        assert_eq!(
            lineups(&h),
            [Lineup::Fifo, Lineup::Draw(DRAWN % DRAW_RANGE)]
        );
    }

    #[tokio::test]
    async fn a_closed_room_refuses_newcomers_but_answers_a_place_already_held() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        opening(&h, TimeDelta::seconds(-1), QueueingMethod::Closed, false);
        assert!(matches!(
            h.service.enter(BOB, HALL).await,
            Err(QueueError::Closed(HALL))
        ));
        assert!(h.service.store().concerts().await.unwrap().contains(&HALL));
        let again = h.service.enter(ALICE, HALL).await.unwrap();
        assert_eq!(again.token_id, alice.token_id);
        assert_eq!(lineups(&h)[1..], [Lineup::Refuse, Lineup::Refuse]);
        let places = h.store.0.lock().unwrap().places.len();
        assert_eq!(places, 1, "nobody new was placed");
    }
}
