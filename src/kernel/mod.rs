//! The shared kernel: small types every module speaks (ids, time, points).
//! Nothing here does IO.

pub mod alerts;
mod clock;
pub mod events;
mod ids;
mod points;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{ConcertId, PaymentId, ReservationId, ScheduleId, SeatId, UserId};
pub use points::{Points, PointsError};
