//! The scheduler's tick: one admission step for every listed room.

use super::QueueService;
use crate::{
    kernel::{Clock, ConcertId},
    queue::{
        domain::{QueueError, TickOutcome},
        ports::{QueuePorts, QueueStore},
    },
};

impl<P: QueuePorts> QueueService<P> {
    /// One scheduler step for every listed room (an idle one retires in
    /// its step and is no longer listed).
    pub async fn tick_all(&self) -> Result<Vec<(ConcertId, TickOutcome)>, QueueError> {
        let now = self.clock.now();
        let mut outcomes = Vec::new();
        for concert in self.store.concerts().await? {
            let settings = self.settings_for(concert).await?;
            let outcome = self.store.tick(concert, &settings, now).await?;
            if outcome.retired {
                metrics::counter!("queue_rooms_retired_total").increment(1);
                tracing::debug!(%concert, "idle waiting room retired");
            }
            outcomes.push((concert, outcome));
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use crate::queue::usecase::fake::{HALL, OTHER_HALL, defaults, harness, slow, t0, unavailable};

    #[tokio::test]
    async fn a_tick_steps_every_room_with_its_own_settings_at_the_clock_time() {
        let h = harness();
        h.settings.stored.lock().unwrap().insert(OTHER_HALL, slow());
        h.store.add_room(OTHER_HALL);
        h.store.add_room(HALL);
        h.clock.advance(TimeDelta::seconds(3));

        let outcomes = h.service.tick_all().await.unwrap();
        let now = t0() + TimeDelta::seconds(3);
        assert_eq!(
            h.store.0.lock().unwrap().ticks,
            vec![(OTHER_HALL, slow(), now), (HALL, defaults(), now)]
        );
        let admitted: Vec<_> = outcomes
            .iter()
            .map(|(concert, outcome)| (*concert, outcome.admitted))
            .collect();
        assert_eq!(admitted, vec![(OTHER_HALL, 2), (HALL, 1)]);
    }

    #[tokio::test]
    async fn a_tick_without_rooms_steps_nothing() {
        let h = harness();
        assert!(h.service.tick_all().await.unwrap().is_empty());
        assert!(h.store.0.lock().unwrap().ticks.is_empty());
    }

    #[tokio::test]
    async fn a_failing_room_fails_the_tick() {
        let h = harness();
        h.store.add_room(HALL);
        h.store.add_room(OTHER_HALL);
        h.store.0.lock().unwrap().fail_tick_for = Some(HALL);
        assert!(unavailable(h.service.tick_all().await));
        let ticked: Vec<_> = h
            .store
            .0
            .lock()
            .unwrap()
            .ticks
            .iter()
            .map(|tick| tick.0)
            .collect();
        assert_eq!(ticked, vec![HALL], "the tick stops at the failing room");
    }

    #[tokio::test]
    async fn a_tick_fails_when_the_settings_cannot_be_read() {
        let h = harness();
        h.store.add_room(HALL);
        *h.settings.down.lock().unwrap() = true;
        assert!(unavailable(h.service.tick_all().await));
        assert!(h.store.0.lock().unwrap().ticks.is_empty());
    }
}
