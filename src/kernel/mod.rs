//! The shared kernel: small types every module speaks (ids, time, points).
//! Nothing here does IO.

pub mod alerts;
mod clock;
pub mod events;
mod ids;
mod points;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{
    ConcertId, CouponId, PaymentId, ReservationId, ScheduleId, SeatId, UserCouponId, UserId,
    VendorId,
};
pub use points::{Points, PointsError};
