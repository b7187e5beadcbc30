//! One scheduler step of a room: the admission rule (a token bucket),
//! what a step did, and when an idle room retires.

use chrono::TimeDelta;

use super::QueueSettings;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domain::fixtures::room;

    /// No credit banked, last ticked at 0 ms.
    fn ticked_at_zero() -> AdmissionCredit {
        AdmissionCredit {
            credit: 0.0,
            last_tick_ms: Some(0),
        }
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
        let plan = slow.admission(ticked_at_zero(), 400, 0, 5);
        assert_eq!(plan.admit, 0);
        assert!(
            (plan.next.credit - 0.4).abs() < 1e-9,
            "fractions carry over"
        );
    }

    #[test]
    fn admission_never_passes_max_active_nor_the_waiting_line() {
        let settings = room(100, 10);
        let credit = ticked_at_zero();
        assert_eq!(settings.admission(credit, 1_000, 7, 500).admit, 3);
        assert_eq!(settings.admission(credit, 1_000, 10, 500).admit, 0);
        assert_eq!(settings.admission(credit, 1_000, 0, 4).admit, 4);
    }

    #[test]
    fn credit_nobody_could_use_is_not_banked() {
        let settings = room(100, 10);
        let full = settings.admission(ticked_at_zero(), 1_000, 10, 500);
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
}
