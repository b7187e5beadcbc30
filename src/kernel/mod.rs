//! The shared kernel: small types every module speaks (ids, time, points,
//! store errors, the unit-of-work port) and the few generic helpers several
//! modules share. Nothing here does IO.

pub mod alerts;
pub mod backoff;
pub mod cache;
mod clock;
pub mod events;
pub mod failpoint;
mod fault;
pub mod idempotency;
mod ids;
pub mod keyed;
pub mod page;
mod points;
pub mod ports;
pub mod retention;
pub mod snapshot;
mod store;
mod stored;
pub mod trace;
pub mod uow;
mod validity;
pub mod watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use fault::Fault;
pub(crate) use fault::module_error;
pub use ids::{
    ConcertId, CouponId, OrderId, PaymentId, ReservationId, ScheduleId, SeatId, TicketId,
    UserCouponId, UserId, VendorId,
};
pub use page::{Page, PageRequest};
pub use points::{Points, PointsError};
pub use store::{CONFLICT_ATTEMPTS, Retryable, StoreError, retry_on_conflict};
pub(crate) use stored::stored_name;
pub use uow::{Transaction, UnitOfWork};
pub use validity::Validity;
