//! `Idempotency-Key`, one mechanism for every request that must not run
//! twice (a wallet charge, a payment, a coupon issue, a redemption).
//!
//! The key is claimed, the work done and its answer stored in ONE
//! transaction: the claim is the transaction's first write, the answer its
//! last, and both commit with the work or not at all. So:
//!
//! - a crash (or any failure) before the commit leaves no key behind, and
//!   a retry runs the work afresh — it never finds a key stuck "in
//!   progress";
//! - a crash after the commit leaves the key with its answer, and a retry
//!   gets exactly that answer — the work is never done twice;
//! - two requests with one key at the same moment queue on the key's row:
//!   the second waits for the first to commit, then replays its answer (or,
//!   if the first rolled back, runs the work itself).
//!
//! The same key with another request (another body, another target) is
//! refused. Only successful answers are remembered: a refused request
//! changed nothing and may be retried with its key.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{StoreError, Transaction, UnitOfWork, UserId, failpoint};

pub const MAX_KEY_LEN: usize = 128;

/// One client request as its key names it: the user, what kind of request
/// (`wallet.charge`, `payment.pay`, …), the key, and a fingerprint of what
/// was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    user: UserId,
    scope: &'static str,
    key: String,
    fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, sent once")]
pub struct InvalidKey;

/// An `Idempotency-Key` is 1 to 128 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidKey);
    }
    Ok(())
}

impl RequestKey {
    /// `request` is everything that makes two requests the same one: the
    /// body and the path's target.
    pub fn new(
        user: UserId,
        scope: &'static str,
        key: &str,
        request: &impl Serialize,
    ) -> Result<Self, InvalidKey> {
        validate_key(key)?;
        let bytes = serde_json::to_vec(request).map_err(|_| InvalidKey)?;
        Ok(Self {
            user,
            scope,
            key: key.to_owned(),
            fingerprint: format!("{:x}", Sha256::digest(bytes)),
        })
    }

    pub fn user(&self) -> UserId {
        self.user
    }

    pub fn scope(&self) -> &'static str {
        self.scope
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// What a store knows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Never used (or its request failed, or its retention passed).
    Fresh,
    /// A committed request with the same fingerprint answered this.
    Answered(String),
    /// The key belongs to a different request.
    OtherRequest,
}

impl Recall {
    /// What a stored (fingerprint, answer) means for `key`.
    pub fn of(key: &RequestKey, fingerprint: &str, answer: String) -> Self {
        if fingerprint == key.fingerprint() {
            Self::Answered(answer)
        } else {
            Self::OtherRequest
        }
    }
}

/// The keys' store inside the work's transaction.
pub trait IdempotencyTx: Send {
    /// Claims `key` for this transaction — its first write, so a concurrent
    /// request with the same key waits here until this one commits or rolls
    /// back — or, if a committed request holds it, tells what it answered.
    fn claim(
        &mut self,
        key: &RequestKey,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Recall, StoreError>> + Send;

    /// Reads what a committed request with `key` answered, claiming nothing.
    fn recall(
        &mut self,
        key: &RequestKey,
    ) -> impl Future<Output = Result<Recall, StoreError>> + Send;

    /// Claims `key` with its answer at once, for work whose claim was made
    /// elsewhere (a coupon's number, taken from the ledger). False if the key
    /// is already taken, in which case nothing is written.
    fn remember(
        &mut self,
        key: &RequestKey,
        body: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores the answer of the key claimed in this transaction.
    fn answer(
        &mut self,
        key: &RequestKey,
        body: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why a keyed request did not run.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key was used for a different request: 409 `idempotency_conflict`.
    #[error("this Idempotency-Key was used with a different request")]
    Reused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Claims `key` in `tx`. `Ok(None)`: do the work, then [`finish`].
/// `Ok(Some(answer))`: the first request's answer; drop `tx`, nothing to do.
/// Without a key, always `Ok(None)`.
pub async fn claim<Tx: IdempotencyTx, T: DeserializeOwned>(
    tx: &mut Tx,
    key: Option<&RequestKey>,
    now: DateTime<Utc>,
) -> Result<Option<T>, KeyError> {
    let Some(key) = key else { return Ok(None) };
    match tx.claim(key, now).await? {
        Recall::Fresh => {
            failpoint::step("idempotency::claimed")
                .await
                .map_err(StoreError::Unavailable)?;
            Ok(None)
        }
        Recall::Answered(body) => decode(&body).map(Some),
        Recall::OtherRequest => Err(KeyError::Reused),
    }
}

/// What a committed request with `key` answered, if one did, read in a
/// short transaction of its own. For a check that must not stand in the
/// way of a replay (a queue token finished by the first request's payment,
/// a coupon ledger that already counts the first request's win). Without a
/// key, `Ok(None)`.
pub async fn replay<U, T>(uow: &U, key: Option<&RequestKey>) -> Result<Option<T>, KeyError>
where
    U: UnitOfWork,
    U::Tx: IdempotencyTx,
    T: DeserializeOwned,
{
    let Some(key) = key else { return Ok(None) };
    let mut tx = uow.begin().await?;
    match tx.recall(key).await? {
        Recall::Fresh => Ok(None),
        Recall::Answered(body) => decode(&body).map(Some),
        Recall::OtherRequest => Err(KeyError::Reused),
    }
}

/// The stored answer, as the first request gave it.
pub fn decode<T: DeserializeOwned>(body: &str) -> Result<T, KeyError> {
    serde_json::from_str(body).map_err(|err| {
        StoreError::Unexpected(anyhow::Error::new(err).context("a stored idempotent answer")).into()
    })
}

/// Stores `answer` under `key` (if any) and commits the work with it.
pub async fn finish<Tx: IdempotencyTx + Transaction, T: Serialize>(
    mut tx: Tx,
    key: Option<&RequestKey>,
    answer: &T,
) -> Result<(), StoreError> {
    if let Some(key) = key {
        let body = serde_json::to_string(answer)
            .map_err(|err| StoreError::Unexpected(anyhow::Error::new(err)))?;
        tx.answer(key, body).await?;
        failpoint::step("idempotency::answered")
            .await
            .map_err(StoreError::Unavailable)?;
    }
    tx.commit().await?;
    // The work and its answer are committed; a failure from here on (a
    // crash, a lost connection) only loses the reply, which a retry with
    // the key gets back.
    if key.is_some() {
        failpoint::step("idempotency::committed")
            .await
            .map_err(StoreError::Unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_128_printable_ascii_characters() {
        assert!(validate_key("pay-1").is_ok());
        assert!(validate_key(&"k".repeat(128)).is_ok());
        assert_eq!(validate_key(""), Err(InvalidKey));
        assert_eq!(validate_key(&"k".repeat(129)), Err(InvalidKey));
        assert_eq!(validate_key("with space"), Err(InvalidKey));
        assert_eq!(validate_key("é"), Err(InvalidKey));
    }

    #[test]
    fn the_fingerprint_tells_requests_apart_not_users_or_keys() {
        let key = |user, body: i64| RequestKey::new(UserId(user), "s", "k", &body).unwrap();
        assert_eq!(key(1, 5).fingerprint(), key(2, 5).fingerprint());
        assert_ne!(key(1, 5).fingerprint(), key(1, 6).fingerprint());
        let first = key(1, 5);
        assert_eq!(
            Recall::of(&first, key(1, 5).fingerprint(), "a".into()),
            Recall::Answered("a".into())
        );
        assert_eq!(
            Recall::of(&first, key(1, 6).fingerprint(), "a".into()),
            Recall::OtherRequest
        );
    }
}
