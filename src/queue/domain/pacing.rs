//! The pace of status polls, kept in this instance's memory.

use std::{num::NonZeroU32, time::Duration};

use governor::Quota;
use uuid::Uuid;

use super::QueueError;
use crate::kernel::keyed::Buckets;

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
    buckets: Buckets<Uuid>,
}

impl PollPacing {
    /// `None` when `gap` is zero (pacing off).
    pub fn every(gap: Duration) -> Option<Self> {
        let quota =
            Quota::with_period(gap)?.allow_burst(NonZeroU32::new(POLL_BURST).expect("a burst"));
        Some(Self {
            buckets: Buckets::new(quota),
        })
    }

    /// Ok, or the token polls too fast: how long until its next poll counts.
    pub fn check(&self, token: Uuid) -> Result<(), QueueError> {
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

    #[test]
    fn a_token_polling_far_faster_than_told_is_paced_and_others_are_not() {
        let pacing = PollPacing::every(Duration::from_secs(10)).unwrap();
        let (flood, honest) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..POLL_BURST {
            pacing.check(flood).unwrap();
        }
        let Err(QueueError::PollingTooFast(wait)) = pacing.check(flood) else {
            panic!("the poll after the burst is paced")
        };
        assert!(wait > Duration::from_secs(9), "{wait:?}");
        assert!(
            pacing.check(honest).is_ok(),
            "another token has its own pace"
        );
        assert_eq!(pacing.remembered(), 2);
        assert!(PollPacing::every(Duration::ZERO).is_none());
    }
}
