//! The background worker that runs due compensation steps (the policy is
//! the use case's: `payment::usecase::Compensations`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{payment::domain::PaymentError, worker::sleep_or_cancel};

/// Runs `pass` (one pass over the due steps) every `every`.
pub async fn run<F, Fut>(pass: F, every: Duration, cancel: CancellationToken)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), PaymentError>>,
{
    loop {
        if let Err(err) = pass().await {
            tracing::warn!(error = %err, "compensations: pass failed; retrying");
        }
        if sleep_or_cancel(&cancel, every).await {
            return;
        }
    }
}
