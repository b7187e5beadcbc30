//! The ticket-signing keys as the server keeps them: stored in the
//! database (`ticket_signing_keys`) or given as a file, read again every
//! [`KEYS_READ_FOR`], and the signer over them.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use super::{
    codes::{SignerCodes, TicketKey, TicketSigner, records},
    db::DbTicketKeys,
};
use crate::{
    kernel::StoreError,
    ticket::{
        domain::{PublicKey, SignedCode, TicketClaims, key_choice},
        ports::TicketCodes,
    },
};

/// How long a process signs with the keys it read before reading them
/// again: a key rotated in by `boxoffice ticket-keys rotate` signs
/// everywhere, and is published everywhere, within this time.
const KEYS_READ_FOR: Duration = Duration::from_secs(30);

/// The signing keys kept in the database (`ticket_signing_keys`), or the
/// key of `--ticket-signing-key-file`, which then signs while the stored
/// ones still verify.
#[derive(Clone)]
pub struct DbTicketCodes {
    keys: DbTicketKeys,
    file_key: Option<TicketKey>,
    read: Arc<RwLock<Option<(Instant, SignerCodes)>>>,
}

impl DbTicketCodes {
    pub fn new(keys: DbTicketKeys, file_key: Option<TicketKey>) -> Self {
        Self {
            keys,
            file_key,
            read: Arc::default(),
        }
    }

    /// At start (before any ticket is issued): without a key file, a
    /// process that finds no usable key stores a fresh one as the next
    /// generation after what it saw; processes starting together insert
    /// the same generation, so one wins and all sign with it.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let stored = self.keys.stored().await?;
        if self.file_key.is_none() && key_choice(&records(&stored)).is_none() {
            let seen = stored.iter().map(|(record, _)| record.generation).max();
            self.keys
                .insert_at(seen.unwrap_or(0) + 1, &TicketKey::generate())
                .await?;
        }
        self.codes().await?;
        Ok(())
    }

    /// The signer of the usable stored keys, or of the key file and those;
    /// `None` when neither has a key.
    async fn load(&self) -> Result<Option<SignerCodes>, StoreError> {
        let stored = self.keys.stored().await?;
        let order = key_choice(&records(&stored)).unwrap_or_default();
        let mut keys = Vec::with_capacity(order.len() + 1);
        keys.extend(self.file_key.clone());
        for generation in order {
            if let Some((_, pem)) = stored.iter().find(|(r, _)| r.generation == generation) {
                let key = TicketKey::from_pem(pem).map_err(|err| {
                    StoreError::Unexpected(anyhow::anyhow!("ticket key {generation}: {err}"))
                })?;
                keys.push(key);
            }
        }
        let mut keys = keys.into_iter();
        Ok(keys.next().map(|current| {
            SignerCodes::new(TicketSigner::new(
                current,
                keys.map(|key| key.public().clone()).collect(),
            ))
        }))
    }

    async fn codes(&self) -> Result<SignerCodes, StoreError> {
        if let Ok(read) = self.read.read()
            && let Some((at, codes)) = read.as_ref()
            && at.elapsed() < KEYS_READ_FOR
        {
            return Ok(codes.clone());
        }
        let codes = self.load().await?.ok_or_else(|| {
            StoreError::Unavailable(anyhow::anyhow!(
                "no ticket signing key is stored yet (one is made at start)"
            ))
        })?;
        if let Ok(mut read) = self.read.write() {
            *read = Some((Instant::now(), codes.clone()));
        }
        Ok(codes)
    }
}

impl TicketCodes for DbTicketCodes {
    async fn sign(&self, claims: &TicketClaims) -> Result<SignedCode, StoreError> {
        self.codes().await?.sign(claims).await
    }

    async fn public_keys(&self) -> Result<Vec<PublicKey>, StoreError> {
        self.codes().await?.public_keys().await
    }

    async fn verify(&self, code: &str) -> Result<Option<TicketClaims>, StoreError> {
        self.codes().await?.verify(code).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::infra::codes::tests::claims;

    async fn codes_over(
        db: &sea_orm::DatabaseConnection,
        file_key: Option<TicketKey>,
    ) -> DbTicketCodes {
        let codes = DbTicketCodes::new(DbTicketKeys::new(db.clone()), file_key);
        codes.prepare().await.unwrap();
        codes
    }

    async fn kids(codes: &DbTicketCodes) -> Vec<String> {
        let keys = codes.public_keys().await.unwrap();
        keys.into_iter().map(|key| key.kid).collect()
    }

    #[tokio::test]
    async fn processes_starting_together_keep_one_key_and_a_rotation_keeps_old_codes_valid() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();

        let starting = futures::future::join_all((0..4).map(|_| codes_over(&db, None))).await;
        let first = kids(&starting[0]).await;
        assert_eq!(first.len(), 1);
        for codes in &starting {
            assert_eq!(kids(codes).await, first, "one key for every process");
        }
        let before = starting[0].sign(&claims()).await.unwrap();
        assert_eq!(before.kid, first[0]);

        // `boxoffice ticket-keys rotate`, then a process that reads the keys.
        let next = TicketKey::generate();
        assert!(
            DbTicketKeys::new(db.clone())
                .insert_next(&next)
                .await
                .unwrap()
        );
        let after = codes_over(&db, None).await;
        assert_eq!(
            kids(&after).await,
            vec![next.public().kid().to_owned(), first[0].clone()]
        );
        let signed = after.sign(&claims()).await.unwrap();
        assert_eq!(signed.kid, next.public().kid());
        let signer = after.codes().await.unwrap();
        assert_eq!(
            signer.signer().read(&before.code),
            Ok(claims()),
            "old codes verify"
        );

        // A key file signs; the stored keys still verify.
        let file = TicketKey::from_seed([3; 32]);
        let with_file = codes_over(&db, Some(file.clone())).await;
        assert_eq!(kids(&with_file).await[0], file.public().kid());
        assert_eq!(kids(&with_file).await.len(), 3);
        assert_eq!(
            with_file.sign(&claims()).await.unwrap().kid,
            file.public().kid()
        );
    }
}
