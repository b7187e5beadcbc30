//! Database plumbing shared by the sea-orm adapters: connecting (SQLite in
//! WAL mode or PostgreSQL), migrating, and telling an outage from a bug.

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr};

/// Opens the database at `url`. A SQLite file is created if missing and put
/// in WAL mode with a busy timeout, so readers never block the writer and
/// concurrent writers queue instead of failing.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
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
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
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

/// True when the error means the database could not be reached (pool
/// timeout, refused or dropped connection), as opposed to a query the
/// database rejected. Outages answer 503 and heal by themselves.
pub fn is_outage(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                e.as_ref(),
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
                    | sea_orm::sqlx::Error::WorkerCrashed
            )
        }
        _ => false,
    }
}

/// Lets a module's error type be built from a `DbErr` with `?`: an outage
/// becomes its `Unavailable` variant, anything else `Unexpected`.
macro_rules! module_error_from_db_err {
    ($error:ty) => {
        impl From<sea_orm::DbErr> for $error {
            fn from(err: sea_orm::DbErr) -> Self {
                if $crate::db::is_outage(&err) {
                    Self::Unavailable(err.into())
                } else {
                    Self::Unexpected(err.into())
                }
            }
        }
    };
}
pub(crate) use module_error_from_db_err;
