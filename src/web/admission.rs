//! The waiting room's gate in front of the seat map, holds and payments:
//! the `X-Queue-Token` security scheme and the one check those operations
//! make. The waiting room implements the check; the modules behind the
//! gate know only this, so none of them depends on the `queue` module.

use futures::future::BoxFuture;
use poem_openapi::{SecurityScheme, auth::ApiKey};

use super::problem::Problem;
use crate::kernel::{ScheduleId, UserId};

/// The signed queue token from `POST /v1/queue/tokens`.
#[derive(SecurityScheme)]
#[oai(
    rename = "queueToken",
    ty = "api_key",
    key_name = "X-Queue-Token",
    key_in = "header"
)]
pub struct QueueToken(pub ApiKey);

/// Whether a queue token admits a user to the concert a schedule belongs
/// to. Object-safe, so every controller behind the gate holds the same
/// `Arc<dyn AdmissionCheck>` (in its [`Guard`](super::guarded::Guard)).
pub trait AdmissionCheck: Send + Sync + 'static {
    /// Ok when admitted. An unknown schedule passes: the caller answers 404.
    fn check_schedule(
        &self,
        token: &str,
        user: UserId,
        schedule: ScheduleId,
    ) -> BoxFuture<'_, Result<(), Problem>>;
}
