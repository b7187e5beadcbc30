//! The fakes the waiting room's use-case tests share: a store that is a
//! list of places, settings, a directory of two concerts, readable tokens,
//! and a harness that wires them into a `QueueService`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Admission, QueueService};
use crate::{
    kernel::{
        Clock, ConcertId, Fault, ManualClock, ScheduleId, UserId, Validity, events::NewEvent,
    },
    queue::{
        domain::{
            Entry, Lineup, Place, QueueError, QueueEvent, QueuePass, QueueSettings, QueueStats,
            SettingsChange, TickOutcome,
        },
        ports::{
            ConcertDirectory, QueueAdapters, QueueSettingsRepository, QueueStore, QueueTokens,
            RoomSettings,
        },
    },
};

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub fn defaults() -> QueueSettings {
    QueueSettings::parse(50, 100, 600, 30).unwrap()
}

pub fn slow() -> QueueSettings {
    QueueSettings::parse(1, 5, 60, 30).unwrap()
}

/// A change of the rates alone.
pub fn rates(settings: QueueSettings) -> SettingsChange {
    SettingsChange {
        rates: settings,
        opens_at: None,
        method: None,
        paused: None,
    }
}

fn down() -> QueueError {
    QueueError::Fault(Fault::Unavailable(anyhow::anyhow!("store down")))
}

/// Whether the use case answered that a store or the catalog is down.
pub fn unavailable<T>(result: Result<T, QueueError>) -> bool {
    matches!(result, Err(QueueError::Fault(Fault::Unavailable(_))))
}

pub const HALL: ConcertId = ConcertId(1);
pub const OTHER_HALL: ConcertId = ConcertId(2);
pub const ALICE: UserId = UserId(10);
pub const BOB: UserId = UserId(11);

/// A place the fake store holds.
#[derive(Debug, Clone, Copy)]
pub struct HeldPlace {
    pub concert: ConcertId,
    pub user: UserId,
    pub token_id: Uuid,
    pub place: Place,
}

#[derive(Default)]
pub struct Room {
    /// In arrival order.
    pub places: Vec<HeldPlace>,
    /// Rooms ever entered, in the order the store lists them.
    pub rooms: Vec<ConcertId>,
    pub admitted_last_minute: u64,
    pub enters: usize,
    /// How every entry asked to be placed.
    pub lineups: Vec<Lineup>,
    pub polls: Vec<(Uuid, DateTime<Utc>)>,
    pub leaves: Vec<(QueuePass, DateTime<Utc>)>,
    /// (concert, user, paid at, now) of every finish.
    pub finishes: Vec<(ConcertId, UserId, DateTime<Utc>, DateTime<Utc>)>,
    pub ticks: Vec<(ConcertId, QueueSettings, DateTime<Utc>)>,
    pub fail_tick_for: Option<ConcertId>,
    pub down: bool,
}

/// The store as a list of places; admission itself (the tick) is the
/// adapters' business, so tests set places directly.
#[derive(Clone, Default)]
pub struct FakeStore(pub Arc<Mutex<Room>>);

impl FakeStore {
    pub fn set_place(&self, token_id: Uuid, place: Place) {
        let mut room = self.0.lock().unwrap();
        let entry = room
            .places
            .iter_mut()
            .find(|held| held.token_id == token_id)
            .expect("a place to change");
        entry.place = place;
    }

    pub fn add_room(&self, concert: ConcertId) {
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
        newcomer: &QueuePass,
        lineup: Lineup,
        _now: DateTime<Utc>,
    ) -> Result<Entry, QueueError> {
        self.check()?;
        let mut room = self.0.lock().unwrap();
        room.enters += 1;
        room.lineups.push(lineup);
        if let Some(held) = room.places.iter().find(|held| {
            held.concert == newcomer.concert
                && held.user == newcomer.user
                && held.place != Place::Gone
        }) {
            return Ok(Entry {
                token_id: held.token_id,
                place: held.place,
            });
        }
        if lineup == Lineup::Refuse {
            return Ok(Entry {
                token_id: newcomer.token_id,
                place: Place::Gone,
            });
        }
        let waiting = room
            .places
            .iter()
            .filter(|held| {
                held.concert == newcomer.concert && matches!(held.place, Place::Waiting { .. })
            })
            .count() as u64;
        let place = Place::Waiting {
            position: waiting + 1,
        };
        room.places.push(HeldPlace {
            concert: newcomer.concert,
            user: newcomer.user,
            token_id: newcomer.token_id,
            place,
        });
        if !room.rooms.contains(&newcomer.concert) {
            room.rooms.push(newcomer.concert);
        }
        Ok(Entry {
            token_id: newcomer.token_id,
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
            .find(|held| held.token_id == pass.token_id)
            .map_or(Place::Gone, |held| held.place);
        Ok((place, room.admitted_last_minute))
    }

    async fn is_active(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        self.check()?;
        let room = self.0.lock().unwrap();
        Ok(room.places.iter().any(|held| {
            held.token_id == pass.token_id
                && matches!(held.place, Place::Active { until } if until > now)
        }))
    }

    async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        self.check()?;
        let mut room = self.0.lock().unwrap();
        room.leaves.push((*pass, now));
        let before = room.places.len();
        room.places.retain(|held| held.token_id != pass.token_id);
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
                .filter(|held| {
                    held.concert == concert && matches!(held.place, Place::Active { .. }) == active
                })
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

    async fn pending_events(&self, _: ConcertId, _: usize) -> Result<Vec<QueueEvent>, QueueError> {
        unimplemented!("not used by the queue service")
    }

    async fn forwarded(&self, _: ConcertId, _: &[String]) -> Result<(), QueueError> {
        unimplemented!("not used by the queue service")
    }
}

#[derive(Clone, Default)]
pub struct FakeSettings {
    pub stored: Arc<Mutex<HashMap<ConcertId, QueueSettings>>>,
    pub events: Arc<Mutex<Vec<NewEvent>>>,
    pub down: Arc<Mutex<bool>>,
}

impl QueueSettingsRepository for FakeSettings {
    async fn get(&self, concert: ConcertId) -> Result<Option<QueueSettings>, QueueError> {
        if *self.down.lock().unwrap() {
            return Err(down());
        }
        Ok(self.stored.lock().unwrap().get(&concert).copied())
    }

    async fn put(&self, room: &RoomSettings, event: NewEvent) -> Result<(), QueueError> {
        if *self.down.lock().unwrap() {
            return Err(down());
        }
        self.stored
            .lock()
            .unwrap()
            .insert(room.concert, room.settings);
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

/// Concerts 1 and 2 exist; schedule 100 belongs to concert 1, 200 to 2.
#[derive(Clone, Default)]
pub struct FakeDirectory {
    pub lookups: Arc<Mutex<usize>>,
    pub down: Arc<Mutex<bool>>,
}

impl FakeDirectory {
    fn lookup(&self) -> Result<(), QueueError> {
        *self.lookups.lock().unwrap() += 1;
        if *self.down.lock().unwrap() {
            return Err(QueueError::Fault(Fault::Unavailable(anyhow::anyhow!(
                "catalog down"
            ))));
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
pub struct FakeTokens {
    pub issued: Mutex<Vec<(QueuePass, Validity)>>,
    pub fail_issue: Mutex<bool>,
}

impl QueueTokens for FakeTokens {
    fn issue(&self, pass: &QueuePass, validity: Validity) -> Result<String, QueueError> {
        if *self.fail_issue.lock().unwrap() {
            return Err(QueueError::Fault(Fault::Unexpected(anyhow::anyhow!(
                "no signing key"
            ))));
        }
        self.issued.lock().unwrap().push((*pass, validity));
        Ok(token(pass))
    }

    fn verify(&self, token: &str, _now: DateTime<Utc>) -> Result<QueuePass, QueueError> {
        let parts: Vec<&str> = token.split(':').collect();
        match parts.as_slice() {
            ["pass", user, concert, token_id] => Ok(QueuePass {
                user: UserId(user.parse().map_err(|_| QueueError::BadToken)?),
                concert: ConcertId(concert.parse().map_err(|_| QueueError::BadToken)?),
                token_id: token_id.parse().map_err(|_| QueueError::BadToken)?,
            }),
            _ => Err(QueueError::BadToken),
        }
    }
}

fn token(pass: &QueuePass) -> String {
    format!("pass:{}:{}:{}", pass.user, pass.concert, pass.token_id)
}

/// The fakes above as the service's ports.
pub type Fakes = QueueAdapters<FakeStore, FakeSettings, FakeDirectory, ManualClock>;

pub struct Harness {
    pub service: QueueService<Fakes>,
    pub store: FakeStore,
    pub settings: FakeSettings,
    pub directory: FakeDirectory,
    pub tokens: Arc<FakeTokens>,
    pub clock: ManualClock,
}

pub fn harness() -> Harness {
    let store = FakeStore::default();
    let settings = FakeSettings::default();
    let directory = FakeDirectory::default();
    let tokens = Arc::new(FakeTokens::default());
    let clock = ManualClock::new(t0());
    let service = QueueService::<Fakes>::new(
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
    /// Enters and makes the place active for `lasting` from now.
    pub async fn admitted(
        &self,
        user: UserId,
        concert: ConcertId,
        lasting: TimeDelta,
    ) -> Admission {
        let admission = self.service.enter(user, concert).await.unwrap();
        self.store.set_place(
            admission.token_id,
            Place::Active {
                until: self.clock.now() + lasting,
            },
        );
        admission
    }
}
