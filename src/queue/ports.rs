use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    Entry, Lineup, Place, QueueError, QueueEvent, QueuePass, QueueSettings, QueueStats, TickOutcome,
};
use crate::kernel::{Clock, ConcertId, ScheduleId, UserId, Validity, events::NewEvent};

crate::kernel::ports::ports_bundle! {
    /// The adapters the waiting room's use cases run over, named once: the
    /// composition root picks them (`app::services`), tests pick fakes.
    pub trait QueuePorts for QueueAdapters<S, Q, D, C> {
        type Store: QueueStore;
        type Settings: QueueSettingsRepository;
        type Directory: ConcertDirectory;
        type Clock: Clock;
    }
}

/// The waiting rooms' state. Every change is atomic per concert (one Lua
/// script in Redis, one lock in process), records its event in the same
/// step, and takes "now" from the caller so rules can be tested with a
/// manual clock.
pub trait QueueStore: Clone + Send + Sync + 'static {
    /// Places the newcomer's user under its token id as `lineup` says — at the tail of
    /// the line, or into the draw by the number drawn (a FIFO arrival never
    /// overtakes the draw; a draw stands behind the FIFO arrivals before
    /// it) — or, if they already hold a place (waiting or active), answers
    /// that place and its token. `Lineup::Refuse` places nobody: a user
    /// without a place gets `Place::Gone`.
    fn enter(
        &self,
        newcomer: &QueuePass,
        lineup: Lineup,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Entry, QueueError>> + Send;

    /// Where the token stands; a waiting token's heartbeat is renewed.
    /// Also answers how many were admitted in the last minute.
    fn status(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Place, u64), QueueError>> + Send;

    /// Whether the token is admitted and its time has not run out.
    fn is_active(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Gives up the place (waiting or active) at once. False if it was gone.
    fn leave(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Ends the turn of a user who paid at `paid_at`: their place is freed
    /// at once. A place entered after `paid_at` belongs to a later visit
    /// (they came back for more) and stays; the answer is then false.
    fn finish(
        &self,
        concert: ConcertId,
        user: UserId,
        paid_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// One scheduler step for a room: expire active places past their time,
    /// drop waiting places without a recent heartbeat, then admit from the
    /// head at the configured rate up to `max_active`. Safe to run from
    /// several instances at once: the rate is accounted in the store.
    fn tick(
        &self,
        concert: ConcertId,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<TickOutcome, QueueError>> + Send;

    /// Concerts whose waiting room has ever been entered.
    fn concerts(&self) -> impl Future<Output = Result<Vec<ConcertId>, QueueError>> + Send;

    fn stats(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<QueueStats, QueueError>> + Send;

    /// The oldest recorded events not yet forwarded to the event bus.
    fn pending_events(
        &self,
        concert: ConcertId,
        max: usize,
    ) -> impl Future<Output = Result<Vec<QueueEvent>, QueueError>> + Send;

    /// Forgets forwarded events.
    fn forwarded(
        &self,
        concert: ConcertId,
        ids: &[String],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

pub trait QueueSettingsRepository: Clone + Send + Sync + 'static {
    /// `None` when the concert uses the defaults.
    fn get(
        &self,
        concert: ConcertId,
    ) -> impl Future<Output = Result<Option<QueueSettings>, QueueError>> + Send;

    /// Stores the settings and `event` (who changed them) in one
    /// transaction.
    fn put(
        &self,
        room: &RoomSettings,
        event: NewEvent,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// A concert's waiting-room settings, as they are stored.
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    pub concert: ConcertId,
    pub settings: QueueSettings,
}

/// Signs and verifies queue tokens (`X-Queue-Token`). No IO, object-safe.
pub trait QueueTokens: Send + Sync + 'static {
    fn issue(&self, pass: &QueuePass, validity: Validity) -> Result<String, QueueError>;
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<QueuePass, QueueError>;
}

/// What the waiting room needs to know about the catalog.
pub trait ConcertDirectory: Clone + Send + Sync + 'static {
    fn concert_exists(
        &self,
        concert: ConcertId,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<ConcertId>, QueueError>> + Send;
}
