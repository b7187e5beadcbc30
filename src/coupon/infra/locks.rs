//! The classic ways to serve first come, first served, for the bench only
//! (the `bench-strategies` feature; a release never has this module). Each
//! is a [`CouponIssuer`] in the ledger's place: it takes its lock, reads the
//! campaign's issued count and whether the user holds one, lets
//! [`first_come`](crate::coupon::domain::first_come) decide, and writes a
//! winner exactly as the ledger's path does (the [`WinnerRecorder`] the
//! composition root hands it: the row, its campaign's count,
//! `CouponIssued`, the key's answer, in one transaction). The bench serves each through the
//! production route (`--coupon-lock-strategy`) so that comparing them with
//! the ledger compares the strategies alone, with or without the sold-out
//! memory (`--coupon-sold-out-memory`).
//!
//! - pessimistic: `SELECT … FOR UPDATE` on the campaign's row, held until
//!   the winner's transaction commits;
//! - optimistic: the campaign's issued count is its version: read it
//!   without a lock, then claim it in the write's transaction with
//!   `UPDATE … WHERE issued_count = <read>`; a lost race rolls back and
//!   retries after a short jittered sleep;
//! - Redis spin lock: `SET NX PX` with a random token, tried again every
//!   millisecond; compare-and-delete releases it;
//! - Redis pub/sub lock (Redisson's `RLock`): a waiter that finds the lock
//!   taken waits for the holder's release message on the lock's channel
//!   (or for the lease to run out) instead of spinning; the release deletes
//!   the key and publishes in one script.
//!
//! The Redis locks ([`outside`]) have a lease and no watchdog renewing it
//! (Redisson's has one): a holder slower than the lease loses the lock.
//! The unique indexes on `user_coupons` still refuse a second row for a
//! number or a user, so that would be an error answer, never an over-issue.
//! A lock is let go on every path: after the winner's work, when taking it
//! failed (the `SET` may have landed before its answer was lost), and when
//! the request is dropped while holding it (a client that hung up).

mod outside;

use std::{collections::HashSet, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

use self::outside::{Guarded, PubSubLock, SpinLock};
use super::db::DbCoupons;
use crate::{
    coupon::{
        domain::{Campaign, CouponError, LedgerStep, RecordError, first_come},
        ports::{CouponIssuer, CouponRepository, IssueOutcome, IssueRequest, WinnerRecorder},
    },
    db::{DbTx, DbUnitOfWork},
    kernel::{Transaction, UnitOfWork, UserId},
    redis_client::Conn,
};

/// How coupon issues are decided (`--coupon-lock-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockStrategy {
    /// The production path: the Redis (or in-process) ledger.
    Ledger,
    /// `SELECT … FOR UPDATE` on the campaign's row.
    Pessimistic,
    /// The issued count as a version, claimed on write; retried on a lost race.
    Optimistic,
    /// A Redis `SET NX PX` lock, tried again every millisecond.
    SpinLock,
    /// A Redis lock whose waiters sleep until the holder publishes its release.
    PubSubLock,
}

/// Optimistic attempts per request before it fails (`Unavailable`).
const MAX_ATTEMPTS: u32 = 1_000;

/// The issuer of `strategy`, or `None` for the ledger's. `redis` is the
/// server's connection and `redis_url` its standalone URL (the pub/sub
/// lock subscribes through a connection of its own).
pub fn issuer(
    strategy: LockStrategy,
    recorder: Arc<dyn WinnerRecorder<DbTx>>,
    uow: &DbUnitOfWork,
    db: &DatabaseConnection,
    redis: Option<&Conn>,
    redis_url: Option<&str>,
    prefix: &str,
) -> anyhow::Result<Option<Arc<dyn CouponIssuer>>> {
    let store = || {
        anyhow::ensure!(
            db.get_database_backend() == DatabaseBackend::Postgres,
            "--coupon-lock-strategy {strategy:?} needs PostgreSQL"
        );
        Ok(Store {
            uow: uow.clone(),
            db: db.clone(),
            recorder: recorder.clone(),
        })
    };
    let redis = || {
        redis
            .cloned()
            .with_context(|| format!("--coupon-lock-strategy {strategy:?} needs Redis"))
    };
    let prefix = format!("{prefix}:bench-lock");
    let rows = || DbCoupons::new(db.clone());
    let issuer = match strategy {
        LockStrategy::Ledger => return Ok(None),
        LockStrategy::Pessimistic => Locked::issuer(Pessimistic(store()?), rows()),
        LockStrategy::Optimistic => Locked::issuer(Optimistic(store()?), rows()),
        LockStrategy::SpinLock => Locked::issuer(
            Guarded {
                store: store()?,
                lock: SpinLock { redis: redis()? },
                prefix,
            },
            rows(),
        ),
        LockStrategy::PubSubLock => {
            let url = redis_url.context(
                "--coupon-lock-strategy pub-sub-lock needs a standalone Redis (--redis-url)",
            )?;
            Locked::issuer(
                Guarded {
                    store: store()?,
                    lock: PubSubLock::start(redis()?, url, &prefix)?,
                    prefix,
                },
                rows(),
            )
        }
    };
    Ok(Some(issuer))
}

/// `issuer` with the sold-out memory off: it never says who holds a
/// sold-out campaign, so every request of the rush reaches it.
pub fn without_sold_out_memory(issuer: Arc<dyn CouponIssuer>) -> Arc<dyn CouponIssuer> {
    Arc::new(Unremembered(issuer))
}

struct Unremembered(Arc<dyn CouponIssuer>);

impl CouponIssuer for Unremembered {
    fn issue<'a>(
        &'a self,
        request: IssueRequest<'a>,
    ) -> BoxFuture<'a, Result<IssueOutcome, CouponError>> {
        self.0.issue(request)
    }

    fn sold_out_holders<'a>(
        &'a self,
        _: &'a Campaign,
    ) -> BoxFuture<'a, Result<Option<HashSet<UserId>>, CouponError>> {
        async { Ok(None) }.boxed()
    }
}

/// One classic strategy: take a lock, read the campaign's count and the
/// user's holding, decide with `first_come`, write the winner, let go. A
/// write refused or failed is the error ([`IssueOutcome::NotWritten`]).
trait LockedIssuer: Send + Sync + 'static {
    fn issue(
        &self,
        request: IssueRequest<'_>,
    ) -> impl Future<Output = Result<IssueOutcome, RecordError>> + Send;
}

/// A lock strategy behind the issuer port.
struct Locked<S> {
    strategy: S,
    /// A lock strategy keeps no ledger: the holders of a sold-out campaign
    /// are its rows.
    rows: DbCoupons,
}

impl<S: LockedIssuer> Locked<S> {
    fn issuer(strategy: S, rows: DbCoupons) -> Arc<dyn CouponIssuer> {
        Arc::new(Self { strategy, rows })
    }
}

impl<S: LockedIssuer> CouponIssuer for Locked<S> {
    fn issue<'a>(
        &'a self,
        request: IssueRequest<'a>,
    ) -> BoxFuture<'a, Result<IssueOutcome, CouponError>> {
        self.strategy
            .issue(request)
            .map(|answer| Ok(answer.unwrap_or_else(IssueOutcome::NotWritten)))
            .boxed()
    }

    fn sold_out_holders<'a>(
        &'a self,
        campaign: &'a Campaign,
    ) -> BoxFuture<'a, Result<Option<HashSet<UserId>>, CouponError>> {
        async move { Ok(campaign.holders_if_sold_out(self.rows.holders(campaign.id).await?)) }
            .boxed()
    }
}

fn failed(err: impl Into<anyhow::Error>) -> RecordError {
    RecordError::Failed(err.into())
}

/// The database side every strategy shares.
#[derive(Clone)]
struct Store {
    uow: DbUnitOfWork,
    db: DatabaseConnection,
    recorder: Arc<dyn WinnerRecorder<DbTx>>,
}

impl Store {
    /// The campaign's issued count and whether `user` holds one, read
    /// through `conn`. With `for_update` the campaign's row is locked first
    /// (until `conn`'s transaction ends) and then read in a statement of
    /// its own: a statement that waited for the lock still sees the rows
    /// of its own start, not the winner that just committed.
    async fn read<C: ConnectionTrait>(
        conn: &C,
        request: &IssueRequest<'_>,
        for_update: bool,
    ) -> Result<(u32, bool), RecordError> {
        let campaign = request.campaign;
        if for_update {
            conn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT 1 FROM coupons WHERE id = $1 FOR UPDATE",
                [campaign.id.value().into()],
            ))
            .await
            .map_err(failed)?;
        }
        let sql = "SELECT c.issued_count, EXISTS (SELECT 1 FROM user_coupons u \
               WHERE u.coupon_id = c.id AND u.user_id = $2) \
             FROM coupons c WHERE c.id = $1";
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                sql,
                [campaign.id.value().into(), request.user.value().into()],
            ))
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(anyhow!("campaign {} has no row", campaign.id)))?;
        let issued: i64 = row.try_get_by_index(0).map_err(failed)?;
        let held: bool = row.try_get_by_index(1).map_err(failed)?;
        Ok((u32::try_from(issued).map_err(failed)?, held))
    }

    /// The winner's writes, as the ledger's path makes them, committed
    /// with whatever `tx` holds.
    async fn commit_winner(
        &self,
        mut tx: DbTx,
        request: &IssueRequest<'_>,
        number: u32,
    ) -> Result<IssueOutcome, RecordError> {
        let key = request.key.cloned();
        let winner = request.winner(number);
        let row = self
            .recorder
            .record(&mut tx, winner, key, request.now)
            .await?;
        tx.commit().await.map_err(failed)?;
        Ok(IssueOutcome::Won(row))
    }

    /// Reads, decides and writes, for a caller that holds the campaign's
    /// lock outside the database.
    async fn issue_locked(&self, request: &IssueRequest<'_>) -> Result<IssueOutcome, RecordError> {
        let (issued, held) = Self::read(&self.db, request, false).await?;
        match first_come(held, issued, request.campaign.quantity) {
            LedgerStep::Issued(number) => {
                let tx = self.uow.begin().await.map_err(failed)?;
                self.commit_winner(tx, request, number).await
            }
            step => Ok(IssueOutcome::refused(step)),
        }
    }
}

struct Pessimistic(Store);

impl LockedIssuer for Pessimistic {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<IssueOutcome, RecordError> {
        let tx = self.0.uow.begin().await.map_err(failed)?;
        let (issued, held) = Store::read(tx.conn(), &request, true).await?;
        match first_come(held, issued, request.campaign.quantity) {
            LedgerStep::Issued(number) => self.0.commit_winner(tx, &request, number).await,
            step => {
                // Frees the row for the next waiter now.
                tx.rollback().await.map_err(failed)?;
                Ok(IssueOutcome::refused(step))
            }
        }
    }
}

struct Optimistic(Store);

impl LockedIssuer for Optimistic {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<IssueOutcome, RecordError> {
        let campaign = request.campaign;
        for attempt in 0..MAX_ATTEMPTS {
            let (issued, held) = Store::read(&self.0.db, &request, false).await?;
            let number = match first_come(held, issued, campaign.quantity) {
                LedgerStep::Issued(number) => number,
                step => return Ok(IssueOutcome::refused(step)),
            };
            let tx = self.0.uow.begin().await.map_err(failed)?;
            // The version check: the count is still what was read (a
            // racing writer's commit makes this match nothing).
            let claimed = tx
                .conn()
                .execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "UPDATE coupons SET issued_count = issued_count \
                     WHERE id = $1 AND issued_count = $2",
                    [campaign.id.value().into(), i64::from(issued).into()],
                ))
                .await
                .map_err(failed)?
                .rows_affected()
                == 1;
            if claimed {
                return self.0.commit_winner(tx, &request, number).await;
            }
            tx.rollback().await.map_err(failed)?;
            metrics::counter!("coupon_bench_lock_retries_total", "strategy" => "optimistic")
                .increment(1);
            let step = 1 + u64::from(attempt.min(7));
            let micros = 100 + rand::random_range(0..250 * step);
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        Err(failed(anyhow!(
            "optimistic issue gave up after {MAX_ATTEMPTS} lost races"
        )))
    }
}
