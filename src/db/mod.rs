//! Database plumbing shared by the sea-orm adapters: connecting (SQLite in
//! WAL mode or PostgreSQL), migrating, and telling an outage from a bug.

pub mod idempotency;
mod rows;

pub use rows::{Paged, all_as, compare_and_set, ids_of, insert_new, one_as};

use std::{future::Future, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{FutureExt, future::BoxFuture};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, RuntimeErr, Statement, TransactionTrait,
};

use crate::kernel::{StoreError, Transaction, UnitOfWork, retention::Expiring};

/// Opens the database at `url`. A SQLite file is created if missing and put
/// in WAL mode with a busy timeout, so readers never block the writer and
/// concurrent writers queue instead of failing.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_with(url, SQLITE_BUSY_TIMEOUT).await
}

/// [`connect`] with SQLite writers waiting `busy_timeout` for the file's
/// write lock.
pub async fn connect_with(url: &str, busy_timeout: Duration) -> anyhow::Result<DatabaseConnection> {
    let is_sqlite = url.starts_with("sqlite:");
    let url = if is_sqlite && !url.contains('?') && !url.contains(":memory:") {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5));
    if is_sqlite {
        // One file, one writer: under a burst, requests queue for a
        // connection while writers take turns, so they may wait longer than
        // a networked database's pool would let them.
        options
            .acquire_timeout(Duration::from_secs(30))
            .max_connections(8)
            .map_sqlx_sqlite_opts(move |opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(busy_timeout)
                    .foreign_keys(true)
            });
    } else {
        options.max_connections(32).min_connections(2);
    }
    Database::connect(options)
        .await
        .context("connecting to the database")
}

pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await.context("running migrations")
}

/// The PostgreSQL advisory lock every process takes to migrate and seed
/// (`"boxoffic"` as a number): one at a time, whatever else uses the
/// database.
const STARTUP_LOCK: i64 = 0x626f_786f_6666_6963;

/// Runs `work` (migrations, the demo seed) while holding the start-up
/// lock, so processes started together on one PostgreSQL take turns
/// instead of racing to create the same tables or seed twice. The lock is
/// a session lock on one pooled connection; that connection is closed, not
/// pooled again, if it cannot be let go. SQLite needs none: its one writer
/// already takes turns.
pub async fn while_starting<T>(
    db: &DatabaseConnection,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return work.await;
    }
    let mut conn = db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .context("taking a connection for the start-up lock")?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(STARTUP_LOCK)
        .execute(&mut *conn)
        .await
        .context("taking the start-up lock")?;
    let result = work.await;
    let released = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(STARTUP_LOCK)
        .execute(&mut *conn)
        .await;
    if let Err(err) = released {
        tracing::warn!(error = %err, "could not let go of the start-up lock; closing its connection");
        drop(conn.detach());
    }
    result
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            Some(e.as_ref())
        }
        _ => None,
    }
}

/// True when the error means the database could not be reached (pool
/// timeout, refused or dropped connection) or could not store what it was
/// given (see [`is_storage_fault`]), as opposed to a query the database
/// rejected. Outages answer 503 and heal by themselves.
pub fn is_outage(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        _ => {
            is_storage_fault(err)
                || sqlx_error(err).is_some_and(|e| {
                    matches!(
                        e,
                        sea_orm::sqlx::Error::Io(_)
                            | sea_orm::sqlx::Error::PoolTimedOut
                            | sea_orm::sqlx::Error::PoolClosed
                            | sea_orm::sqlx::Error::WorkerCrashed
                    )
                })
        }
    }
}

/// True when the database's storage failed it: SQLite's read-only file
/// (8), I/O error (10), full disk (13) or a file it cannot open (14), each
/// with its extended codes; PostgreSQL's disk full (53100), out of memory
/// (53200) or read-only transaction (25006, a replica promoted away).
/// Nothing the client did: an outage, and not ready until it clears.
pub fn is_storage_fault(err: &DbErr) -> bool {
    let Some(sea_orm::sqlx::Error::Database(db)) = sqlx_error(err) else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    let fault = match code.as_ref() {
        "53100" | "53200" | "25006" => true,
        sqlite => sqlite
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 8 | 10 | 13 | 14)),
    };
    if fault {
        storage_fault_seen();
    }
    fault
}

/// How long `/health/ready` reports a storage fault after the last one.
pub const STORAGE_FAULT_WINDOW: Duration = Duration::from_secs(10);

fn last_storage_fault() -> &'static std::sync::Mutex<Option<std::time::Instant>> {
    static LAST: std::sync::OnceLock<std::sync::Mutex<Option<std::time::Instant>>> =
        std::sync::OnceLock::new();
    LAST.get_or_init(Default::default)
}

fn storage_fault_seen() {
    if let Ok(mut last) = last_storage_fault().lock() {
        *last = Some(std::time::Instant::now());
    }
    metrics::counter!("database_storage_faults_total").increment(1);
}

/// Whether a write failed on the database's storage within
/// [`STORAGE_FAULT_WINDOW`]: a database that still answers reads but
/// cannot take writes (disk full, read-only, I/O errors) is not ready.
/// Per process, as one process serves one database. (A probe write was
/// tried and dropped: in WAL mode a small write fits in the space the log
/// already has and succeeds while the real ones fail.)
pub fn storage_fault_lately() -> bool {
    last_storage_fault()
        .lock()
        .ok()
        .and_then(|last| *last)
        .is_some_and(|at| at.elapsed() < STORAGE_FAULT_WINDOW)
}

/// How long the readiness probe waits for SQLite's write lock: a healthy
/// file's writers hold it for milliseconds, so a wait this long means
/// something (another process, a stuck backup) holds it.
const WRITE_LOCK_PROBE: Duration = Duration::from_millis(1_500);

/// The busy timeout SQLite connections have unless told (see [`connect`]).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a writer could take SQLite's write lock now (within
/// [`WRITE_LOCK_PROBE`]): `BEGIN IMMEDIATE` then `ROLLBACK` on one pooled
/// connection, its busy timeout shortened for the probe and put back (the
/// connection is closed instead of pooled if it cannot be). Always true on
/// PostgreSQL, whose writers wait on rows, not on the file.
pub async fn write_lock_free(db: &DatabaseConnection) -> anyhow::Result<bool> {
    if db.get_database_backend() != DatabaseBackend::Sqlite {
        return Ok(true);
    }
    let mut conn = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .context("taking a connection for the write-lock probe")?;
    let (own_timeout,): (i64,) = sea_orm::sqlx::query_as("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await?;
    // Numbers formatted here, nothing a client gave.
    sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {}",
        WRITE_LOCK_PROBE.as_millis()
    )))
    .execute(&mut *conn)
    .await?;
    let began = sea_orm::sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await;
    let free = match &began {
        Ok(_) => true,
        Err(sea_orm::sqlx::Error::Database(e))
            if e.code()
                .is_some_and(|c| c.parse::<u32>().is_ok_and(|c| c & 0xff == 5)) =>
        {
            false
        }
        Err(_) => true, // not a lock: the other checks report it
    };
    let rolled_back = match began {
        Ok(_) => sea_orm::sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .map(drop),
        Err(_) => Ok(()),
    };
    let restored = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {own_timeout}"
    )))
    .execute(&mut *conn)
    .await;
    if rolled_back.is_err() || restored.is_err() {
        drop(conn.detach());
    }
    Ok(free)
}

/// True when the database rolled the statement's transaction back because
/// of a concurrent one: PostgreSQL's serialization failure (40001),
/// deadlock (40P01) or lock timeout (55P03); SQLite's busy or locked file
/// (5, 6 and their extended codes, e.g. 517 for a stale snapshot).
pub fn is_conflict(err: &DbErr) -> bool {
    let Some(sea_orm::sqlx::Error::Database(db)) = sqlx_error(err) else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    match code.as_ref() {
        "40001" | "40P01" | "55P03" => true,
        sqlite => sqlite
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_outage(&err) {
            StoreError::Unavailable(err.into())
        } else if is_conflict(&err) {
            StoreError::Conflict(err.into())
        } else {
            StoreError::Unexpected(err.into())
        }
    }
}

/// Begins a transaction, recording how long it waited for a pooled
/// connection and its `BEGIN` (`db_pool_wait_seconds`): under load, the
/// time a request queues for the pool shows here first.
pub async fn begin_timed(db: &DatabaseConnection) -> Result<DbTx, DbErr> {
    let asked = std::time::Instant::now();
    let txn = db.begin().await;
    metrics::histogram!("db_pool_wait_seconds").record(asked.elapsed().as_secs_f64());
    Ok(DbTx::new(txn?))
}

/// The unit of work over the database: one transaction that every module's
/// transaction-scoped repository (implemented for [`DbTx`] in its `infra`)
/// writes through.
#[derive(Clone)]
pub struct DbUnitOfWork {
    db: DatabaseConnection,
}

impl DbUnitOfWork {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl UnitOfWork for DbUnitOfWork {
    type Tx = DbTx;

    async fn begin(&self) -> Result<DbTx, StoreError> {
        Ok(begin_timed(&self.db).await?)
    }
}

/// A database transaction; dropped without `commit`, it rolls back.
pub struct DbTx {
    txn: DatabaseTransaction,
    wrote_events: bool,
    /// Schedules whose seats the events written name: their seat-map
    /// snapshots retire once this commits.
    touched: Vec<crate::kernel::ScheduleId>,
}

impl DbTx {
    pub fn new(txn: DatabaseTransaction) -> Self {
        Self {
            txn,
            wrote_events: false,
            touched: Vec::new(),
        }
    }

    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Ends the transaction now, releasing its row locks at once (dropping
    /// it rolls back too, but only once the pool gets to it).
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }

    /// Whether this transaction appended events to the outbox (so its
    /// commit should wake the relay).
    pub fn wrote_events(&self) -> bool {
        self.wrote_events
    }

    /// Notes what `events` mean for this instance once committed: the
    /// relay has work, and the schedules they name changed.
    pub(crate) fn note_events_written(&mut self, events: &[crate::kernel::events::NewEvent]) {
        self.wrote_events |= !events.is_empty();
        for event in events {
            if let Some(schedule) = event
                .payload
                .get("scheduleId")
                .and_then(serde_json::Value::as_i64)
            {
                let schedule = crate::kernel::ScheduleId(schedule);
                if !self.touched.contains(&schedule) {
                    self.touched.push(schedule);
                }
            }
        }
    }
}

impl Transaction for DbTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await?;
        for schedule in self.touched {
            crate::kernel::snapshot::touch(schedule);
        }
        Ok(())
    }
}

/// Lets a module's error type be built from a `DbErr` with `?`: an outage
/// becomes its `Unavailable` variant, anything else `Unexpected`.
macro_rules! module_error_from_db_err {
    ($error:ty) => {
        impl From<sea_orm::DbErr> for $error {
            fn from(err: sea_orm::DbErr) -> Self {
                <$error>::from($crate::kernel::StoreError::from(err))
            }
        }
    };
}
pub(crate) use module_error_from_db_err;

/// The rows of one table that match an SQL condition, named for the logs
/// and alerts; read or deleted by raw statements that run on every engine.
struct TableRows {
    db: DatabaseConnection,
    name: &'static str,
    table: &'static str,
    condition: &'static str,
}

impl TableRows {
    /// The engine, and how its statements write their first bound value.
    fn backend_and_first_value(&self) -> (DatabaseBackend, &'static str) {
        let backend = self.db.get_database_backend();
        let first = match backend {
            DatabaseBackend::Postgres => "$1",
            _ => "?",
        };
        (backend, first)
    }
}

/// Rows of one table past their retention, deleted a batch at a time (one
/// short statement each, so the sweeper never holds long locks). The
/// condition of an expired row has `{before}` for the cutoff.
pub struct DbExpiring(TableRows);

impl DbExpiring {
    pub fn new(
        db: DatabaseConnection,
        name: &'static str,
        table: &'static str,
        condition: &'static str,
    ) -> Self {
        Self(TableRows {
            db,
            name,
            table,
            condition,
        })
    }
}

impl Expiring for DbExpiring {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn purge(&self, before: DateTime<Utc>, batch: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let rows = &self.0;
            let (backend, cutoff) = rows.backend_and_first_value();
            // The physical row id of each engine picks a batch of any table,
            // whatever its primary key.
            let row_id = match backend {
                DatabaseBackend::Postgres => "ctid",
                _ => "rowid",
            };
            let condition = rows.condition.replace("{before}", cutoff);
            let sql = format!(
                "DELETE FROM {table} WHERE {row_id} IN \
                 (SELECT {row_id} FROM {table} WHERE {condition} LIMIT {batch})",
                table = rows.table,
            );
            let done = rows
                .db
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [before.into()],
                ))
                .await?;
            Ok(done.rows_affected())
        }
        .boxed()
    }
}

/// Rows of one table stuck in a state for too long (a payment `paid`, a
/// schedule `cancelling`…): one short read for the watchdog, naming the
/// oldest ids. The condition is that of a row in the watched state.
pub struct DbStalled {
    rows: TableRows,
    /// The column that says since when it is in it.
    since: &'static str,
    severity: crate::kernel::alerts::Severity,
    /// What the rows are, e.g. `payments left paid`.
    what: &'static str,
}

impl DbStalled {
    pub fn new(
        db: DatabaseConnection,
        name: &'static str,
        (table, condition, since): (&'static str, &'static str, &'static str),
        severity: crate::kernel::alerts::Severity,
        what: &'static str,
    ) -> Self {
        Self {
            rows: TableRows {
                db,
                name,
                table,
                condition,
            },
            since,
            severity,
            what,
        }
    }
}

impl crate::kernel::watch::StallProbe for DbStalled {
    fn name(&self) -> &'static str {
        self.rows.name
    }

    fn stalls(
        &self,
        crate::kernel::watch::Look { since, now }: crate::kernel::watch::Look,
    ) -> BoxFuture<'_, Result<Vec<crate::kernel::watch::Stall>, StoreError>> {
        async move {
            let rows = &self.rows;
            let (backend, cutoff) = rows.backend_and_first_value();
            let sql = format!(
                "SELECT CAST(id AS TEXT) AS id, {at} AS at, COUNT(*) OVER () AS total \
                 FROM {table} WHERE {condition} AND {at} < {cutoff} ORDER BY {at}, id LIMIT {limit}",
                at = self.since,
                table = rows.table,
                condition = rows.condition,
                limit = crate::kernel::watch::NAMED_IDS,
            );
            let found = (rows.db)
                .query_all_raw(Statement::from_sql_and_values(backend, sql, [since.into()]))
                .await?;
            let Some(first) = found.first() else {
                return Ok(Vec::new());
            };
            let oldest: DateTime<Utc> = first.try_get("", "at")?;
            let total: i64 = first.try_get("", "total")?;
            let ids = (found.iter())
                .map(|r| r.try_get::<String>("", "id"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![crate::kernel::watch::Stall {
                condition: rows.name.to_owned(),
                severity: self.severity,
                message: crate::kernel::watch::naming(
                    self.what,
                    total.max(0) as u64,
                    &ids,
                    now - since,
                ),
                age: now - oldest,
            }])
        }
        .boxed()
    }
}
