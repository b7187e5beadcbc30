//! The winners' writer: the one task that takes the winners from their
//! queue and writes them, a batch per transaction.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use futures::{FutureExt, future::BoxFuture};

use crate::{
    coupon::{
        domain::{IssuedCoupon, RecordError, Winner},
        ports::{IssueTx, WinnerBatches, WinnerRecorder},
    },
    kernel::{
        StoreError, Transaction, UnitOfWork,
        idempotency::{IdempotencyTx, RequestKey},
    },
    outbox::ports::OutboxWriter,
};

/// Most winners written in one transaction.
const MAX_WINNERS_PER_BATCH: usize = 256;

/// Writes winners in batches until their queue is gone: whoever won while
/// the previous batch was committing goes into the next transaction
/// ([`record_winners`]: one multi-row insert, the events, the keys, one
/// commit), so a rush pays a commit per batch instead of per winner, and a
/// lone winner waits for nobody. A batch the database refuses is written
/// again one winner at a time, so that every winner hears its own answer (a
/// duplicate stays `DuplicateUser` / `DuplicateNumber`, a reused key
/// `KeyReused`).
pub(super) async fn write_winners<U>(uow: U, mut batches: impl WinnerBatches)
where
    U: UnitOfWork<Tx: IssueTx + OutboxWriter + IdempotencyTx>,
{
    loop {
        let mut batch = batches.next_batch(MAX_WINNERS_PER_BATCH).await;
        let Some(now) = batch.iter().map(|waiting| waiting.at).max() else {
            return;
        };
        let winners: Vec<_> = batch
            .iter()
            .map(|waiting| (waiting.winner.clone(), waiting.key.clone()))
            .collect();
        match write_batch(&uow, &winners, now).await {
            Ok(written) => {
                for waiting in batch {
                    let mine = written.iter().find(|row| {
                        row.coupon == waiting.winner.coupon && row.user == waiting.winner.user
                    });
                    let answer = mine.cloned().ok_or_else(|| {
                        RecordError::Failed(anyhow!("the batch insert did not return this winner"))
                    });
                    let _ = waiting.reply.send(answer);
                }
            }
            Err(_) if batch.len() > 1 => {
                for waiting in batch {
                    let written = write_batch(&uow, &[(waiting.winner, waiting.key)], waiting.at)
                        .await
                        .and_then(the_winner);
                    let _ = waiting.reply.send(written);
                }
            }
            // A batch of one: its own error.
            Err(err) => {
                if let Some(waiting) = batch.pop() {
                    let _ = waiting.reply.send(Err(err));
                }
            }
        }
    }
}

/// One transaction of the unit of work around [`record_winners`].
async fn write_batch<U>(
    uow: &U,
    winners: &[(Winner, Option<RequestKey>)],
    now: DateTime<Utc>,
) -> Result<Vec<IssuedCoupon>, RecordError>
where
    U: UnitOfWork<Tx: IssueTx + OutboxWriter + IdempotencyTx>,
{
    let failed = |err: StoreError| RecordError::Failed(err.into());
    let mut tx = uow.begin().await.map_err(failed)?;
    let written = record_winners(&mut tx, winners, now).await?;
    tx.commit().await.map_err(failed)?;
    Ok(written)
}

/// [`record_winners`] for one winner in the caller's transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordWinner;

impl<T: IssueTx + OutboxWriter + IdempotencyTx> WinnerRecorder<T> for RecordWinner {
    fn record<'a>(
        &'a self,
        tx: &'a mut T,
        winner: Winner,
        key: Option<RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IssuedCoupon, RecordError>> {
        async move { the_winner(record_winners(tx, &[(winner, key)], now).await?) }.boxed()
    }
}

/// The row of a write of one winner.
fn the_winner(mut written: Vec<IssuedCoupon>) -> Result<IssuedCoupon, RecordError> {
    written
        .pop()
        .ok_or_else(|| RecordError::Failed(anyhow!("the insert did not return the winner")))
}

/// Writes winners in the caller's transaction: their rows, their
/// `CouponIssued` events and, for those who sent one, their key with their
/// answer. A key another request holds fails the lot with `KeyReused` (the
/// caller writes the others again without that one), as a unique index
/// refusing a row fails it with `DuplicateUser` / `DuplicateNumber`.
pub(super) async fn record_winners<T: IssueTx + OutboxWriter + IdempotencyTx>(
    tx: &mut T,
    winners: &[(Winner, Option<RequestKey>)],
    now: DateTime<Utc>,
) -> Result<Vec<IssuedCoupon>, RecordError> {
    let failed = |err: StoreError| RecordError::Failed(err.into());
    let rows: Vec<Winner> = winners.iter().map(|(w, _)| w.clone()).collect();
    let written = tx.insert_winners(&rows, now).await?;
    tx.append(written.iter().map(IssuedCoupon::issued).collect(), now)
        .await
        .map_err(failed)?;
    for (winner, key) in winners {
        let Some(key) = key else { continue };
        let row = written
            .iter()
            .find(|row| row.coupon == winner.coupon && row.user == winner.user)
            .ok_or_else(|| RecordError::Failed(anyhow::anyhow!("a winner was not written")))?;
        let answer =
            serde_json::to_string(&row.answer()).map_err(|err| RecordError::Failed(err.into()))?;
        if !tx.remember(key, answer, now).await.map_err(failed)? {
            return Err(RecordError::KeyReused);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::super::fake::{key, t0};
    use super::*;
    use crate::{
        coupon::{
            domain::Issued,
            infra::winner_queue::winner_queue,
            ports::{QueuedWinner, WinnerQueue},
        },
        kernel::{CouponId, UserId, events::types, idempotency},
        testing::MemoryUow,
    };

    fn winner(user: i64, number: u32) -> (Winner, Option<RequestKey>) {
        let winner = Winner {
            coupon: CouponId(1),
            user: UserId(user),
            number,
        };
        (winner, None)
    }

    #[tokio::test]
    async fn winners_are_written_with_their_events_and_keys_in_one_transaction() {
        let uow = MemoryUow::default();
        let mut tx = uow.begin().await.unwrap();
        let (first, _) = winner(1, 1);
        let batch = vec![(first, Some(key(1, 1, "k"))), winner(2, 2)];
        let written = record_winners(&mut tx, &batch, t0()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(written.len(), 2);
        let world = uow.world();
        assert_eq!(world.won, written);
        assert_eq!(world.event_types(), vec![types::COUPON_ISSUED; 2]);
        assert_eq!(
            world.outbox[0].payload["userCouponId"],
            written[0].id.value()
        );
        let stored = &world.keys[&(UserId(1), "coupon.issue", "k".to_owned())];
        assert_eq!(
            stored
                .1
                .as_deref()
                .map(idempotency::decode::<Issued>)
                .map(Result::unwrap),
            Some(written[0].answer()),
            "the key answers what the winner heard"
        );
    }

    #[tokio::test]
    async fn a_batch_with_a_taken_key_or_a_duplicate_is_refused_whole() {
        let uow = MemoryUow::default();
        let mut tx = uow.begin().await.unwrap();
        let (w, _) = winner(1, 1);
        record_winners(&mut tx, &[(w, Some(key(1, 1, "k")))], t0())
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = uow.begin().await.unwrap();
        let (other, _) = winner(2, 2);
        let reused = vec![
            winner(3, 3),
            (
                other,
                Some(RequestKey::new(UserId(1), "coupon.issue", "k", &2).unwrap()),
            ),
        ];
        assert!(matches!(
            record_winners(&mut tx, &reused, t0()).await,
            Err(RecordError::KeyReused)
        ));
        drop(tx);
        let mut tx = uow.begin().await.unwrap();
        assert!(matches!(
            record_winners(&mut tx, &[winner(1, 5)], t0()).await,
            Err(RecordError::DuplicateUser)
        ));
        assert!(matches!(
            record_winners(&mut tx, &[winner(6, 1)], t0()).await,
            Err(RecordError::DuplicateNumber)
        ));
        drop(tx);
        assert_eq!(uow.world().won.len(), 1, "nothing of the refused batches");
        assert_eq!(uow.world().outbox.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_batch_is_written_again_one_winner_at_a_time() {
        let uow = MemoryUow::default();
        let (queue, batches) = winner_queue();
        // Queued before the writer starts: one batch, with a duplicate.
        let answers: Vec<_> = [winner(1, 1), winner(2, 2), winner(1, 3)]
            .into_iter()
            .map(|(winner, key)| {
                let (reply, answer) = oneshot::channel();
                let queued = QueuedWinner {
                    winner,
                    key,
                    at: t0(),
                    reply,
                };
                assert!(queue.push(queued).is_ok());
                answer
            })
            .collect();
        drop(queue);
        write_winners(uow.clone(), batches).await;
        let mut heard = Vec::new();
        for answer in answers {
            heard.push(answer.await.unwrap());
        }
        assert_eq!(heard[0].as_ref().unwrap().number, 1);
        assert_eq!(heard[1].as_ref().unwrap().number, 2);
        assert!(matches!(heard[2], Err(RecordError::DuplicateUser)));
        assert_eq!(uow.world().won.len(), 2);
        assert_eq!(
            uow.commits(),
            2,
            "each winner of the refused batch in a transaction of its own"
        );
    }
}
