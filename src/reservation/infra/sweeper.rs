//! Expires lapsed holds in the background (availability already treats
//! them as free; this frees the seat rows and tells the user).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    reservation::domain::ReservationError,
    worker::{Pass, periodically},
};

const BATCH: u64 = 500;

/// Runs `sweep` (the use case, given a batch size) every `every`, at once
/// again while a whole batch was expired.
pub async fn run<F, Fut>(sweep: F, every: Duration, cancel: CancellationToken)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<u64, ReservationError>>,
{
    periodically("hold sweeper", every, cancel, || {
        let swept = sweep(BATCH);
        async move {
            let expired = swept.await?;
            metrics::counter!("reservations_expired_total").increment(expired);
            Ok::<_, ReservationError>(Pass::full(expired, BATCH))
        }
    })
    .await;
}
