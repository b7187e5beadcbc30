//! What a store (database, Redis) can answer besides a result, as the use
//! cases see it, and the bounded retry of a transaction that lost a race
//! inside the database.

use std::{future::Future, time::Duration};

/// A store operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached; the request answers 503 and the
    /// service heals by itself.
    #[error("store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The database rolled the transaction back because a concurrent one
    /// got in its way (deadlock, serialization failure, lock timeout, a
    /// busy SQLite file). Running the whole transaction again is safe.
    #[error("transaction conflicted with a concurrent one: {0:#}")]
    Conflict(anyhow::Error),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// How many times a use case runs a transaction that keeps conflicting
/// before it gives up and answers 503.
pub const CONFLICT_ATTEMPTS: u32 = 5;

/// Errors a retried transaction may end with: conflicts are recognised.
pub trait Retryable {
    fn is_conflict(&self) -> bool;
}

/// Runs `attempt` again while it fails with a conflict, up to
/// [`CONFLICT_ATTEMPTS`] times in all, pausing a little longer each time so
/// the transaction that won can finish.
pub async fn retry_on_conflict<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(err) if err.is_conflict() && tries < CONFLICT_ATTEMPTS => {
                metrics::counter!("db_conflict_retries_total").increment(1);
                tokio::time::sleep(conflict_pause(tries)).await;
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

/// 2, 4, 8, 16 ms, with up to half again of jitter so two losers of the
/// same race do not meet again at once.
fn conflict_pause(tries: u32) -> Duration {
    let base = 1_u64 << tries.min(6);
    let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u8) % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum E {
        Conflict,
        Other,
    }

    impl Retryable for E {
        fn is_conflict(&self) -> bool {
            matches!(self, E::Conflict)
        }
    }

    #[tokio::test]
    async fn a_conflict_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let outcome = retry_on_conflict(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(E::Conflict),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_other_errors_are_not_retried() {
        for (error, attempts) in [(E::Conflict, CONFLICT_ATTEMPTS), (E::Other, 1)] {
            let calls = AtomicU32::new(0);
            let outcome: Result<(), E> = retry_on_conflict(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(error)
            })
            .await;
            assert_eq!(outcome, Err(error));
            assert_eq!(calls.load(Ordering::SeqCst), attempts, "{error:?}");
        }
    }
}
