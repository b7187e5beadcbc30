//! Identity providers' subjects and the user ids kept for them: one row
//! per (issuer, subject), created on first sight. Ids never change, so
//! they are remembered in process (bounded) once read.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::{
    auth::{domain::AuthError, ports::SubjectDirectory},
    db::insert_new,
    kernel::{UserId, cache::Cache},
};

pub(crate) mod identity_subject {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_subjects")]
    pub struct Model {
        /// The user id.
        #[sea_orm(primary_key)]
        pub id: i64,
        pub issuer: String,
        pub subject: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(AuthError);

/// How many subjects' ids one process remembers, and for how long (a
/// subject never changes its id: the bound is on memory only).
const REMEMBERED: u64 = 100_000;
const REMEMBERED_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub struct DbSubjects {
    db: DatabaseConnection,
    issuer: String,
    known: Cache<String, UserId>,
}

impl DbSubjects {
    /// The subjects of the identity provider `issuer` (its `iss`).
    pub fn new(db: DatabaseConnection, issuer: String) -> Self {
        Self {
            db,
            issuer,
            known: Cache::new(REMEMBERED, REMEMBERED_FOR),
        }
    }

    async fn look_up(&self, subject: &str) -> Result<UserId, AuthError> {
        // First sight in any process inserts; a concurrent first sight
        // elsewhere makes this one do nothing. Either way the row is there.
        let row = identity_subject::ActiveModel {
            issuer: Set(self.issuer.clone()),
            subject: Set(subject.to_owned()),
            created_at: Set(Utc::now()),
            ..Default::default()
        };
        let unique = [
            identity_subject::Column::Issuer,
            identity_subject::Column::Subject,
        ];
        insert_new(row, unique, &self.db).await?;
        let row = identity_subject::Entity::find()
            .filter(identity_subject::Column::Issuer.eq(&self.issuer))
            .filter(identity_subject::Column::Subject.eq(subject))
            .one(&self.db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("subject {subject:?} missing right after its insert"))?;
        Ok(UserId(row.id))
    }
}

impl SubjectDirectory for DbSubjects {
    fn user_for<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<UserId, AuthError>> {
        async move {
            if let Some(id) = self.known.get(subject) {
                return Ok(id);
            }
            let id = self.look_up(subject).await?;
            self.known.insert(subject.to_owned(), id);
            Ok(id)
        }
        .boxed()
    }
}
