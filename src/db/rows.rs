//! The statements every repository writes alike: one page of a table by its
//! id column, rows turned into domain values, a column of ids, an insert
//! that a duplicate leaves alone, and a compare-and-set update.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, UpdateMany, sea_query::OnConflict,
};

use crate::kernel::{PageRequest, StoreError};

/// Cursor paging on a query keyed by a unique id column. Each reads one row
/// more than the page, so [`crate::kernel::Page::of`] can tell whether
/// another page follows.
pub trait Paged: Sized {
    /// Ids below the cursor, the newest first.
    fn newest_first(self, id: impl ColumnTrait, page: PageRequest) -> Self;
    /// Ids above the cursor, the oldest first.
    fn oldest_first(self, id: impl ColumnTrait, page: PageRequest) -> Self;
}

impl<E: EntityTrait> Paged for Select<E> {
    fn newest_first(self, id: impl ColumnTrait, page: PageRequest) -> Self {
        let query = match page.after {
            Some(after) => self.filter(id.lt(after)),
            None => self,
        };
        query.order_by_desc(id).limit(page.fetch())
    }

    fn oldest_first(self, id: impl ColumnTrait, page: PageRequest) -> Self {
        let query = match page.after {
            Some(after) => self.filter(id.gt(after)),
            None => self,
        };
        query.order_by_asc(id).limit(page.fetch())
    }
}

/// Every row of `query` as a domain value; a row that does not convert is a
/// bug, not an outage.
pub async fn all_as<E: EntityTrait, T>(
    query: Select<E>,
    conn: &impl ConnectionTrait,
    to_domain: impl FnMut(E::Model) -> anyhow::Result<T>,
) -> Result<Vec<T>, StoreError> {
    query
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect::<anyhow::Result<_>>()
        .map_err(StoreError::Unexpected)
}

/// The first row of `query`, if any, as a domain value.
pub async fn one_as<E: EntityTrait, T>(
    query: Select<E>,
    conn: &impl ConnectionTrait,
    to_domain: impl FnMut(E::Model) -> anyhow::Result<T>,
) -> Result<Option<T>, StoreError> {
    // `Select::one` reads with the same `LIMIT 1`.
    Ok(all_as(query.limit(1), conn, to_domain).await?.pop())
}

/// One id column of every row of `query`, each wrapped in its id type.
pub async fn ids_of<E: EntityTrait, Id>(
    query: Select<E>,
    column: E::Column,
    conn: &impl ConnectionTrait,
    wrap: impl FnMut(i64) -> Id,
) -> Result<Vec<Id>, StoreError> {
    let ids: Vec<i64> = query
        .select_only()
        .column(column)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(ids.into_iter().map(wrap).collect())
}

/// Inserts `row` unless a row with the same `unique` columns is there
/// already (a duplicate delivery, a concurrent first sight); true when it
/// was inserted.
pub async fn insert_new<A: ActiveModelTrait>(
    row: A,
    unique: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
    conn: &impl ConnectionTrait,
) -> Result<bool, DbErr> {
    let inserted = A::Entity::insert(row)
        .on_conflict(OnConflict::columns(unique).do_nothing().to_owned())
        .exec_without_returning(conn)
        .await?;
    Ok(inserted > 0)
}

/// Runs a compare-and-set `update` (its filters name the state the caller
/// expects); true when it changed the one row, false when the row had
/// moved on.
pub async fn compare_and_set<E: EntityTrait>(
    update: UpdateMany<E>,
    conn: &impl ConnectionTrait,
) -> Result<bool, DbErr> {
    Ok(update.exec(conn).await?.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sea_orm::{
        ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
        sea_query::Expr,
    };

    use super::*;
    use crate::coupon::infra::db::vendor;

    async fn vendors(names: &[&str]) -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("rows.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        for name in names {
            vendor::ActiveModel {
                name: Set((*name).to_owned()),
                balance: Set(0),
                created_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
        }
        (dir, db)
    }

    fn name(row: vendor::Model) -> anyhow::Result<String> {
        Ok(row.name)
    }

    #[tokio::test]
    async fn pages_read_past_the_cursor_one_row_more_than_asked() {
        let (_dir, db) = vendors(&["a", "b", "c", "d"]).await;
        let ids = ids_of(vendor::Entity::find(), vendor::Column::Id, &db, |id| id)
            .await
            .unwrap();
        let page = |after| PageRequest { after, limit: 2 };

        let newest = vendor::Entity::find().newest_first(vendor::Column::Id, page(Some(ids[3])));
        assert_eq!(all_as(newest, &db, name).await.unwrap(), ["c", "b", "a"]);
        let oldest = vendor::Entity::find().oldest_first(vendor::Column::Id, page(None));
        assert_eq!(all_as(oldest, &db, name).await.unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_row_that_does_not_convert_is_unexpected() {
        let (_dir, db) = vendors(&["a"]).await;
        let refuse = |_| -> anyhow::Result<String> { Err(anyhow::anyhow!("bad row")) };

        let one = one_as(vendor::Entity::find(), &db, refuse).await;
        assert!(matches!(one, Err(StoreError::Unexpected(_))));
        let missing = vendor::Entity::find().filter(vendor::Column::Name.eq("z"));
        assert_eq!(one_as(missing, &db, name).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_compare_and_set_applies_once() {
        let (_dir, db) = vendors(&["a"]).await;
        let credit = || {
            vendor::Entity::update_many()
                .col_expr(vendor::Column::Balance, Expr::value(5))
                .filter(vendor::Column::Balance.eq(0))
        };

        assert!(compare_and_set(credit(), &db).await.unwrap());
        assert!(!compare_and_set(credit(), &db).await.unwrap());
    }

    #[tokio::test]
    async fn a_duplicate_insert_is_left_alone() {
        let (_dir, db) = vendors(&[]).await;
        let event = uuid::Uuid::new_v4();
        let record = || crate::outbox::infra::db::record_in_inbox(&db, "c", event, Utc::now());

        assert!(record().await.unwrap());
        assert!(!record().await.unwrap());
    }
}
