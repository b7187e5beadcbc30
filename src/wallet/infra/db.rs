//! Wallets and their ledger in the database. Every balance change is one
//! conditional UPDATE plus its ledger row, in the caller's transaction.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait, IntoCondition},
};

use crate::{
    db::{DbTx, Paged, all_as, insert_new},
    kernel::{PageRequest, PaymentId, Points, StoreError, UserId},
    wallet::{
        domain::{EntryKind, LedgerEntry, Posting, WalletError},
        ports::{WalletRepository, WalletTx},
    },
};

pub mod wallet {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "wallets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        pub balance: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod wallet_transaction {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "wallet_transactions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub kind: String,
        pub amount: i64,
        pub balance_after: i64,
        pub payment_id: Option<i64>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(WalletError);

async fn balance_of<C: ConnectionTrait>(conn: &C, user: UserId) -> Result<i64, DbErr> {
    Ok(wallet::Entity::find_by_id(user.value())
        .one(conn)
        .await?
        .map_or(0, |w| w.balance))
}

/// One balance change: a conditional UPDATE by `delta` (concurrent changes
/// add up exactly; `allowed` is the balance it may start from), then its
/// ledger row; the new balance, or `None` when `allowed` refused it
/// (nothing changed then).
async fn change_balance<C: ConnectionTrait>(
    conn: &C,
    posting: Posting,
    delta: i64,
    allowed: impl IntoCondition,
    now: DateTime<Utc>,
) -> Result<Option<Points>, DbErr> {
    let Posting {
        user,
        kind,
        payment,
        ..
    } = posting;
    let changed = wallet::Entity::update_many()
        .col_expr(
            wallet::Column::Balance,
            Expr::col(wallet::Column::Balance).add(delta),
        )
        .col_expr(wallet::Column::UpdatedAt, Expr::value(now))
        .filter(wallet::Column::UserId.eq(user.value()))
        .filter(allowed)
        .exec(conn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(None);
    }
    let after = balance_of(conn, user).await?;
    wallet_transaction::Entity::insert(wallet_transaction::ActiveModel {
        user_id: Set(user.value()),
        kind: Set(kind.as_str().into()),
        amount: Set(delta),
        balance_after: Set(after),
        payment_id: Set(payment.map(PaymentId::value)),
        created_at: Set(now),
        ..Default::default()
    })
    .exec_without_returning(conn)
    .await?;
    Points::new(after)
        .map(Some)
        .map_err(|e| DbErr::Custom(e.to_string()))
}

#[derive(Clone)]
pub struct DbWallets {
    db: DatabaseConnection,
}

impl DbWallets {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl WalletRepository for DbWallets {
    async fn balance(&self, user: UserId) -> Result<Points, WalletError> {
        Points::new(balance_of(&self.db, user).await?)
            .map_err(|e| anyhow!("wallet {user}: {e}").into())
    }

    async fn entries(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        let query = wallet_transaction::Entity::find()
            .filter(wallet_transaction::Column::UserId.eq(user.value()))
            .newest_first(wallet_transaction::Column::Id, page);
        let entries = all_as(query, &self.db, |row| {
            Ok(LedgerEntry {
                id: row.id,
                kind: EntryKind::parse(&row.kind)
                    .ok_or_else(|| anyhow!("ledger row {} has kind {:?}", row.id, row.kind))?,
                amount: row.amount,
                balance_after: Points::new(row.balance_after)
                    .map_err(|e| anyhow!("ledger row {}: {e}", row.id))?,
                created_at: row.created_at,
            })
        });
        Ok(entries.await?)
    }
}

impl WalletTx for DbTx {
    async fn credit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        let conn = self.conn();
        let empty = wallet::ActiveModel {
            user_id: Set(posting.user.value()),
            balance: Set(0),
            updated_at: Set(now),
        };
        insert_new(empty, [wallet::Column::UserId], conn).await?;
        let delta = posting.amount.value();
        let below_cap = wallet::Column::Balance.lte(Points::MAX - delta);
        Ok(change_balance(conn, posting, delta, below_cap, now).await?)
    }

    /// A payment never overdraws: the UPDATE only takes a balance that
    /// covers it.
    async fn debit(
        &mut self,
        posting: Posting,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        let covers = wallet::Column::Balance.gte(posting.amount.value());
        let delta = -posting.amount.value();
        Ok(change_balance(self.conn(), posting, delta, covers, now).await?)
    }
}
