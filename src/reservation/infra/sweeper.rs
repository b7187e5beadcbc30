//! Expires lapsed holds in the background (availability already treats
//! them as free; this frees the seat rows and tells the user).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{reservation::domain::ReservationError, worker::sleep_or_cancel};

const BATCH: u64 = 500;

/// Runs `sweep` (the use case, given a batch size) every `every`, at once
/// again while a whole batch was expired.
pub async fn run<F, Fut>(sweep: F, every: Duration, cancel: CancellationToken)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<u64, ReservationError>>,
{
    loop {
        match sweep(BATCH).await {
            Ok(n) => {
                metrics::counter!("reservations_expired_total").increment(n);
                if n == BATCH {
                    continue;
                }
            }
            Err(err) => tracing::warn!(error = %err, "hold sweeper failed; retrying"),
        }
        if sleep_or_cancel(&cancel, every).await {
            return;
        }
    }
}
