use chrono::{DateTime, TimeDelta, Utc};

use super::domain::{AuthError, Identity};

/// Signs and verifies identity tokens. Pure computation, so it is a plain
/// (object-safe) trait the HTTP security schemes can hold as `Arc<dyn _>`.
pub trait TokenCodec: Send + Sync + 'static {
    fn issue(
        &self,
        identity: Identity,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<String, AuthError>;

    /// Checks signature and expiry against `now`.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthError>;
}
