use std::sync::Arc;

use chrono::TimeDelta;
use futures::{FutureExt, future::BoxFuture};
use uuid::Uuid;

use super::{
    domain::{
        Entry, MAX_ROOM_PAGE, Place, PollPacing, QueueError, QueuePass, QueueSettings, QueueStats,
        QueueStatus, SettingsChange, TickOutcome,
    },
    ports::{ConcertDirectory, QueueSettingsRepository, QueueStore, QueueTokens},
};
use crate::{
    kernel::{
        Clock, ConcertId, Page, PageRequest, ScheduleId, UserId,
        events::{EventEnvelope, NewEvent, PaymentCompleted, QueueSettingsChanged, types},
    },
    outbox::ports::EventHandler,
};

/// How long a queue token's signature stays valid. Whether its holder may
/// buy is decided by the store (active, not expired), not by this.
pub const QUEUE_TOKEN_TTL: TimeDelta = TimeDelta::hours(12);

pub struct QueueService<S, R, D, C> {
    store: S,
    settings: R,
    directory: D,
    clock: C,
    tokens: Arc<dyn QueueTokens>,
    defaults: QueueSettings,
    /// The pre-queue's and the lottery's numbers: uniform, independent.
    draw: fn() -> u64,
    /// The pace of status polls (off when `None`).
    pacing: Option<Arc<PollPacing>>,
}

impl<S: Clone, R: Clone, D: Clone, C: Clone> Clone for QueueService<S, R, D, C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            clock: self.clock.clone(),
            tokens: self.tokens.clone(),
            defaults: self.defaults,
            draw: self.draw,
            pacing: self.pacing.clone(),
        }
    }
}

/// What entering the room answers.
#[derive(Debug, Clone)]
pub struct Admission {
    pub token: String,
    pub token_id: Uuid,
    pub status: QueueStatus,
}

impl<S, R, D, C> QueueService<S, R, D, C>
where
    S: QueueStore,
    R: QueueSettingsRepository,
    D: ConcertDirectory,
    C: Clock,
{
    pub fn new(
        store: S,
        settings: R,
        directory: D,
        clock: C,
        tokens: Arc<dyn QueueTokens>,
        defaults: QueueSettings,
    ) -> Self {
        Self {
            store,
            settings,
            directory,
            clock,
            tokens,
            defaults,
            draw: rand::random::<u64>,
            pacing: None,
        }
    }

    /// Paces status polls: a token polling far faster than told is
    /// answered `PollingTooFast` without a store round trip.
    pub fn pacing_polls(mut self, pacing: Option<PollPacing>) -> Self {
        self.pacing = pacing.map(Arc::new);
        self
    }

    /// Draws the pre-queue's numbers with `draw` (tests make them known).
    pub fn drawing_with(mut self, draw: fn() -> u64) -> Self {
        self.draw = draw;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Enters the concert's waiting room (or answers the place the user
    /// already holds) with a signed token for it.
    pub async fn enter(&self, user: UserId, concert: ConcertId) -> Result<Admission, QueueError> {
        if !self.directory.concert_exists(concert).await? {
            return Err(QueueError::ConcertNotFound(concert));
        }
        let now = self.clock.now();
        let settings = self.settings_for(concert).await?;
        let lineup = settings.lineup(now, (self.draw)());
        let Entry { token_id, place } = self
            .store
            .enter(concert, user, Uuid::new_v4(), lineup, now)
            .await?;
        if place == Place::Gone {
            // Only a closed room places nobody.
            return Err(QueueError::Closed(concert));
        }
        let token = self.tokens.issue(
            &QueuePass {
                token_id,
                user,
                concert,
            },
            now,
            QUEUE_TOKEN_TTL,
        )?;
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
        self.settings.put(concert, &settings, event).await?;
        Ok(settings)
    }

    /// A page of the listed rooms in concert order, each with its sizes and
    /// settings (the list holds ids only; sizes are read for this page).
    pub async fn stats(
        &self,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<(QueueStats, QueueSettings)>, QueueError> {
        let now = self.clock.now();
        let request = PageRequest::new(after, limit, MAX_ROOM_PAGE);
        let mut concerts = self.store.concerts().await?;
        concerts.sort();
        concerts.retain(|c| request.after.is_none_or(|after| c.value() > after));
        concerts.truncate(request.fetch() as usize);
        let page = Page::of(concerts, request, |c| c.value());
        let mut items = Vec::with_capacity(page.items.len());
        for concert in page.items {
            items.push((
                self.store.stats(concert, now).await?,
                self.settings_for(concert).await?,
            ));
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

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

impl<S, R, D, C> QueueService<S, R, D, C>
where
    S: QueueStore,
    R: QueueSettingsRepository,
    D: ConcertDirectory,
    C: Clock,
{
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

/// The waiting room's listener on `PaymentCompleted`: a buyer who paid
/// leaves the room, so their slot goes to the next in line at once.
pub struct FinishOnPayment<S, C> {
    store: S,
    clock: C,
}

impl<S, C> FinishOnPayment<S, C> {
    pub fn new(store: S, clock: C) -> Self {
        Self { store, clock }
    }
}

impl<T: Send + 'static, S: QueueStore, C: Clock> EventHandler<T> for FinishOnPayment<S, C> {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())?;
            self.store
                .finish(
                    ConcertId(payment.concert_id),
                    UserId(payment.user_id),
                    event.occurred_at,
                    self.clock.now(),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        kernel::ManualClock,
        queue::domain::{
            DRAW_RANGE, Lineup, MAX_POLL_AFTER_SECONDS, Place, QueueEvent, QueueingMethod,
        },
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn defaults() -> QueueSettings {
        QueueSettings::parse(50, 100, 600, 30).unwrap()
    }

    fn slow() -> QueueSettings {
        QueueSettings::parse(1, 5, 60, 30).unwrap()
    }

    /// A change of the rates alone.
    fn rates(settings: QueueSettings) -> SettingsChange {
        SettingsChange {
            rates: settings,
            opens_at: None,
            method: None,
            paused: None,
        }
    }

    fn down() -> QueueError {
        QueueError::Unavailable(anyhow::anyhow!("store down"))
    }

    const HALL: ConcertId = ConcertId(1);
    const OTHER_HALL: ConcertId = ConcertId(2);
    const ALICE: UserId = UserId(10);
    const BOB: UserId = UserId(11);

    #[derive(Default)]
    struct Room {
        /// (concert, user, token id, place), in arrival order.
        places: Vec<(ConcertId, UserId, Uuid, Place)>,
        /// Rooms ever entered, in the order the store lists them.
        rooms: Vec<ConcertId>,
        admitted_last_minute: u64,
        enters: usize,
        /// How every entry asked to be placed.
        lineups: Vec<Lineup>,
        polls: Vec<(Uuid, DateTime<Utc>)>,
        leaves: Vec<(QueuePass, DateTime<Utc>)>,
        /// (concert, user, paid at, now) of every finish.
        finishes: Vec<(ConcertId, UserId, DateTime<Utc>, DateTime<Utc>)>,
        ticks: Vec<(ConcertId, QueueSettings, DateTime<Utc>)>,
        fail_tick_for: Option<ConcertId>,
        down: bool,
    }

    /// The store as a list of places; admission itself (the tick) is the
    /// adapters' business, so tests set places directly.
    #[derive(Clone, Default)]
    struct FakeStore(Arc<Mutex<Room>>);

    impl FakeStore {
        fn set_place(&self, token_id: Uuid, place: Place) {
            let mut room = self.0.lock().unwrap();
            let entry = room
                .places
                .iter_mut()
                .find(|p| p.2 == token_id)
                .expect("a place to change");
            entry.3 = place;
        }

        fn add_room(&self, concert: ConcertId) {
            self.0.lock().unwrap().rooms.push(concert);
        }

        fn check(&self) -> Result<(), QueueError> {
            if self.0.lock().unwrap().down {
                return Err(down());
            }
            Ok(())
        }
    }

    impl QueueStore for FakeStore {
        async fn enter(
            &self,
            concert: ConcertId,
            user: UserId,
            new_token: Uuid,
            lineup: Lineup,
            _now: DateTime<Utc>,
        ) -> Result<Entry, QueueError> {
            self.check()?;
            let mut room = self.0.lock().unwrap();
            room.enters += 1;
            room.lineups.push(lineup);
            if let Some(&(_, _, token_id, place)) = room
                .places
                .iter()
                .find(|p| p.0 == concert && p.1 == user && p.3 != Place::Gone)
            {
                return Ok(Entry { token_id, place });
            }
            if lineup == Lineup::Refuse {
                return Ok(Entry {
                    token_id: new_token,
                    place: Place::Gone,
                });
            }
            let waiting = room
                .places
                .iter()
                .filter(|p| p.0 == concert && matches!(p.3, Place::Waiting { .. }))
                .count() as u64;
            let place = Place::Waiting {
                position: waiting + 1,
            };
            room.places.push((concert, user, new_token, place));
            if !room.rooms.contains(&concert) {
                room.rooms.push(concert);
            }
            Ok(Entry {
                token_id: new_token,
                place,
            })
        }

        async fn status(
            &self,
            pass: &QueuePass,
            now: DateTime<Utc>,
        ) -> Result<(Place, u64), QueueError> {
            self.check()?;
            let mut room = self.0.lock().unwrap();
            room.polls.push((pass.token_id, now));
            let place = room
                .places
                .iter()
                .find(|p| p.2 == pass.token_id)
                .map_or(Place::Gone, |p| p.3);
            Ok((place, room.admitted_last_minute))
        }

        async fn is_active(
            &self,
            pass: &QueuePass,
            now: DateTime<Utc>,
        ) -> Result<bool, QueueError> {
            self.check()?;
            let room = self.0.lock().unwrap();
            Ok(room.places.iter().any(|p| {
                p.2 == pass.token_id && matches!(p.3, Place::Active { until } if until > now)
            }))
        }

        async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
            self.check()?;
            let mut room = self.0.lock().unwrap();
            room.leaves.push((*pass, now));
            let before = room.places.len();
            room.places.retain(|p| p.2 != pass.token_id);
            Ok(room.places.len() < before)
        }

        async fn finish(
            &self,
            concert: ConcertId,
            user: UserId,
            paid_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<bool, QueueError> {
            self.check()?;
            let mut room = self.0.lock().unwrap();
            room.finishes.push((concert, user, paid_at, now));
            Ok(true)
        }

        async fn tick(
            &self,
            concert: ConcertId,
            settings: &QueueSettings,
            now: DateTime<Utc>,
        ) -> Result<TickOutcome, QueueError> {
            self.check()?;
            let mut room = self.0.lock().unwrap();
            room.ticks.push((concert, *settings, now));
            if room.fail_tick_for == Some(concert) {
                return Err(down());
            }
            Ok(TickOutcome {
                admitted: concert.value() as u64,
                ..TickOutcome::default()
            })
        }

        async fn concerts(&self) -> Result<Vec<ConcertId>, QueueError> {
            self.check()?;
            Ok(self.0.lock().unwrap().rooms.clone())
        }

        async fn stats(
            &self,
            concert: ConcertId,
            _now: DateTime<Utc>,
        ) -> Result<QueueStats, QueueError> {
            self.check()?;
            let room = self.0.lock().unwrap();
            let count = |active: bool| {
                room.places
                    .iter()
                    .filter(|p| p.0 == concert && matches!(p.3, Place::Active { .. }) == active)
                    .count() as u64
            };
            Ok(QueueStats {
                concert,
                waiting: count(false),
                active: count(true),
                admitted_last_minute: room.admitted_last_minute,
                admitted_total: 0,
                oldest_wait_seconds: 0,
            })
        }

        async fn pending_events(
            &self,
            _: ConcertId,
            _: usize,
        ) -> Result<Vec<QueueEvent>, QueueError> {
            unimplemented!("not used by the queue service")
        }

        async fn forwarded(&self, _: ConcertId, _: &[String]) -> Result<(), QueueError> {
            unimplemented!("not used by the queue service")
        }
    }

    #[derive(Clone, Default)]
    struct FakeSettings {
        stored: Arc<Mutex<HashMap<ConcertId, QueueSettings>>>,
        events: Arc<Mutex<Vec<NewEvent>>>,
        down: Arc<Mutex<bool>>,
    }

    impl QueueSettingsRepository for FakeSettings {
        async fn get(&self, concert: ConcertId) -> Result<Option<QueueSettings>, QueueError> {
            if *self.down.lock().unwrap() {
                return Err(down());
            }
            Ok(self.stored.lock().unwrap().get(&concert).copied())
        }

        async fn put(
            &self,
            concert: ConcertId,
            settings: &QueueSettings,
            event: NewEvent,
        ) -> Result<(), QueueError> {
            if *self.down.lock().unwrap() {
                return Err(down());
            }
            self.stored.lock().unwrap().insert(concert, *settings);
            self.events.lock().unwrap().push(event);
            Ok(())
        }
    }

    /// Concerts 1 and 2 exist; schedule 100 belongs to concert 1, 200 to 2.
    #[derive(Clone, Default)]
    struct FakeDirectory {
        lookups: Arc<Mutex<usize>>,
        down: Arc<Mutex<bool>>,
    }

    impl FakeDirectory {
        fn lookup(&self) -> Result<(), QueueError> {
            *self.lookups.lock().unwrap() += 1;
            if *self.down.lock().unwrap() {
                return Err(QueueError::Unavailable(anyhow::anyhow!("catalog down")));
            }
            Ok(())
        }
    }

    impl ConcertDirectory for FakeDirectory {
        async fn concert_exists(&self, concert: ConcertId) -> Result<bool, QueueError> {
            self.lookup()?;
            Ok([HALL, OTHER_HALL].contains(&concert))
        }

        async fn concert_of_schedule(
            &self,
            schedule: ScheduleId,
        ) -> Result<Option<ConcertId>, QueueError> {
            self.lookup()?;
            Ok(match schedule {
                ScheduleId(100) => Some(HALL),
                ScheduleId(200) => Some(OTHER_HALL),
                _ => None,
            })
        }
    }

    /// Tokens are readable text (`pass:<user>:<concert>:<token id>`);
    /// anything else is a forgery. Records what it signed.
    #[derive(Default)]
    struct FakeTokens {
        issued: Mutex<Vec<(QueuePass, DateTime<Utc>, TimeDelta)>>,
        fail_issue: Mutex<bool>,
    }

    impl QueueTokens for FakeTokens {
        fn issue(
            &self,
            pass: &QueuePass,
            now: DateTime<Utc>,
            ttl: TimeDelta,
        ) -> Result<String, QueueError> {
            if *self.fail_issue.lock().unwrap() {
                return Err(QueueError::Unexpected(anyhow::anyhow!("no signing key")));
            }
            self.issued.lock().unwrap().push((*pass, now, ttl));
            Ok(token(pass))
        }

        fn verify(&self, token: &str, _now: DateTime<Utc>) -> Result<QueuePass, QueueError> {
            let parts: Vec<&str> = token.split(':').collect();
            match parts.as_slice() {
                ["pass", user, concert, id] => Ok(QueuePass {
                    user: UserId(user.parse().map_err(|_| QueueError::BadToken)?),
                    concert: ConcertId(concert.parse().map_err(|_| QueueError::BadToken)?),
                    token_id: id.parse().map_err(|_| QueueError::BadToken)?,
                }),
                _ => Err(QueueError::BadToken),
            }
        }
    }

    fn token(pass: &QueuePass) -> String {
        format!("pass:{}:{}:{}", pass.user, pass.concert, pass.token_id)
    }

    struct Harness {
        service: QueueService<FakeStore, FakeSettings, FakeDirectory, ManualClock>,
        store: FakeStore,
        settings: FakeSettings,
        directory: FakeDirectory,
        tokens: Arc<FakeTokens>,
        clock: ManualClock,
    }

    fn harness() -> Harness {
        let store = FakeStore::default();
        let settings = FakeSettings::default();
        let directory = FakeDirectory::default();
        let tokens = Arc::new(FakeTokens::default());
        let clock = ManualClock::new(t0());
        let service = QueueService::new(
            store.clone(),
            settings.clone(),
            directory.clone(),
            clock.clone(),
            tokens.clone(),
            defaults(),
        );
        Harness {
            service,
            store,
            settings,
            directory,
            tokens,
            clock,
        }
    }

    impl Harness {
        /// Enters and makes the place active until `for_` from now.
        async fn admitted(&self, user: UserId, concert: ConcertId, for_: TimeDelta) -> Admission {
            let admission = self.service.enter(user, concert).await.unwrap();
            self.store.set_place(
                admission.token_id,
                Place::Active {
                    until: self.clock.now() + for_,
                },
            );
            admission
        }
    }

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
        assert!(matches!(
            h.service.enter(ALICE, HALL).await,
            Err(QueueError::Unavailable(_))
        ));
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
        assert_eq!(issued[1], (pass, t0(), QUEUE_TOKEN_TTL));
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
            Err(QueueError::Unexpected(_))
        ));
    }

    #[tokio::test]
    async fn entering_while_the_store_is_down_is_unavailable_and_signs_nothing() {
        let h = harness();
        h.store.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.enter(ALICE, HALL).await,
            Err(QueueError::Unavailable(_))
        ));
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
        assert!(
            paced >= 50 - 1 - super::super::domain::POLL_BURST as usize,
            "{paced} paced"
        );
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

    #[tokio::test]
    async fn a_poll_while_the_store_is_down_is_unavailable() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        h.store.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.status(&alice.token).await,
            Err(QueueError::Unavailable(_))
        ));
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
    async fn leaving_while_the_store_is_down_is_unavailable() {
        let h = harness();
        let alice = h.service.enter(ALICE, HALL).await.unwrap();
        h.store.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.leave(&alice.token).await,
            Err(QueueError::Unavailable(_))
        ));
    }

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
    async fn an_active_token_past_its_time_is_not_admitted() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        h.clock.advance(TimeDelta::minutes(5));
        assert!(matches!(
            h.service.check_admission(&alice.token, ALICE, HALL).await,
            Err(QueueError::NotAdmitted(HALL))
        ));
    }

    #[tokio::test]
    async fn another_users_token_is_refused_even_when_active() {
        let h = harness();
        let alice = h.admitted(ALICE, HALL, TimeDelta::minutes(5)).await;
        assert!(matches!(
            h.service.check_admission(&alice.token, BOB, HALL).await,
            Err(QueueError::NotYourToken)
        ));
    }

    #[tokio::test]
    async fn a_token_for_another_concert_is_refused_even_when_active() {
        let h = harness();
        let alice = h.admitted(ALICE, OTHER_HALL, TimeDelta::minutes(5)).await;
        assert!(matches!(
            h.service.check_admission(&alice.token, ALICE, HALL).await,
            Err(QueueError::WrongConcert {
                token: OTHER_HALL,
                wanted: HALL
            })
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

    // --- settings ---

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
    async fn settings_cannot_be_read_while_their_store_is_down() {
        let h = harness();
        *h.settings.down.lock().unwrap() = true;
        assert!(matches!(
            h.service.settings_for(HALL).await,
            Err(QueueError::Unavailable(_))
        ));
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
    async fn updating_settings_while_their_store_is_down_is_unavailable() {
        let h = harness();
        *h.settings.down.lock().unwrap() = true;
        assert!(matches!(
            h.service
                .update_settings(HALL, rates(slow()), UserId(9_000))
                .await,
            Err(QueueError::Unavailable(_))
        ));
    }

    // --- fair opening ---

    const DRAWN: u64 = 0xABCD_0000_0000_1234;

    fn drawn() -> u64 {
        DRAWN
    }

    fn opening(h: &Harness, opens_in: TimeDelta, method: QueueingMethod, paused: bool) {
        h.settings.stored.lock().unwrap().insert(
            HALL,
            defaults().with_opening(Some(h.clock.now() + opens_in), method, paused),
        );
    }

    fn lineups(h: &Harness) -> Vec<Lineup> {
        h.store.0.lock().unwrap().lineups.clone()
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

    // --- stats ---

    #[tokio::test]
    async fn stats_list_every_entered_room_in_concert_order_with_its_settings() {
        let h = harness();
        h.settings.stored.lock().unwrap().insert(OTHER_HALL, slow());
        h.service.enter(ALICE, OTHER_HALL).await.unwrap();
        h.service.enter(ALICE, HALL).await.unwrap();
        h.admitted(BOB, HALL, TimeDelta::minutes(1)).await;

        let stats = h.service.stats(None, 50).await.unwrap();
        let rows: Vec<_> = stats
            .items
            .iter()
            .map(|(s, settings)| (s.concert, s.waiting, s.active, *settings))
            .collect();
        assert_eq!(
            rows,
            vec![(HALL, 1, 1, defaults()), (OTHER_HALL, 1, 0, slow())]
        );
        assert_eq!(stats.next_cursor, None);

        // A page at a time: the cursor is the last room's concert.
        let first = h.service.stats(None, 1).await.unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].0.concert, HALL);
        assert_eq!(first.next_cursor, Some(HALL.value()));
        let second = h.service.stats(first.next_cursor, 1).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].0.concert, OTHER_HALL);
        assert_eq!(second.next_cursor, None);
    }

    #[tokio::test]
    async fn stats_without_any_room_are_empty_and_fail_when_the_store_is_down() {
        let h = harness();
        assert!(h.service.stats(None, 50).await.unwrap().items.is_empty());
        h.store.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.stats(None, 50).await,
            Err(QueueError::Unavailable(_))
        ));
    }

    // --- tick_all ---

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
        let admitted: Vec<_> = outcomes.iter().map(|(c, o)| (*c, o.admitted)).collect();
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
        assert!(matches!(
            h.service.tick_all().await,
            Err(QueueError::Unavailable(_))
        ));
        let ticked: Vec<_> = h
            .store
            .0
            .lock()
            .unwrap()
            .ticks
            .iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(ticked, vec![HALL], "the tick stops at the failing room");
    }

    #[tokio::test]
    async fn a_tick_fails_when_the_settings_cannot_be_read() {
        let h = harness();
        h.store.add_room(HALL);
        *h.settings.down.lock().unwrap() = true;
        assert!(matches!(
            h.service.tick_all().await,
            Err(QueueError::Unavailable(_))
        ));
        assert!(h.store.0.lock().unwrap().ticks.is_empty());
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
        assert!(matches!(
            h.service
                .check_schedule(&alice.token, ALICE, ScheduleId(100))
                .await,
            Err(QueueError::Unavailable(_))
        ));
    }

    // --- finishing a buyer's turn ---

    #[tokio::test]
    async fn a_payment_ends_the_turn_it_was_made_in_not_a_later_one() {
        let store = FakeStore::default();
        let clock = ManualClock::new(t0() + TimeDelta::seconds(30));
        let handler = FinishOnPayment::new(store.clone(), clock.clone());
        assert!(EventHandler::<()>::handles(
            &handler,
            types::PAYMENT_COMPLETED
        ));
        assert!(!EventHandler::<()>::handles(
            &handler,
            types::QUEUE_SETTINGS_CHANGED
        ));
        // Handled 30 s after the payment (a restart, a backlog): the store
        // is told when the buyer paid, so it can leave a newer visit alone.
        let event = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: types::PAYMENT_COMPLETED.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "5".into(),
            occurred_at: t0(),
            payload: serde_json::json!({
                "paymentId": 5, "reservationId": 9, "userId": ALICE.value(),
                "amount": 1000, "concertId": 7
            }),
            traceparent: None,
        };
        EventHandler::<()>::handle(&handler, &mut (), &event)
            .await
            .unwrap();
        assert_eq!(
            store.0.lock().unwrap().finishes,
            vec![(ConcertId(7), ALICE, t0(), t0() + TimeDelta::seconds(30))]
        );
    }
}
