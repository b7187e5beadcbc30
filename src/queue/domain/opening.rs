//! When and how a room opens: the queueing method, how an arrival is
//! lined up (the pre-queue's and the lottery's draw), and whether the
//! scheduler admits anybody yet.

use chrono::{DateTime, Utc};

use super::QueueSettings;

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

impl QueueSettings {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domain::fixtures::{at, settings};

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
}
