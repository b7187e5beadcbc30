//! How long a signed token is good for.

use chrono::{DateTime, TimeDelta, Utc};

/// A token's lifetime: issued at `from`, good for `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub from: DateTime<Utc>,
    pub ttl: TimeDelta,
}

impl Validity {
    pub fn new(from: DateTime<Utc>, ttl: TimeDelta) -> Self {
        Self { from, ttl }
    }

    pub fn until(&self) -> DateTime<Utc> {
        self.from + self.ttl
    }
}
