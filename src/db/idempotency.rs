//! The idempotency keys' table (`kernel::idempotency` is the rule). A row
//! is inserted as the work's transaction begins and gets its answer just
//! before it commits, so a committed row always has its answer.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::{DbExpiring, DbTx};
use crate::kernel::{
    StoreError,
    idempotency::{IdempotencyTx, Recall, RequestKey},
};

/// `status` of a row whose answer is stored (the only kind ever committed).
const ANSWERED: i32 = 200;
/// `status` of a row claimed and not yet answered, seen only inside its
/// own transaction.
const CLAIMED: i32 = 0;

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

/// A second row for one (user, scope, key) is not inserted.
fn keep_the_first() -> OnConflict {
    OnConflict::columns([
        idempotency_key::Column::UserId,
        idempotency_key::Column::Scope,
        idempotency_key::Column::Key,
    ])
    .do_nothing()
    .to_owned()
}

fn id_of(key: &RequestKey) -> (i64, String, String) {
    (
        key.user().value(),
        key.scope().to_owned(),
        key.key().to_owned(),
    )
}

fn of_key(key: &RequestKey) -> sea_orm::sea_query::SimpleExpr {
    idempotency_key::Column::UserId
        .eq(key.user().value())
        .and(idempotency_key::Column::Scope.eq(key.scope()))
        .and(idempotency_key::Column::Key.eq(key.key()))
}

/// A key's row with its answer, ready to insert.
pub fn answered_row(
    key: &RequestKey,
    body: String,
    now: DateTime<Utc>,
) -> idempotency_key::ActiveModel {
    idempotency_key::ActiveModel {
        user_id: Set(key.user().value()),
        scope: Set(key.scope().to_owned()),
        key: Set(key.key().to_owned()),
        request_hash: Set(key.fingerprint().to_owned()),
        status: Set(ANSWERED),
        body: Set(body),
        created_at: Set(now),
    }
}

fn recall(key: &RequestKey, row: Option<idempotency_key::Model>) -> Recall {
    match row {
        Some(row) if row.status == ANSWERED => Recall::of(key, &row.request_hash, row.body),
        // A row from before answers were stored with the work: its request
        // may have run; refuse rather than run it twice.
        Some(_) => Recall::OtherRequest,
        None => Recall::Fresh,
    }
}

impl IdempotencyTx for DbTx {
    async fn claim(&mut self, key: &RequestKey, now: DateTime<Utc>) -> Result<Recall, StoreError> {
        let mut row = answered_row(key, String::new(), now);
        row.status = Set(CLAIMED);
        let inserted = idempotency_key::Entity::insert(row)
            .on_conflict(keep_the_first())
            .exec_without_returning(self.conn())
            .await?;
        if inserted == 1 {
            return Ok(Recall::Fresh);
        }
        let row = idempotency_key::Entity::find_by_id(id_of(key))
            .one(self.conn())
            .await?;
        match recall(key, row) {
            // Gone between the insert and the read: its retention just
            // passed. Run this transaction again.
            Recall::Fresh => Err(StoreError::Conflict(anyhow::anyhow!(
                "idempotency key {} was removed while being claimed",
                key.key()
            ))),
            known => Ok(known),
        }
    }

    async fn remember(
        &mut self,
        key: &RequestKey,
        body: String,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = idempotency_key::Entity::insert(answered_row(key, body, now))
            .on_conflict(keep_the_first())
            .exec_without_returning(self.conn())
            .await?;
        Ok(inserted == 1)
    }

    async fn recall(&mut self, key: &RequestKey) -> Result<Recall, StoreError> {
        let row = idempotency_key::Entity::find_by_id(id_of(key))
            .one(self.conn())
            .await?;
        Ok(recall(key, row))
    }

    async fn answer(&mut self, key: &RequestKey, body: String) -> Result<(), StoreError> {
        let updated = idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::Status, Expr::value(ANSWERED))
            .col_expr(idempotency_key::Column::Body, Expr::value(body))
            .filter(of_key(key))
            .exec(self.conn())
            .await?;
        if updated.rows_affected != 1 {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "idempotency key {} was not claimed in this transaction",
                key.key()
            )));
        }
        Ok(())
    }
}

/// Idempotency keys past their retention: a retry with such a key after
/// that is a new request.
pub fn expiring_keys(db: DatabaseConnection) -> DbExpiring {
    DbExpiring::new(
        db,
        "idempotency_keys",
        "idempotency_keys",
        "created_at < {before}",
    )
}
