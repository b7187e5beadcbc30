//! Liveness and readiness probes.

use std::time::Duration;

use poem_openapi::{Object, OpenApi};
use sea_orm::DatabaseConnection;

use super::{
    ApiTags,
    problem::{ApiResult, Problem, Unrefused},
    reply::Success,
};
use crate::redis_client::Conn;

/// How long a readiness check waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Object)]
#[oai(rename = "Health", rename_all = "camelCase")]
pub struct HealthBody {
    /// `ok` when every checked dependency answered.
    pub status: String,
    pub database: String,
    /// `ok`, or `not_configured` in the embedded shape.
    pub redis: String,
}

pub struct HealthApi {
    db: DatabaseConnection,
    redis: Option<Conn>,
}

impl HealthApi {
    pub fn new(db: DatabaseConnection, redis: Option<Conn>) -> Self {
        Self { db, redis }
    }

    async fn redis_ok(&self) -> Option<bool> {
        let mut conn = self.redis.clone()?;
        let ping = redis::cmd("PING");
        let answer =
            tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut conn)).await;
        Some(matches!(answer, Ok(Ok(_))))
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is up.
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self) -> Success<HealthBody> {
        Success::json(HealthBody {
            status: "ok".into(),
            database: "unchecked".into(),
            redis: "unchecked".into(),
        })
    }

    /// The process can serve traffic: the database (and Redis, when
    /// configured) answered just now, and no write failed on the database's
    /// storage (disk full, read-only, I/O errors) in the last ten seconds,
    /// and, on SQLite, a writer could take the file's write lock (nothing
    /// else holds it). 503 otherwise.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ApiResult<Success<HealthBody>, Unrefused> {
        let cannot_write = crate::db::storage_fault_lately();
        let db_ok = !cannot_write
            && matches!(
                tokio::time::timeout(PROBE_TIMEOUT, self.db.ping()).await,
                Ok(Ok(()))
            );
        let locked = db_ok
            && !matches!(
                tokio::time::timeout(PROBE_TIMEOUT, crate::db::write_lock_free(&self.db)).await,
                Ok(Ok(true))
            );
        let redis_ok = self.redis_ok().await;
        if !db_ok || locked || redis_ok == Some(false) {
            let mut down = Vec::new();
            if cannot_write {
                down.push("database (writes fail: disk full, read-only or I/O errors)");
            } else if locked {
                down.push("database (its file is locked: writers would time out)");
            } else if !db_ok {
                down.push("database");
            }
            if redis_ok == Some(false) {
                down.push("redis");
            }
            return Err(Problem::unavailable(format!(
                "not ready: {} unreachable",
                down.join(" and ")
            ))
            .into());
        }
        Ok(Success::json(HealthBody {
            status: "ok".into(),
            database: "ok".into(),
            redis: match redis_ok {
                Some(_) => "ok".into(),
                None => "not_configured".into(),
            },
        }))
    }
}
