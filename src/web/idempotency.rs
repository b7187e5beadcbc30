//! `Idempotency-Key`: a retried request with the same key replays the
//! first answer instead of charging or paying twice; the same key with a
//! different body is refused.
//!
//! The key is claimed (a row inserted under a unique key) before the work
//! runs, so two concurrent requests with one key cannot both run it.

use std::future::Future;

use chrono::Utc;
use poem::{Endpoint, Middleware, Request};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::problem::Problem;
use crate::kernel::UserId;

pub const MAX_KEY_LEN: usize = 128;
/// Marks a claimed key whose request is still running.
const IN_PROGRESS: i32 = 0;

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub status: i32,
        pub body: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const HEADER: &str = "idempotency-key";

/// An `Idempotency-Key` is 1 to 128 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_key());
    }
    Ok(())
}

fn invalid_key() -> Problem {
    Problem::validation(format!(
        "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, sent once"
    ))
}

/// Refuses a request whose `Idempotency-Key` the handlers would not see.
/// poem-openapi reads a header value that is not visible ASCII as if it
/// were absent, so a retried charge with such a key would run twice; and of
/// two keys it would silently use one.
pub struct KeyGuard;

impl<E: Endpoint> Middleware<E> for KeyGuard {
    type Output = KeyGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        KeyGuardEndpoint { inner }
    }
}

pub struct KeyGuardEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for KeyGuardEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let keys = req.headers().get_all(HEADER);
        if keys.iter().count() > 1 || keys.iter().any(|key| key.to_str().is_err()) {
            return Err(invalid_key().into());
        }
        self.inner.call(req).await
    }
}

#[derive(Clone)]
pub struct Idempotency {
    db: DatabaseConnection,
}

fn store_error(err: DbErr) -> Problem {
    if crate::db::is_outage(&err) {
        Problem::outage("idempotency store", &err.into())
    } else {
        Problem::bug("idempotency store", &err.into())
    }
}

impl Idempotency {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Runs `work` once per (user, scope, key); a retry gets the stored
    /// answer. Without a key, just runs it. Only successful answers are
    /// remembered: a refused request changed nothing and may be retried.
    pub async fn run<T, F, Fut>(
        &self,
        user: UserId,
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
        work: F,
    ) -> Result<T, Problem>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Problem>>,
    {
        let Some(key) = key else { return work().await };
        validate_key(key)?;
        let hash = format!(
            "{:x}",
            Sha256::digest(serde_json::to_vec(request).unwrap_or_default())
        );
        let row_key = (user.value(), scope.to_owned(), key.to_owned());
        let claimed = idempotency_key::Entity::insert(idempotency_key::ActiveModel {
            user_id: Set(row_key.0),
            scope: Set(row_key.1.clone()),
            key: Set(row_key.2.clone()),
            request_hash: Set(hash.clone()),
            status: Set(IN_PROGRESS),
            body: Set(String::new()),
            created_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::columns([
                idempotency_key::Column::UserId,
                idempotency_key::Column::Scope,
                idempotency_key::Column::Key,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await
        .map_err(store_error)?;
        if claimed == 0 {
            let first = idempotency_key::Entity::find_by_id(row_key.clone())
                .one(&self.db)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    Problem::conflict("idempotency_conflict", "the key was just released; retry")
                })?;
            if first.request_hash != hash {
                return Err(Problem::conflict(
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            if first.status == IN_PROGRESS {
                return Err(Problem::conflict(
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                ));
            }
            return serde_json::from_str(&first.body)
                .map_err(|err| Problem::bug("idempotency store", &err.into()));
        }
        let filter = || {
            idempotency_key::Column::UserId
                .eq(row_key.0)
                .and(idempotency_key::Column::Scope.eq(row_key.1.clone()))
                .and(idempotency_key::Column::Key.eq(row_key.2.clone()))
        };
        match work().await {
            Ok(answer) => {
                let body = serde_json::to_string(&answer)
                    .map_err(|err| Problem::bug("idempotency store", &err.into()))?;
                idempotency_key::Entity::update_many()
                    .col_expr(idempotency_key::Column::Status, Expr::value(200))
                    .col_expr(idempotency_key::Column::Body, Expr::value(body))
                    .filter(filter())
                    .exec(&self.db)
                    .await
                    .map_err(store_error)?;
                Ok(answer)
            }
            Err(problem) => {
                // Nothing happened; free the key for a retry.
                idempotency_key::Entity::delete_many()
                    .filter(filter())
                    .exec(&self.db)
                    .await
                    .map_err(store_error)?;
                Err(problem)
            }
        }
    }
}

/// Idempotency keys past their retention: a retry with such a key after
/// that is a new request.
pub fn expiring_keys(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "idempotency_keys",
        "idempotency_keys",
        "created_at < {before}",
    )
}
