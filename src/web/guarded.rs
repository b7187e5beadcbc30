//! The checks made before a module's use cases — the per-user and per-IP
//! rate limits, the waiting room's gate — and the one API type that holds
//! them beside the use cases.

use std::sync::Arc;

use poem::Request;

use super::{
    admission::{AdmissionCheck, QueueToken},
    limits::{RateLimits, client_ip},
    problem::Problem,
};
use crate::kernel::{ScheduleId, UserId};

/// What an operation checks before it runs: shared by every API of an
/// instance.
#[derive(Clone)]
pub struct Guard {
    admission: Arc<dyn AdmissionCheck>,
    limits: RateLimits,
}

impl Guard {
    pub fn new(admission: Arc<dyn AdmissionCheck>, limits: RateLimits) -> Self {
        Self { admission, limits }
    }

    /// 429 `rate_limited` unless the user and their address are under
    /// their limits.
    pub async fn limit(&self, user: UserId, req: &Request) -> Result<(), Problem> {
        self.limits.check(user, client_ip(req)).await
    }

    /// The per-IP limit alone, for what anyone may ask without signing in.
    pub fn limit_address(&self, req: &Request) -> Result<(), Problem> {
        self.limits.check_address(client_ip(req))
    }

    /// 403 `queue_not_admitted` (or 401 for a bad token) unless the queue
    /// token admits `user` to the schedule's concert.
    pub async fn admit(
        &self,
        token: &QueueToken,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<(), Problem> {
        self.admission
            .check_schedule(&token.0.key, user, schedule)
            .await
    }
}

/// A module's operations over its use cases `S`, behind the guard. Each
/// module names its own (`pub type WalletApi<P> = Guarded<WalletService<P>>`)
/// and writes its `#[OpenApi]` impl for that.
pub struct Guarded<S> {
    pub(crate) service: S,
    pub(crate) guard: Guard,
}

impl<S> Guarded<S> {
    pub fn new(service: S, guard: Guard) -> Self {
        Self { service, guard }
    }
}

/// A module's operations over its use cases `S` that no rate limit or
/// waiting room stands in front of: an operator's (behind the admin token
/// alone) and reading one's own notifications.
pub struct Unguarded<S> {
    pub(crate) service: S,
}

impl<S> Unguarded<S> {
    pub fn new(service: S) -> Self {
        Self { service }
    }
}
