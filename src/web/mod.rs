//! HTTP plumbing shared by every module's controllers: problem+json errors,
//! edge middleware, health and metrics endpoints.

pub mod admission;
pub mod guarded;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod middleware;
pub mod paging;
pub mod problem;
pub mod rendered;
pub mod reply;
pub mod server;
pub mod strict;
pub mod traced;

use poem_openapi::Tags;

/// The groups operations are listed under in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Concerts, schedules and seat maps.
    Catalog,
    /// The virtual waiting room in front of every sale.
    Queue,
    /// Seat holds.
    Reservations,
    /// The points wallet.
    Wallet,
    /// Paying for holds.
    Payments,
    /// First-come-first-served coupons and their redemption jobs.
    Coupons,
    /// What happened to your reservations and payments.
    Notifications,
    /// Signed tickets, their QR images and the keys that verify them.
    Tickets,
    /// Operator-only endpoints (role `admin`).
    Admin,
    /// Liveness and readiness probes.
    Health,
}
