//! The background worker that runs due compensation steps (the policy is
//! the use case's: `payment::usecase::Compensations`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    payment::domain::PaymentError,
    worker::{Pass, periodically},
};

/// Runs `pass` (one pass over the due steps and the schedules being
/// cancelled) every `every`, and again at once while a pass finds work
/// (a mass cancellation goes through in batches without waiting).
pub async fn run<F, Fut>(pass: F, every: Duration, cancel: CancellationToken)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<usize, PaymentError>>,
{
    periodically("compensations", every, cancel, || {
        let passed = pass();
        async move {
            let found = passed.await?;
            Ok::<_, PaymentError>(if found > 0 { Pass::More } else { Pass::Idle })
        }
    })
    .await;
}
