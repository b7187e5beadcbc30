//! The payment room's flows: paying for a hold, a buyer's cancellation (of
//! a whole order, or of one ticket: `ticket_refund.rs`), an
//! admin's schedule cancellation, the saga step on the reservation's answer
//! and the compensation runner that refunds.

mod cancel;
mod compensations;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod orders;
mod pay;
mod saga;
mod schedule_cancellation;
mod ticket_refund;

use chrono::TimeDelta;

pub use compensations::{Attempt, Compensations, DUE_BATCH, REFUND_CONCURRENCY};
pub use saga::{PaymentSaga, on_reservation_answer};

use super::{
    domain::{DEFAULT_CANCEL_CUTOFF_MINUTES, PaymentError},
    ports::PaymentPorts,
};
use crate::kernel::Fault;
use crate::reservation::domain::ReservationError;

/// The buyer's and the admins' payment use cases; each flow's file adds its
/// methods.
#[derive(Clone)]
pub struct PaymentService<P: PaymentPorts> {
    uow: P::Uow,
    payments: P::Payments,
    reservations: P::Reservations,
    clock: P::Clock,
    wake: P::Wake,
    /// How long before the show a buyer may still cancel.
    cancel_cutoff: TimeDelta,
    /// How long before the show sales (payments too) close.
    sales_close_before: TimeDelta,
}

impl<P: PaymentPorts> PaymentService<P> {
    pub fn new(
        uow: P::Uow,
        payments: P::Payments,
        reservations: P::Reservations,
        clock: P::Clock,
        wake: P::Wake,
    ) -> Self {
        Self {
            uow,
            payments,
            reservations,
            clock,
            wake,
            cancel_cutoff: TimeDelta::minutes(DEFAULT_CANCEL_CUTOFF_MINUTES.into()),
            sales_close_before: TimeDelta::zero(),
        }
    }

    /// Payments are refused from `before` the show on (sales closed).
    #[must_use]
    pub fn with_sales_close(mut self, before: TimeDelta) -> Self {
        self.sales_close_before = before;
        self
    }

    /// Buyers may cancel until `cutoff` before the show.
    #[must_use]
    pub fn with_cancel_cutoff(mut self, cutoff: TimeDelta) -> Self {
        self.cancel_cutoff = cutoff;
        self
    }
}

/// A failure of the reservation module's reads, as the payment module
/// answers it: an outage stays an outage.
fn from_reservations(err: ReservationError) -> PaymentError {
    match err {
        ReservationError::Fault(Fault::Unavailable(cause))
        | ReservationError::Fault(Fault::Conflict(cause)) => {
            PaymentError::Fault(Fault::Unavailable(cause))
        }
        other => PaymentError::Fault(Fault::Unexpected(anyhow::anyhow!(other))),
    }
}
