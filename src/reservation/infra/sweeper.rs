//! Expires lapsed holds in the background (availability already treats
//! them as free; this frees the seat rows and tells the user).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    kernel::{Clock, events::RelayWake},
    outbox::infra::relay::sleep_or_cancel,
    reservation::{ports::ReservationRepository, usecase::ReservationService},
};

const BATCH: u64 = 500;

pub async fn run<R: ReservationRepository, C: Clock, W: RelayWake>(
    service: ReservationService<R, C, W>,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        match service.sweep(BATCH).await {
            Ok(n) if n == BATCH => continue,
            Ok(n) => metrics::counter!("reservations_expired_total").increment(n),
            Err(err) => tracing::warn!(error = %err, "hold sweeper failed; retrying"),
        }
        if sleep_or_cancel(&cancel, every).await {
            return;
        }
    }
}
