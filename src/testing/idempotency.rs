//! Idempotency keys in the world: claiming a request key and remembering
//! its answer.

use chrono::{DateTime, Utc};

use super::MemTx;
use crate::kernel::{
    StoreError, UserId,
    idempotency::{IdempotencyTx, Recall, RequestKey},
};

/// Where a request key is kept in `World::keys`.
fn slot(key: &RequestKey) -> (UserId, &'static str, String) {
    (key.user(), key.scope(), key.key().to_owned())
}

impl IdempotencyTx for MemTx {
    async fn claim(&mut self, key: &RequestKey, _: DateTime<Utc>) -> Result<Recall, StoreError> {
        self.check()?;
        let slot = slot(key);
        match self.work.keys.get(&slot) {
            Some((fingerprint, Some(answer))) => Ok(Recall::of(key, fingerprint, answer.clone())),
            Some((_, None)) => Err(StoreError::Unexpected(anyhow::anyhow!(
                "a committed key without its answer"
            ))),
            None => {
                self.work
                    .keys
                    .insert(slot, (key.fingerprint().to_owned(), None));
                Ok(Recall::Fresh)
            }
        }
    }

    async fn remember(
        &mut self,
        key: &RequestKey,
        body: String,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let slot = slot(key);
        if self.work.keys.contains_key(&slot) {
            return Ok(false);
        }
        self.work
            .keys
            .insert(slot, (key.fingerprint().to_owned(), Some(body)));
        Ok(true)
    }

    async fn recall(&mut self, key: &RequestKey) -> Result<Recall, StoreError> {
        self.check()?;
        Ok(match self.work.keys.get(&slot(key)) {
            Some((fingerprint, Some(answer))) => Recall::of(key, fingerprint, answer.clone()),
            _ => Recall::Fresh,
        })
    }

    async fn answer(&mut self, key: &RequestKey, body: String) -> Result<(), StoreError> {
        self.check()?;
        let claimed =
            self.work.keys.get_mut(&slot(key)).ok_or_else(|| {
                StoreError::Unexpected(anyhow::anyhow!("the key was not claimed"))
            })?;
        claimed.1 = Some(body);
        Ok(())
    }
}
