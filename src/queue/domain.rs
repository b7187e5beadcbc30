use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::kernel::{ConcertId, UserId};

/// How arrivals line up once the room is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::Display, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum QueueingMethod {
    /// In arrival order.
    #[default]
    Fifo,
    /// A lottery: every arrival draws a uniformly random number and the
    /// lowest go first, so arriving a second earlier earns nothing. The
    /// lottery stands behind everyone who queued in arrival order before
    /// it, and ahead of anyone queued in arrival order after it.
    Random,
    /// Nobody new gets in (409 `queue_closed`); places already held stay.
    Closed,
}

/// How an arrival is placed. Drawn numbers are below [`DRAW_RANGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lineup {
    /// At the tail of the line.
    Fifo,
    /// Into the draw (the pre-queue before `opensAt`, or the lottery of a
    /// `random` room) with this number: the draw is ordered by it. One
    /// uniform number per person, fixed when they arrive, is one shuffle
    /// of everyone in the draw — done once, whichever instance or store
    /// reads it.
    Draw(u64),
    /// The room is closed: only a place already held is answered.
    Refuse,
}

/// Numbers drawn for the pre-queue and the lottery are below this (2^40:
/// exact in a Redis sorted-set score next to a band number; two people
/// draw the same number with odds of about n²/2^41, and then their
/// random token ids decide).
pub const DRAW_RANGE: u64 = 1 << 40;

/// How a concert's waiting room admits people. Changed at runtime by admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// People admitted per second, from the head of the queue.
    pub admit_per_second: u32,
    /// Never more than this many active (admitted, not yet done) at once.
    pub max_active: u32,
    /// How long an admitted person may stay active.
    pub active_ttl_seconds: u32,
    /// A waiting person who has not polled for this long loses the place.
    pub heartbeat_grace_seconds: u32,
    /// Before this, arrivals enter the pre-queue and nobody is admitted; at
    /// it, the pre-queue (in its drawn order) stands ahead of later arrivals.
    pub opens_at: Option<DateTime<Utc>>,
    pub method: QueueingMethod,
    /// Admit nobody; every place is kept (heartbeats still count).
    pub paused: bool,
}

pub const MAX_ADMIT_PER_SECOND: u32 = 100_000;
pub const MAX_ACTIVE: u32 = 1_000_000;
pub const ACTIVE_TTL_RANGE: (u32, u32) = (10, 86_400);
/// The grace must comfortably exceed the longest poll interval we hand out.
pub const HEARTBEAT_GRACE_RANGE: (u32, u32) = (3 * MAX_POLL_AFTER_SECONDS, 3_600);
pub const MAX_POLL_AFTER_SECONDS: u32 = 10;
/// The admin's room list: 50 rooms a page unless asked otherwise, at most 200.
pub const DEFAULT_ROOM_PAGE: u64 = 50;
pub const MAX_ROOM_PAGE: u64 = 200;

impl QueueSettings {
    pub fn parse(
        admit_per_second: i64,
        max_active: i64,
        active_ttl_seconds: i64,
        heartbeat_grace_seconds: i64,
    ) -> Result<Self, QueueError> {
        let within = |name: &str, value: i64, min: u32, max: u32| -> Result<u32, QueueError> {
            u32::try_from(value)
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    QueueError::Invalid(format!("{name} must be between {min} and {max}"))
                })
        };
        Ok(Self {
            admit_per_second: within("admitPerSecond", admit_per_second, 1, MAX_ADMIT_PER_SECOND)?,
            max_active: within("maxActive", max_active, 1, MAX_ACTIVE)?,
            active_ttl_seconds: within(
                "activeTtlSeconds",
                active_ttl_seconds,
                ACTIVE_TTL_RANGE.0,
                ACTIVE_TTL_RANGE.1,
            )?,
            heartbeat_grace_seconds: within(
                "heartbeatGraceSeconds",
                heartbeat_grace_seconds,
                HEARTBEAT_GRACE_RANGE.0,
                HEARTBEAT_GRACE_RANGE.1,
            )?,
            opens_at: None,
            method: QueueingMethod::Fifo,
            paused: false,
        })
    }

    /// The same settings with the opening rules given.
    pub fn with_opening(
        self,
        opens_at: Option<DateTime<Utc>>,
        method: QueueingMethod,
        paused: bool,
    ) -> Self {
        Self {
            opens_at,
            method,
            paused,
            ..self
        }
    }

    /// The settings an admin's change makes of these: the rates are given
    /// whole; an opening rule left out keeps its current value.
    pub fn changed(&self, change: &SettingsChange) -> Self {
        Self {
            opens_at: change.opens_at.unwrap_or(self.opens_at),
            method: change.method.unwrap_or(self.method),
            paused: change.paused.unwrap_or(self.paused),
            ..change.rates
        }
    }

    /// Whether the room is past its `opensAt` (or has none).
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.opens_at.is_none_or(|opens| now >= opens)
    }

    /// Whether the scheduler admits anybody now: open and not paused.
    pub fn admits(&self, now: DateTime<Utc>) -> bool {
        self.is_open(now) && !self.paused
    }

    /// How somebody arriving now is placed, given a uniform number below
    /// [`DRAW_RANGE`] drawn for them: closed rooms refuse; before the
    /// opening everyone enters the draw (the pre-queue), whatever the
    /// method; after it, `random` rooms draw and `fifo` rooms queue.
    pub fn lineup(&self, now: DateTime<Utc>, draw: u64) -> Lineup {
        match self.method {
            QueueingMethod::Closed => Lineup::Refuse,
            _ if !self.is_open(now) => Lineup::Draw(draw % DRAW_RANGE),
            QueueingMethod::Random => Lineup::Draw(draw % DRAW_RANGE),
            QueueingMethod::Fifo => Lineup::Fifo,
        }
    }
}

/// An admin's change of a room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsChange {
    /// The rates, always given (their opening rules are ignored).
    pub rates: QueueSettings,
    /// `Some(None)` removes the opening time; `None` keeps it.
    pub opens_at: Option<Option<DateTime<Utc>>>,
    pub method: Option<QueueingMethod>,
    pub paused: Option<bool>,
}

/// A place in a waiting room, as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Waiting {
        position: u64,
    },
    Active {
        until: DateTime<Utc>,
    },
    /// Dropped, left, expired or never there.
    Gone,
}

/// What entering answers: the token id (the same for the same person
/// while they hold a place) and where they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub token_id: Uuid,
    pub place: Place,
}

/// The proof a client carries (`X-Queue-Token`), once its signature is
/// verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePass {
    pub token_id: Uuid,
    pub user: UserId,
    pub concert: ConcertId,
}

/// A status poll's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStatus {
    pub place: Place,
    /// People ahead (waiting only).
    pub ahead: u64,
    pub estimated_wait_seconds: u64,
    pub poll_after_seconds: u32,
    /// Set while the room has not opened yet and the place is in its
    /// pre-queue (no position until the opening).
    pub opens_at: Option<DateTime<Utc>>,
}

impl QueueStatus {
    /// Derives the estimate and poll interval from the measured admission
    /// rate (falling back to the configured rate before anyone was admitted).
    pub fn new(place: Place, admitted_last_minute: u64, settings: &QueueSettings) -> Self {
        match place {
            Place::Waiting { position } => {
                let ahead = position.saturating_sub(1);
                let measured = admitted_last_minute as f64 / 60.0;
                let rate = if measured > 0.0 {
                    measured
                } else {
                    f64::from(settings.admit_per_second)
                };
                let wait = (position as f64 / rate).ceil() as u64;
                // Poll more often near the head; never less often than the
                // heartbeat grace allows.
                let poll = (wait / 5).clamp(1, u64::from(MAX_POLL_AFTER_SECONDS)) as u32;
                Self {
                    place,
                    ahead,
                    estimated_wait_seconds: wait,
                    poll_after_seconds: poll,
                    opens_at: None,
                }
            }
            Place::Active { .. } => Self {
                place,
                ahead: 0,
                estimated_wait_seconds: 0,
                poll_after_seconds: MAX_POLL_AFTER_SECONDS,
                opens_at: None,
            },
            Place::Gone => Self {
                place,
                ahead: 0,
                estimated_wait_seconds: 0,
                poll_after_seconds: 0,
                opens_at: None,
            },
        }
    }

    /// The answer at `now`: before the room opens, a waiting place is in
    /// the pre-queue — no position yet (the draw is not revealed), the
    /// wait is the time to the opening, and polls keep the place.
    pub fn at(
        place: Place,
        admitted_last_minute: u64,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Self {
        match (place, settings.opens_at) {
            (Place::Waiting { .. }, Some(opens_at)) if now < opens_at => {
                let wait = ((opens_at - now).num_milliseconds().max(0) as u64).div_ceil(1000);
                Self {
                    place,
                    ahead: 0,
                    estimated_wait_seconds: wait,
                    poll_after_seconds: (wait / 5).clamp(1, u64::from(MAX_POLL_AFTER_SECONDS))
                        as u32,
                    opens_at: Some(opens_at),
                }
            }
            _ => Self::new(place, admitted_last_minute, settings),
        }
    }

    /// Whether the place is in the pre-queue of a room not yet open.
    pub fn is_prequeue(&self) -> bool {
        self.opens_at.is_some()
    }
}

/// What one scheduler tick did to a room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickOutcome {
    pub admitted: u64,
    pub dropped_waiting: u64,
    pub expired_active: u64,
    /// The room was idle and is gone: no longer listed, no longer ticked,
    /// until somebody enters it again.
    pub retired: bool,
    /// The room's store failed over since the last step (a Redis replica
    /// took over and may lack the last writes); the step started the
    /// admission credit again from nothing.
    pub failover: bool,
}

impl TickOutcome {
    /// Whether the step changed the room (admitted or dropped anybody).
    pub fn changed(&self) -> bool {
        self.admitted + self.dropped_waiting + self.expired_active > 0
    }
}

/// How long an empty room stays listed (and ticked) after its last change,
/// unless configured (`--queue-idle-room-seconds`).
pub const DEFAULT_ROOM_IDLE: TimeDelta = TimeDelta::minutes(10);

/// What the scheduler knows of a room after its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomActivity {
    pub waiting: u64,
    pub active: u64,
    /// Recorded events not yet forwarded to the bus.
    pub unforwarded: u64,
    /// The last entry, leave, finish, admission or expiry (ms).
    pub touched_ms: i64,
}

impl RoomActivity {
    /// A room is retired once nobody waits in it or holds a turn, every
    /// event it recorded has been forwarded, and nothing happened in it for
    /// `idle_after`. Retiring forgets it whole (its admission credit too,
    /// which is never banked anyway); the next entry opens it afresh. The
    /// Redis tick script is this rule in Lua.
    pub fn retires(&self, now_ms: i64, idle_after: TimeDelta) -> bool {
        self.waiting == 0
            && self.active == 0
            && self.unforwarded == 0
            && now_ms - self.touched_ms >= idle_after.num_milliseconds()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub concert: ConcertId,
    pub waiting: u64,
    pub active: u64,
    pub admitted_last_minute: u64,
    /// Admissions since the room opened (a counter: a console samples it
    /// to plot admissions per second).
    pub admitted_total: u64,
    pub oldest_wait_seconds: u64,
}

impl QueueStats {
    /// How long the last person in line should expect to wait.
    pub fn tail_wait_seconds(&self, settings: &QueueSettings) -> u64 {
        if self.waiting == 0 {
            return 0;
        }
        QueueStatus::new(
            Place::Waiting {
                position: self.waiting,
            },
            self.admitted_last_minute,
            settings,
        )
        .estimated_wait_seconds
    }
}

/// A waiting-room event, recorded by the store atomically with the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEventKind {
    Entered,
    Admitted,
    Left,
    Expired,
}

impl QueueEventKind {
    pub fn event_type(self) -> &'static str {
        match self {
            QueueEventKind::Entered => "QueueEntered",
            QueueEventKind::Admitted => "QueueAdmitted",
            QueueEventKind::Left => "QueueLeft",
            QueueEventKind::Expired => "QueueExpired",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "entered" => Some(QueueEventKind::Entered),
            "admitted" => Some(QueueEventKind::Admitted),
            "left" => Some(QueueEventKind::Left),
            "expired" => Some(QueueEventKind::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEvent {
    /// The store's id for the record (unique per concert); the envelope's
    /// event id is derived from it, so forwarding twice is harmless.
    pub id: String,
    pub kind: QueueEventKind,
    pub concert: ConcertId,
    pub token_id: Uuid,
    pub user: UserId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Invalid(String),
    #[error("concert {0} does not exist")]
    ConcertNotFound(ConcertId),
    #[error("the queue token is missing, malformed, forged or expired")]
    BadToken,
    #[error("the queue token belongs to another user")]
    NotYourToken,
    #[error("the queue token is for concert {token}, not concert {wanted}")]
    WrongConcert { token: ConcertId, wanted: ConcertId },
    #[error("the waiting room of concert {0} is closed to new arrivals")]
    Closed(ConcertId),
    #[error(
        "you have not been admitted from the waiting room of concert {0} (or your turn has ended)"
    )]
    NotAdmitted(ConcertId),
    /// The token polls far faster than it was told to; answered from this
    /// instance's memory, without asking the store.
    #[error("this queue token polls faster than told; poll again in {} ms", .0.as_millis())]
    PollingTooFast(std::time::Duration),
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// A concurrent transaction kept getting in the way, even after retries.
    #[error(transparent)]
    Conflict(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

crate::kernel::module_error_from_store_err!(QueueError);

/// A room's admission credit between scheduler ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdmissionCredit {
    pub credit: f64,
    pub last_tick_ms: Option<i64>,
}

/// What one scheduler tick of a room does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionPlan {
    /// How many to admit from the head now.
    pub admit: u64,
    /// The credit to keep for the next tick.
    pub next: AdmissionCredit,
}

impl QueueSettings {
    /// The admission rule, a token bucket: credit grows at
    /// `admit_per_second` (at most one second's worth is kept), each
    /// admission spends one, nobody is admitted past `max_active` active,
    /// and credit nobody could use (the room was full, or empty) is not
    /// banked — banking it would release a burst above the rate when slots
    /// free up. Several schedulers may tick one room: the store applies
    /// this atomically per room (the in-process store calls it under the
    /// room's lock; the Redis store's tick script is this function in Lua,
    /// held to the same contract tests).
    pub fn admission(
        &self,
        before: AdmissionCredit,
        now_ms: i64,
        active: u64,
        waiting: u64,
    ) -> AdmissionPlan {
        let rate = f64::from(self.admit_per_second);
        let elapsed = before.last_tick_ms.map_or(0, |last| (now_ms - last).max(0));
        let credit = (before.credit + elapsed as f64 * rate / 1000.0).min(rate.max(1.0));
        let free = u64::from(self.max_active).saturating_sub(active);
        let admit = (credit.floor() as u64).min(free).min(waiting);
        let credit = if (admit as f64) < credit.floor() {
            credit.fract()
        } else {
            credit - admit as f64
        };
        let last_tick_ms = match before.last_tick_ms {
            Some(last) if now_ms <= last => Some(last),
            _ => Some(now_ms),
        };
        AdmissionPlan {
            admit,
            next: AdmissionCredit {
                credit,
                last_tick_ms,
            },
        }
    }

    /// Waiting places whose last heartbeat is older than this lose their
    /// place.
    pub fn heartbeat_cutoff_ms(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.heartbeat_grace_seconds) * 1000
    }

    /// Until when a place admitted at `now_ms` stays active.
    pub fn active_until_ms(&self, now_ms: i64) -> i64 {
        now_ms + i64::from(self.active_ttl_seconds) * 1000
    }
}

/// Polls a token may make in a row before the pace applies.
pub const POLL_BURST: u32 = 10;

/// The pace of status polls: a token may poll once per `gap` on average,
/// after a burst of [`POLL_BURST`]. Honest clients poll at their
/// `pollAfterSeconds` (a second or more), far below it; a flood of polls
/// above it is told to wait without costing a store round trip, so it
/// cannot slow the honest ones. Per instance, in memory (a token's polls
/// that reach another instance are paced there); tokens that stop polling
/// are forgotten.
pub struct PollPacing {
    buckets: crate::kernel::keyed::Buckets<uuid::Uuid>,
}

impl PollPacing {
    /// `None` when `gap` is zero (pacing off).
    pub fn every(gap: std::time::Duration) -> Option<Self> {
        let quota = governor::Quota::with_period(gap)?
            .allow_burst(std::num::NonZeroU32::new(POLL_BURST).expect("a burst"));
        Some(Self {
            buckets: crate::kernel::keyed::Buckets::new(quota),
        })
    }

    /// Ok, or the token polls too fast: how long until its next poll counts.
    pub fn check(&self, token: uuid::Uuid) -> Result<(), QueueError> {
        self.buckets
            .check(&token)
            .map_err(QueueError::PollingTooFast)
    }

    /// Tokens remembered now (forgotten once their bucket is full again).
    pub fn remembered(&self) -> usize {
        self.buckets.remembered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        QueueSettings::parse(50, 100, 600, 30).unwrap()
    }

    #[test]
    fn settings_are_range_checked() {
        assert!(QueueSettings::parse(0, 100, 600, 30).is_err());
        assert!(QueueSettings::parse(50, 0, 600, 30).is_err());
        assert!(QueueSettings::parse(50, 100, 5, 30).is_err());
        assert!(QueueSettings::parse(50, 100, 600, 10).is_err());
        assert!(QueueSettings::parse(-1, 100, 600, 30).is_err());
        assert!(QueueSettings::parse(i64::MAX, 100, 600, 30).is_err());
        assert_eq!(settings().admit_per_second, 50);
    }

    #[test]
    fn the_estimate_uses_the_measured_rate_once_there_is_one() {
        let waiting = Place::Waiting { position: 600 };
        let configured = QueueStatus::new(waiting, 0, &settings());
        assert_eq!(
            (configured.ahead, configured.estimated_wait_seconds),
            (599, 12)
        );
        let measured = QueueStatus::new(waiting, 600, &settings());
        assert_eq!(
            measured.estimated_wait_seconds, 60,
            "10 admitted per second measured"
        );
        assert_eq!(measured.poll_after_seconds, MAX_POLL_AFTER_SECONDS);
        let head = QueueStatus::new(Place::Waiting { position: 1 }, 600, &settings());
        assert_eq!((head.ahead, head.poll_after_seconds), (0, 1));
        assert_eq!(
            QueueStatus::new(Place::Gone, 0, &settings()).poll_after_seconds,
            0
        );
    }

    #[test]
    fn settings_accept_each_range_inclusive_and_name_the_field_they_refuse() {
        let lowest = QueueSettings::parse(1, 1, 10, 30).unwrap();
        assert_eq!(
            lowest,
            QueueSettings {
                admit_per_second: 1,
                max_active: 1,
                active_ttl_seconds: ACTIVE_TTL_RANGE.0,
                heartbeat_grace_seconds: HEARTBEAT_GRACE_RANGE.0,
                opens_at: None,
                method: QueueingMethod::Fifo,
                paused: false,
            }
        );
        QueueSettings::parse(
            i64::from(MAX_ADMIT_PER_SECOND),
            i64::from(MAX_ACTIVE),
            i64::from(ACTIVE_TTL_RANGE.1),
            i64::from(HEARTBEAT_GRACE_RANGE.1),
        )
        .unwrap();

        let refused = |result: Result<QueueSettings, QueueError>| match result {
            Err(QueueError::Invalid(detail)) => detail,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(refused(QueueSettings::parse(100_001, 1, 10, 30)).starts_with("admitPerSecond"));
        assert!(refused(QueueSettings::parse(1, 1_000_001, 10, 30)).starts_with("maxActive"));
        assert!(refused(QueueSettings::parse(1, 1, 86_401, 30)).starts_with("activeTtlSeconds"));
        assert!(
            refused(QueueSettings::parse(1, 1, 10, 3_601)).starts_with("heartbeatGraceSeconds")
        );
        assert!(refused(QueueSettings::parse(1, 1, 10, 29)).contains("between 30 and 3600"));
    }

    #[test]
    fn the_tail_wait_is_zero_for_an_empty_room_and_the_last_places_estimate_otherwise() {
        let mut stats = QueueStats {
            concert: ConcertId(1),
            waiting: 0,
            active: 3,
            admitted_last_minute: 0,
            admitted_total: 0,
            oldest_wait_seconds: 0,
        };
        assert_eq!(stats.tail_wait_seconds(&settings()), 0);
        stats.waiting = 101;
        assert_eq!(
            stats.tail_wait_seconds(&settings()),
            3,
            "101 / 50 per second"
        );
        stats.admitted_last_minute = 60;
        assert_eq!(stats.tail_wait_seconds(&settings()), 101);
    }

    #[test]
    fn every_event_kind_round_trips_its_code_and_names_its_event() {
        let kinds = [
            ("entered", QueueEventKind::Entered, "QueueEntered"),
            ("admitted", QueueEventKind::Admitted, "QueueAdmitted"),
            ("left", QueueEventKind::Left, "QueueLeft"),
            ("expired", QueueEventKind::Expired, "QueueExpired"),
        ];
        for (code, kind, event_type) in kinds {
            assert_eq!(QueueEventKind::parse(code), Some(kind));
            assert_eq!(kind.event_type(), event_type);
        }
        assert_eq!(QueueEventKind::parse("Entered"), None);
        assert_eq!(QueueEventKind::parse(""), None);
    }

    fn room(rate: u32, max_active: u32) -> QueueSettings {
        QueueSettings::parse(rate.into(), max_active.into(), 60, 30).unwrap()
    }

    #[test]
    fn admission_follows_the_rate_and_keeps_at_most_a_seconds_worth() {
        let settings = room(10, 1_000);
        let first = settings.admission(AdmissionCredit::default(), 0, 0, 500);
        assert_eq!(first.admit, 0, "no credit before time has passed");
        let later = settings.admission(first.next, 500, 0, 500);
        assert_eq!(later.admit, 5, "half a second at 10/s");
        let idle = settings.admission(later.next, 60_500, 0, 500);
        assert_eq!(
            idle.admit, 10,
            "a long pause still releases one second's worth"
        );
        let slow = room(1, 10);
        let plan = slow.admission(
            AdmissionCredit {
                credit: 0.0,
                last_tick_ms: Some(0),
            },
            400,
            0,
            5,
        );
        assert_eq!(plan.admit, 0);
        assert!(
            (plan.next.credit - 0.4).abs() < 1e-9,
            "fractions carry over"
        );
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn before_opens_at_everyone_draws_after_it_the_method_decides() {
        let draw = DRAW_RANGE + 7;
        let fifo = settings().with_opening(Some(at(60)), QueueingMethod::Fifo, false);
        assert_eq!(fifo.lineup(at(59), draw), Lineup::Draw(7), "pre-queue");
        assert_eq!(fifo.lineup(at(60), draw), Lineup::Fifo, "open at opensAt");
        let random = fifo.with_opening(Some(at(60)), QueueingMethod::Random, false);
        assert_eq!(random.lineup(at(59), draw), Lineup::Draw(7));
        assert_eq!(random.lineup(at(61), draw), Lineup::Draw(7), "a lottery");
        let closed = fifo.with_opening(Some(at(60)), QueueingMethod::Closed, false);
        assert_eq!(closed.lineup(at(59), draw), Lineup::Refuse);
        assert_eq!(closed.lineup(at(61), draw), Lineup::Refuse);
        assert_eq!(settings().lineup(at(0), draw), Lineup::Fifo, "no opensAt");
    }

    #[test]
    fn nobody_is_admitted_before_the_opening_nor_while_paused() {
        let room = settings().with_opening(Some(at(60)), QueueingMethod::Fifo, false);
        assert!(!room.admits(at(59)));
        assert!(room.admits(at(60)));
        let paused = room.with_opening(None, QueueingMethod::Fifo, true);
        assert!(paused.is_open(at(0)) && !paused.admits(at(0)));
        let closed = room.with_opening(None, QueueingMethod::Closed, false);
        assert!(
            closed.admits(at(0)),
            "a closed room still admits those in it"
        );
    }

    #[test]
    fn a_waiting_place_before_the_opening_is_prequeue_and_nothing_else_is() {
        let room = settings().with_opening(Some(at(100)), QueueingMethod::Fifo, false);
        let waiting = Place::Waiting { position: 40 };
        let early = QueueStatus::at(waiting, 0, &room, at(0));
        assert_eq!(early.opens_at, Some(at(100)));
        assert_eq!((early.ahead, early.estimated_wait_seconds), (0, 100));
        assert_eq!(early.poll_after_seconds, MAX_POLL_AFTER_SECONDS);
        let open = QueueStatus::at(waiting, 0, &room, at(100));
        assert!(!open.is_prequeue());
        assert_eq!(open, QueueStatus::new(waiting, 0, &room));
        let gone = QueueStatus::at(Place::Gone, 0, &room, at(0));
        assert!(!gone.is_prequeue(), "a lost place is not in the pre-queue");
    }

    #[test]
    fn the_method_reads_and_writes_its_lowercase_name() {
        for (name, method) in [
            ("fifo", QueueingMethod::Fifo),
            ("random", QueueingMethod::Random),
            ("closed", QueueingMethod::Closed),
        ] {
            assert_eq!(method.to_string(), name);
            assert_eq!(name.parse::<QueueingMethod>().unwrap(), method);
        }
        assert!("lottery".parse::<QueueingMethod>().is_err());
    }

    #[test]
    fn admission_rules_come_from_the_change_and_opening_rules_from_it_only_when_given() {
        let current = settings().with_opening(Some(at(5)), QueueingMethod::Random, true);
        let rates = room(7, 8).with_opening(None, QueueingMethod::Closed, false);
        let kept = current.changed(&SettingsChange {
            rates,
            opens_at: None,
            method: None,
            paused: None,
        });
        assert_eq!(
            kept,
            room(7, 8).with_opening(Some(at(5)), QueueingMethod::Random, true)
        );
        let all = current.changed(&SettingsChange {
            rates,
            opens_at: Some(None),
            method: Some(QueueingMethod::Fifo),
            paused: Some(false),
        });
        assert_eq!(all, room(7, 8));
    }

    #[test]
    fn admission_never_passes_max_active_nor_the_waiting_line() {
        let settings = room(100, 10);
        let credit = AdmissionCredit {
            credit: 0.0,
            last_tick_ms: Some(0),
        };
        assert_eq!(settings.admission(credit, 1_000, 7, 500).admit, 3);
        assert_eq!(settings.admission(credit, 1_000, 10, 500).admit, 0);
        assert_eq!(settings.admission(credit, 1_000, 0, 4).admit, 4);
    }

    #[test]
    fn credit_nobody_could_use_is_not_banked() {
        let settings = room(100, 10);
        let full = settings.admission(
            AdmissionCredit {
                credit: 0.0,
                last_tick_ms: Some(0),
            },
            1_000,
            10,
            500,
        );
        assert_eq!(full.admit, 0);
        assert!(full.next.credit < 1.0, "no burst when slots free up");
        let freed = settings.admission(full.next, 1_010, 0, 500);
        assert!(freed.admit <= 2, "admitted {} at once", freed.admit);
    }

    #[test]
    fn a_clock_going_back_neither_adds_credit_nor_moves_the_last_tick_back() {
        let settings = room(10, 100);
        let before = AdmissionCredit {
            credit: 0.5,
            last_tick_ms: Some(5_000),
        };
        let plan = settings.admission(before, 4_000, 0, 10);
        assert_eq!(plan.admit, 0);
        assert_eq!(plan.next.last_tick_ms, Some(5_000));
        assert!((plan.next.credit - 0.5).abs() < 1e-9);
        assert_eq!(settings.heartbeat_cutoff_ms(100_000), 70_000);
        assert_eq!(settings.active_until_ms(1_000), 61_000);
    }

    #[test]
    fn only_an_empty_forwarded_room_left_alone_long_enough_retires() {
        let idle = TimeDelta::minutes(10);
        let quiet = RoomActivity {
            waiting: 0,
            active: 0,
            unforwarded: 0,
            touched_ms: 0,
        };
        let ten_minutes = idle.num_milliseconds();
        assert!(quiet.retires(ten_minutes, idle));
        assert!(!quiet.retires(ten_minutes - 1, idle), "not yet");
        for busy in [
            RoomActivity {
                waiting: 1,
                ..quiet
            },
            RoomActivity { active: 1, ..quiet },
            RoomActivity {
                unforwarded: 1,
                ..quiet
            },
        ] {
            assert!(!busy.retires(10 * ten_minutes, idle), "{busy:?}");
        }
    }

    #[test]
    fn a_token_polling_far_faster_than_told_is_paced_and_others_are_not() {
        let pacing = PollPacing::every(std::time::Duration::from_secs(10)).unwrap();
        let (flood, honest) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for _ in 0..POLL_BURST {
            pacing.check(flood).unwrap();
        }
        let Err(QueueError::PollingTooFast(wait)) = pacing.check(flood) else {
            panic!("the poll after the burst is paced")
        };
        assert!(wait > std::time::Duration::from_secs(9), "{wait:?}");
        assert!(
            pacing.check(honest).is_ok(),
            "another token has its own pace"
        );
        assert_eq!(pacing.remembered(), 2);
        assert!(PollPacing::every(std::time::Duration::ZERO).is_none());
    }
}
