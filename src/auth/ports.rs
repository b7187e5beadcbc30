use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::domain::{AuthError, Claimed, Identity};
use crate::kernel::{UserId, Validity};

/// Signs and verifies identity tokens. Pure computation, so it is a plain
/// (object-safe) trait the HTTP security schemes can hold as `Arc<dyn _>`.
pub trait TokenCodec: Send + Sync + 'static {
    fn issue(&self, identity: Identity, validity: Validity) -> Result<String, AuthError>;

    /// Checks signature, expiry (against `now`) and the claims, and says
    /// whom the token names. [`AuthError::UnknownKey`] when it is signed
    /// by a key the codec does not have (yet).
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claimed, AuthError>;
}

/// The identity provider's published key set, fetched again on demand.
pub trait KeySetSource: Send + Sync + 'static {
    /// Makes sure the codec has the key set as published a few seconds ago
    /// at most: fetches it again unless it was fetched (or tried) moments
    /// ago, so tokens naming unknown keys cannot make this server hammer
    /// the provider. `Unavailable` when the latest try failed.
    fn refresh(&self) -> BoxFuture<'_, Result<(), AuthError>>;
}

/// Identity providers' subjects and the user ids boxoffice keeps for them.
pub trait SubjectDirectory: Send + Sync + 'static {
    /// The user id of `subject`, recorded on first sight; the same id for
    /// the same subject from then on, whichever process asks first.
    fn user_for<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<UserId, AuthError>>;
}
