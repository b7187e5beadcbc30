//! A concert's waiting-room settings: read (or the defaults) and changed
//! by an admin, with the event that names them.

use super::QueueService;
use crate::{
    kernel::{
        ConcertId, UserId,
        events::{NewEvent, QueueSettingsChanged, types},
    },
    queue::{
        domain::{QueueError, QueueSettings, SettingsChange},
        ports::{ConcertDirectory, QueuePorts, QueueSettingsRepository, RoomSettings},
    },
};

impl<P: QueuePorts> QueueService<P> {
    /// The concert's settings, or the defaults when no admin set any.
    pub async fn settings_for(&self, concert: ConcertId) -> Result<QueueSettings, QueueError> {
        Ok(self.settings.get(concert).await?.unwrap_or(self.defaults))
    }

    /// Changes a concert's settings (opening rules left out keep their
    /// value) and stores them with `QueueSettingsChanged`, which names the
    /// admin who changed them.
    pub async fn update_settings(
        &self,
        concert: ConcertId,
        change: SettingsChange,
        admin: UserId,
    ) -> Result<QueueSettings, QueueError> {
        if !self.directory.concert_exists(concert).await? {
            return Err(QueueError::ConcertNotFound(concert));
        }
        let settings = self.settings_for(concert).await?.changed(&change);
        let event = NewEvent::new(
            types::QUEUE_SETTINGS_CHANGED,
            "concert",
            concert,
            &QueueSettingsChanged {
                concert_id: concert.value(),
                admit_per_second: settings.admit_per_second,
                max_active: settings.max_active,
                active_ttl_seconds: settings.active_ttl_seconds,
                heartbeat_grace_seconds: settings.heartbeat_grace_seconds,
                opens_at: settings.opens_at,
                queueing_method: settings.method.to_string(),
                paused: settings.paused,
                admin_id: admin.value(),
            },
        );
        let room = RoomSettings { concert, settings };
        self.settings.put(&room, event).await?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::queue::{
        domain::QueueingMethod,
        usecase::fake::{HALL, OTHER_HALL, defaults, harness, rates, slow, t0, unavailable},
    };

    #[tokio::test]
    async fn a_concert_without_settings_uses_the_defaults() {
        let h = harness();
        assert_eq!(h.service.settings_for(HALL).await.unwrap(), defaults());
        h.settings.stored.lock().unwrap().insert(HALL, slow());
        assert_eq!(h.service.settings_for(HALL).await.unwrap(), slow());
        assert_eq!(
            h.service.settings_for(OTHER_HALL).await.unwrap(),
            defaults()
        );
    }

    #[tokio::test]
    async fn updated_settings_are_stored_and_apply_to_that_concert_only() {
        let h = harness();
        assert_eq!(
            h.service
                .update_settings(HALL, rates(slow()), UserId(9_000))
                .await
                .unwrap(),
            slow()
        );
        assert_eq!(h.service.settings_for(HALL).await.unwrap(), slow());
        let events = h.settings.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, types::QUEUE_SETTINGS_CHANGED);
        assert_eq!(events[0].payload["adminId"], 9_000);
        assert_eq!(events[0].payload["concertId"], HALL.value());
        assert_eq!(
            h.service.settings_for(OTHER_HALL).await.unwrap(),
            defaults()
        );
    }

    #[tokio::test]
    async fn settings_for_an_unknown_concert_are_refused_and_not_stored() {
        let h = harness();
        assert!(matches!(
            h.service
                .update_settings(ConcertId(9), rates(slow()), UserId(9_000))
                .await,
            Err(QueueError::ConcertNotFound(ConcertId(9)))
        ));
        assert!(h.settings.stored.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn settings_cannot_be_read_or_updated_while_their_store_is_down() {
        let h = harness();
        *h.settings.down.lock().unwrap() = true;
        assert!(unavailable(h.service.settings_for(HALL).await));
        let change = h
            .service
            .update_settings(HALL, rates(slow()), UserId(9_000));
        assert!(unavailable(change.await));
    }

    #[tokio::test]
    async fn a_settings_change_keeps_the_opening_rules_it_leaves_out() {
        let h = harness();
        let opens = t0() + TimeDelta::minutes(30);
        let change = SettingsChange {
            opens_at: Some(Some(opens)),
            method: Some(QueueingMethod::Random),
            paused: Some(true),
            ..rates(defaults())
        };
        h.service
            .update_settings(HALL, change, UserId(9_000))
            .await
            .unwrap();
        let kept = h
            .service
            .update_settings(HALL, rates(slow()), UserId(9_000))
            .await
            .unwrap();
        assert_eq!(
            kept,
            slow().with_opening(Some(opens), QueueingMethod::Random, true)
        );
        let events = h.settings.events.lock().unwrap().clone();
        assert_eq!(events[1].payload["queueingMethod"], "random");
        assert_eq!(events[1].payload["paused"], true);
        let cleared = h
            .service
            .update_settings(
                HALL,
                SettingsChange {
                    opens_at: Some(None),
                    paused: Some(false),
                    ..rates(slow())
                },
                UserId(9_000),
            )
            .await
            .unwrap();
        assert_eq!(
            (cleared.opens_at, cleared.method, cleared.paused),
            (None, QueueingMethod::Random, false)
        );
    }
}
