//! `Idempotency-Key` at the HTTP edge: the header is read, checked and
//! turned into a [`RequestKey`]; the use cases do the rest
//! (`kernel::idempotency`).

use poem::Request;
use serde::Serialize;

use super::problem::Problem;
use crate::kernel::{
    UserId,
    idempotency::{InvalidKey, KeyError, MAX_KEY_LEN, RequestKey},
};

const HEADER: &str = "idempotency-key";

fn invalid_key() -> Problem {
    Problem::validation(format!(
        "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, sent once"
    ))
}

impl From<InvalidKey> for Problem {
    fn from(_: InvalidKey) -> Self {
        invalid_key()
    }
}

/// The request's key, if it sent one; a malformed one is 400.
pub fn request_key(
    user: UserId,
    scope: &'static str,
    key: Option<&str>,
    request: &impl Serialize,
) -> Result<Option<RequestKey>, Problem> {
    key.map(|key| RequestKey::new(user, scope, key, request))
        .transpose()
        .map_err(Problem::from)
}

/// 409 `idempotency_conflict`: the key names another request.
pub fn key_reused() -> Problem {
    Problem::conflict("idempotency_conflict", KeyError::Reused.to_string())
}

/// Refuses a request whose `Idempotency-Key` the handlers would not see.
/// poem-openapi reads a header value that is not visible ASCII as if it
/// were absent, so a retried charge with such a key would run twice; and of
/// two keys it would silently use one.
pub async fn refuse_unread_keys(req: Request) -> poem::Result<Request> {
    let keys = req.headers().get_all(HEADER);
    if keys.iter().count() > 1 || keys.iter().any(|key| key.to_str().is_err()) {
        return Err(invalid_key().into());
    }
    Ok(req)
}
