//! Exponential backoff, the one growth rule every retry of the system
//! follows: compensation steps, redelivered events.

use std::time::Duration;

/// Doublings after which the delay stops growing (1024 × the base).
pub const MAX_DOUBLINGS: u32 = 10;

/// The delay before the next try after `failures` failed ones: the base
/// after the first, then twice, four times… as long, at most 1024 × base.
pub fn doubling(base: Duration, failures: u32) -> Duration {
    base * (1_u32 << failures.saturating_sub(1).min(MAX_DOUBLINGS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_stop_growing() {
        let base = Duration::from_secs(1);
        assert_eq!(doubling(base, 0), base);
        assert_eq!(doubling(base, 1), base);
        assert_eq!(doubling(base, 4).as_secs(), 8);
        assert_eq!(doubling(base, 40).as_secs(), 1024);
    }
}
