//! Plumbing the background workers share (relay, consumers, sweepers,
//! schedulers, reconcilers): sleeping in a way a shutdown interrupts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `duration`; true when cancelled meanwhile (the worker stops).
pub async fn sleep_or_cancel(cancel: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}
