//! Lock strategies side by side: the same coupon issue operation (one per
//! user, never more than the quantity) done four ways, directly against the
//! real stores — no HTTP, so the comparison is of the locking strategy
//! alone. Each strategy gets a fresh database and campaign, the same
//! concurrency and the same request mix, and every winner does the same
//! write: its `user_coupons` row and a `CouponIssued` outbox event in one
//! transaction.
//!
//! - pessimistic: `SELECT … FOR UPDATE` on the campaign row, count and check
//!   under the lock, insert, commit;
//! - optimistic: read a version counter (a bench-only side table), check,
//!   then bump the version only if unchanged and insert in one transaction;
//!   a lost race rolls back and retries (bounded, tiny jittered backoff);
//! - Redis spin lock: `SET NX PX` with a random token, spinning with a short
//!   sleep, check and insert in the database, compare-and-delete release;
//! - Lua ledger: the production path, `RedisCouponLedger::issue` answers
//!   alone and only winners write, through `DbCoupons::record_issue`.

use std::{
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::{
    coupon::{
        domain::{Campaign, CampaignDraft, LedgerStep},
        infra::{db::DbCoupons, redis::RedisCouponLedger},
        ports::{CouponLedger, CouponRepository},
    },
    kernel::{
        UserId,
        events::{CouponIssued, NewEvent, types},
    },
    outbox::infra::db::append_events,
};
use chrono::{TimeDelta, Utc};
use indicatif::ProgressBar;
use redis::{Script, aio::ConnectionManager};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, SqlErr, Statement,
    TransactionTrait, Value,
};

use crate::{
    coupons::{RowCounts, user_of},
    http::CONCURRENCY,
    load,
    report::{Report, ScenarioResult},
    stores::Stores,
};

/// Optimistic attempts per request before it counts as an error.
const MAX_ATTEMPTS: u32 = 1_000;
/// A spin-lock waiter gives up (an error) after this long.
const SPIN_DEADLINE: Duration = Duration::from_secs(10);
/// The spin lock's sleep between tries.
const SPIN_SLEEP: Duration = Duration::from_millis(1);
/// The spin lock's lease: a crashed holder frees it after this long.
const LOCK_LEASE_MS: u64 = 5_000;

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Pessimistic,
    Optimistic,
    SpinLock,
    LuaLedger,
}

impl Strategy {
    const ALL: [Strategy; 4] = [
        Strategy::Pessimistic,
        Strategy::Optimistic,
        Strategy::SpinLock,
        Strategy::LuaLedger,
    ];

    fn title(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "lock strategy: pessimistic (SELECT … FOR UPDATE)",
            Strategy::Optimistic => "lock strategy: optimistic (version + retry)",
            Strategy::SpinLock => "lock strategy: Redis spin lock (SET NX PX)",
            Strategy::LuaLedger => "lock strategy: Lua ledger (production path)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "Pessimistic",
            Strategy::Optimistic => "Optimistic",
            Strategy::SpinLock => "SpinLock",
            Strategy::LuaLedger => "LuaLedger",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Issued,
    AlreadyIssued,
    SoldOut,
}

/// One strategy's run: its stores, campaign and counters.
struct Run {
    strategy: Strategy,
    db: DatabaseConnection,
    redis: ConnectionManager,
    repo: DbCoupons,
    ledger: RedisCouponLedger,
    campaign: Campaign,
    lock_key: String,
    issued: AtomicU64,
    already_issued: AtomicU64,
    sold_out: AtomicU64,
    /// Optimistic: attempts that lost the race; spin lock: failed tries.
    retries: AtomicU64,
    first_error: Mutex<Option<String>>,
}

fn pg(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// A winner's write, the same for every strategy but the Lua ledger (which
/// uses the production repository, doing the same): the row and its event.
async fn insert_winner<C: ConnectionTrait>(
    txn: &C,
    coupon: i64,
    user: i64,
    number: i64,
) -> Result<(), DbErr> {
    let now = Utc::now();
    let row = txn
        .query_one_raw(pg(
            "INSERT INTO user_coupons (coupon_id, user_id, issue_number, status, version, issued_at) \
             VALUES ($1, $2, $3, 'issued', 0, $4) RETURNING id",
            [coupon.into(), user.into(), number.into(), now.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted)?;
    let id: i64 = row.try_get_by_index(0)?;
    let event = NewEvent::new(
        types::COUPON_ISSUED,
        "coupon",
        coupon,
        &CouponIssued {
            coupon_id: coupon,
            user_coupon_id: id,
            user_id: user,
            issue_number: number,
        },
    );
    append_events(txn, vec![event], now).await
}

/// A cheap deterministic jitter (splitmix64).
fn jitter(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Run {
    fn coupon(&self) -> i64 {
        self.campaign.id.value()
    }

    fn quantity(&self) -> i64 {
        i64::from(self.campaign.quantity)
    }

    async fn issue(&self, i: u64) -> anyhow::Result<Outcome> {
        let user = user_of(i);
        match self.strategy {
            Strategy::Pessimistic => self.pessimistic(user).await,
            Strategy::Optimistic => self.optimistic(user, i).await,
            Strategy::SpinLock => self.spin_lock(user).await,
            Strategy::LuaLedger => self.lua_ledger(user).await,
        }
    }

    async fn pessimistic(&self, user: i64) -> anyhow::Result<Outcome> {
        let coupon = self.coupon();
        let txn = self.db.begin().await?;
        let quantity: i64 = txn
            .query_one_raw(pg(
                "SELECT quantity FROM coupons WHERE id = $1 FOR UPDATE",
                [coupon.into()],
            ))
            .await?
            .context("no such coupon")?
            .try_get_by_index(0)?;
        let row = txn
            .query_one_raw(pg(
                "SELECT COUNT(*), COALESCE(BOOL_OR(user_id = $2), false) \
                 FROM user_coupons WHERE coupon_id = $1",
                [coupon.into(), user.into()],
            ))
            .await?
            .context("counting")?;
        let (count, held): (i64, bool) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        if held {
            txn.rollback().await?;
            return Ok(Outcome::AlreadyIssued);
        }
        if count >= quantity {
            txn.rollback().await?;
            return Ok(Outcome::SoldOut);
        }
        insert_winner(&txn, coupon, user, count + 1).await?;
        txn.commit().await?;
        Ok(Outcome::Issued)
    }

    async fn optimistic(&self, user: i64, i: u64) -> anyhow::Result<Outcome> {
        let coupon = self.coupon();
        for attempt in 0..MAX_ATTEMPTS {
            let row = self
                .db
                .query_one_raw(pg(
                    "SELECT v.version, v.issued, EXISTS (SELECT 1 FROM user_coupons \
                       WHERE coupon_id = $1 AND user_id = $2) \
                     FROM bench_coupon_versions v WHERE v.coupon_id = $1",
                    [coupon.into(), user.into()],
                ))
                .await?
                .context("no version row")?;
            let (version, issued, held): (i64, i64, bool) = (
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
            );
            if held {
                return Ok(Outcome::AlreadyIssued);
            }
            if issued >= self.quantity() {
                return Ok(Outcome::SoldOut);
            }
            let txn = self.db.begin().await?;
            let bumped = txn
                .execute_raw(pg(
                    "UPDATE bench_coupon_versions SET version = version + 1, issued = issued + 1 \
                     WHERE coupon_id = $1 AND version = $2",
                    [coupon.into(), version.into()],
                ))
                .await?
                .rows_affected();
            if bumped == 1 {
                match insert_winner(&txn, coupon, user, issued + 1).await {
                    Ok(()) => {
                        txn.commit().await?;
                        return Ok(Outcome::Issued);
                    }
                    // Cannot happen while the version check holds; retried
                    // rather than trusted.
                    Err(err) if is_unique_violation(&err) => txn.rollback().await?,
                    Err(err) => return Err(err.into()),
                }
            } else {
                txn.rollback().await?;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            let step = 1 + u64::from(attempt.min(7));
            let micros = 100 + jitter(i, u64::from(attempt)) % (250 * step);
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        anyhow::bail!("optimistic issue gave up after {MAX_ATTEMPTS} attempts")
    }

    async fn spin_lock(&self, user: i64) -> anyhow::Result<Outcome> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut redis = self.redis.clone();
        let deadline = Instant::now() + SPIN_DEADLINE;
        loop {
            let acquired: Option<String> = redis::cmd("SET")
                .arg(&self.lock_key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_LEASE_MS)
                .query_async(&mut redis)
                .await?;
            if acquired.is_some() {
                break;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            anyhow::ensure!(
                Instant::now() < deadline,
                "spin lock not acquired within {SPIN_DEADLINE:?}"
            );
            tokio::time::sleep(SPIN_SLEEP).await;
        }
        let outcome = self.locked_issue(user).await;
        let released: i64 = RELEASE
            .key(&self.lock_key)
            .arg(&token)
            .invoke_async(&mut redis)
            .await?;
        anyhow::ensure!(released == 1, "the spin lock's lease ran out while held");
        outcome
    }

    /// The database part of the spin-lock strategy, run under the lock.
    async fn locked_issue(&self, user: i64) -> anyhow::Result<Outcome> {
        let coupon = self.coupon();
        let row = self
            .db
            .query_one_raw(pg(
                "SELECT COUNT(*), COALESCE(BOOL_OR(user_id = $2), false) \
                 FROM user_coupons WHERE coupon_id = $1",
                [coupon.into(), user.into()],
            ))
            .await?
            .context("counting")?;
        let (count, held): (i64, bool) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        if held {
            return Ok(Outcome::AlreadyIssued);
        }
        if count >= self.quantity() {
            return Ok(Outcome::SoldOut);
        }
        let txn = self.db.begin().await?;
        insert_winner(&txn, coupon, user, count + 1).await?;
        txn.commit().await?;
        Ok(Outcome::Issued)
    }

    async fn lua_ledger(&self, user: i64) -> anyhow::Result<Outcome> {
        let (coupon, user) = (self.campaign.id, UserId(user));
        match self.ledger.issue(coupon, user, Utc::now()).await? {
            LedgerStep::Issued(number) => {
                match self
                    .repo
                    .record_issue(&self.campaign, user, number, None, Utc::now())
                    .await
                {
                    Ok(_) => Ok(Outcome::Issued),
                    Err(err) => {
                        self.ledger.revoke(coupon, user, number, true).await?;
                        Err(err.into())
                    }
                }
            }
            LedgerStep::AlreadyIssued => Ok(Outcome::AlreadyIssued),
            LedgerStep::SoldOut => Ok(Outcome::SoldOut),
            LedgerStep::Missing | LedgerStep::Stale => {
                anyhow::bail!("the ledger of {coupon} is missing")
            }
        }
    }
}

/// Prepares a fresh database, campaign and (per strategy) lock state.
async fn prepare(stores: &Stores, strategy: Strategy, quantity: u64) -> anyhow::Result<Run> {
    let (_, db) = stores.fresh_database().await?;
    let (_, redis) = stores.redis().await?;
    let prefix = format!("bo:bench:{}", uuid::Uuid::new_v4().simple());
    let repo = DbCoupons::new(db.clone());
    let ledger = RedisCouponLedger::new(redis.clone(), &prefix);
    let now = Utc::now();
    // The bench acts as an admin of its own (recorded on the events).
    let admin = UserId(9_000);
    let vendor = repo.create_vendor("Lock Vendor".into(), admin, now).await?;
    let draft = CampaignDraft::parse(
        strategy.title(),
        500,
        quantity as i64,
        now - TimeDelta::hours(1),
        now + TimeDelta::days(1),
        vendor.id.value(),
    )?;
    let campaign = repo.create_campaign(draft, admin, now).await?;
    let coupon = campaign.id.value();
    match strategy {
        Strategy::Optimistic => {
            db.execute_unprepared(
                "CREATE TABLE bench_coupon_versions (coupon_id BIGINT PRIMARY KEY, \
                 version BIGINT NOT NULL, issued BIGINT NOT NULL)",
            )
            .await?;
            db.execute_raw(pg(
                "INSERT INTO bench_coupon_versions (coupon_id, version, issued) VALUES ($1, 0, 0)",
                [coupon.into()],
            ))
            .await?;
        }
        Strategy::LuaLedger => {
            anyhow::ensure!(
                ledger.load(campaign.id, campaign.quantity, &[]).await?,
                "the ledger was already loaded"
            );
        }
        Strategy::Pessimistic | Strategy::SpinLock => {}
    }
    // Open the pool's connections (and Redis's) before measuring, so no
    // strategy pays for connection set-up.
    let warm = futures::future::join_all(
        (0..CONCURRENCY).map(|_| db.execute_unprepared("SELECT pg_sleep(0.01)")),
    )
    .await;
    anyhow::ensure!(warm.iter().all(Result::is_ok), "warming up the pool failed");
    redis::cmd("PING")
        .query_async::<String>(&mut redis.clone())
        .await?;
    Ok(Run {
        strategy,
        db,
        redis,
        repo,
        ledger,
        lock_key: format!("{prefix}:lock:coupon:{coupon}"),
        campaign,
        issued: AtomicU64::new(0),
        already_issued: AtomicU64::new(0),
        sold_out: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        first_error: Mutex::new(None),
    })
}

async fn measure(
    stores: &Stores,
    strategy: Strategy,
    users: u64,
    quantity: u64,
) -> anyhow::Result<ScenarioResult> {
    let run = Arc::new(prepare(stores, strategy, quantity).await?);
    let requests = users * 2;
    let result = {
        let run = run.clone();
        load::run(
            requests,
            CONCURRENCY,
            ProgressBar::new(requests).with_message(strategy.title()),
            move |i| {
                let run = run.clone();
                async move {
                    match run.issue(i).await {
                        Ok(outcome) => {
                            match outcome {
                                Outcome::Issued => &run.issued,
                                Outcome::AlreadyIssued => &run.already_issued,
                                Outcome::SoldOut => &run.sold_out,
                            }
                            .fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(err) => {
                            let mut first =
                                run.first_error.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert_with(|| format!("{err:#}"));
                            false
                        }
                    }
                }
            },
        )
        .await
    };
    let counts = RowCounts::of(&run.db, run.coupon()).await?;
    let issued = run.issued.load(Ordering::Relaxed);
    let mut scenario = ScenarioResult::from_load(strategy.title(), &result);
    scenario
        .check(
            &format!("issued == quantity ({quantity})"),
            issued == quantity && counts.rows == quantity as i64,
        )
        .check("no duplicates", counts.exact(quantity))
        .check("no errors", result.errors == 0);
    if strategy == Strategy::LuaLedger {
        let ledger = run.ledger.issued(run.campaign.id).await?;
        scenario.check("ledger = DB", ledger == Some(counts.rows as u64));
    }
    let retries = run.retries.load(Ordering::Relaxed);
    let mut answers = format!(
        "answers: {issued} issued, {} already issued, {} sold out, {} errors",
        run.already_issued.load(Ordering::Relaxed),
        run.sold_out.load(Ordering::Relaxed),
        result.errors
    );
    match strategy {
        Strategy::Optimistic => {
            answers += &format!(
                "; {retries} lost version races retried (at most {MAX_ATTEMPTS} attempts per request)"
            );
        }
        Strategy::SpinLock => {
            answers +=
                &format!("; {retries} failed lock tries ({SPIN_SLEEP:?} sleep between tries)");
        }
        Strategy::Pessimistic | Strategy::LuaLedger => {}
    }
    scenario.notes.push(answers + ".");
    scenario.notes.push(counts.describe() + ".");
    if let Some(err) = run
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        scenario.notes.push(format!("first error: {err}"));
    }
    Ok(scenario)
}

/// Runs the four strategies; `storm_rps` is the HTTP coupon storm's rate
/// measured in this run, for the storm-vs-pessimistic ratio.
pub async fn run(
    stores: &Stores,
    storm_rps: Option<f64>,
    smoke: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The coupon storm's own mix, so that the storm-vs-pessimistic ratio
    // compares the same work.
    let (users, quantity) = if smoke {
        (100u64, 10u64)
    } else {
        (10_000, 1_000)
    };
    let mut rps = Vec::new();
    for strategy in Strategy::ALL {
        let mut scenario = measure(stores, strategy, users, quantity).await?;
        if strategy == Strategy::Pessimistic {
            scenario.notes.insert(
                0,
                format!(
                    "All four strategies run directly against the stores (PostgreSQL through sea-orm, Redis through the redis crate), no HTTP: the comparison is of the locking strategy alone. Same mix for each: {users} users × 2 requests (each user's two back to back, racing each other) = {} requests from {CONCURRENCY} concurrent workers, quantity {quantity} (the coupon storm's mix), a fresh database and campaign per strategy, on a PostgreSQL with durable commits (fsync on). Every winner writes its user_coupons row and a CouponIssued outbox event in one transaction.",
                    users * 2
                ),
            );
        }
        rps.push((strategy, scenario.rps));
        report.scenarios.push(scenario);
    }
    let rate = |s: Strategy| rps.iter().find(|(k, _)| *k == s).map_or(0.0, |(_, r)| *r);
    let lua = rate(Strategy::LuaLedger);
    for other in [
        Strategy::Pessimistic,
        Strategy::Optimistic,
        Strategy::SpinLock,
    ] {
        report.ratios.insert(
            format!("lockLuaLedgerVs{}", other.key()),
            lua / rate(other).max(f64::EPSILON),
        );
    }
    if let Some(storm) = storm_rps {
        let ratio = storm / rate(Strategy::Pessimistic).max(f64::EPSILON);
        report
            .ratios
            .insert("couponStormVsPessimistic".into(), ratio);
        if let Some(first) = report
            .scenarios
            .iter_mut()
            .find(|s| s.name == Strategy::Pessimistic.title())
        {
            first.notes.push(format!(
                "coupon storm over HTTP ({storm:.0}/s) is {ratio:.1}× this strategy; target ≥ 20×: {}.",
                if ratio >= 20.0 { "met" } else { "NOT met" }
            ));
        }
    }
    Ok(())
}
