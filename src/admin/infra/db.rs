use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait, sea_query::Expr,
};

use crate::{
    admin::{
        domain::{AdminError, Alert, AlertFilter, NewAlert, Severity},
        ports::AlertRepository,
    },
    db::DbTx,
    kernel::{PageRequest, Transaction, events::NewEvent},
    outbox::ports::OutboxWriter,
};

pub(crate) mod admin_alert {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "admin_alerts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub severity: String,
        pub source: String,
        pub message: String,
        pub created_at: DateTimeUtc,
        pub acknowledged: bool,
        pub acknowledged_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone)]
pub struct DbAlerts {
    db: DatabaseConnection,
}

impl DbAlerts {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

crate::db::module_error_from_db_err!(AdminError);

fn to_alert(row: admin_alert::Model) -> Result<Alert, AdminError> {
    Ok(Alert {
        id: row.id,
        severity: Severity::parse(&row.severity)
            .ok_or_else(|| anyhow!("alert {} has unknown severity {:?}", row.id, row.severity))?,
        source: row.source,
        message: row.message,
        created_at: row.created_at,
        acknowledged: row.acknowledged,
    })
}

impl AlertRepository for DbAlerts {
    async fn insert(&self, alert: &NewAlert, now: DateTime<Utc>) -> Result<Alert, AdminError> {
        let row = admin_alert::ActiveModel {
            severity: Set(alert.severity.as_str().to_owned()),
            source: Set(alert.source.clone()),
            message: Set(alert.message.clone()),
            created_at: Set(now),
            acknowledged: Set(false),
            acknowledged_at: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        to_alert(row)
    }

    async fn list(&self, filter: AlertFilter, page: PageRequest) -> Result<Vec<Alert>, AdminError> {
        let mut query = admin_alert::Entity::find();
        if let Some(after) = page.after {
            query = query.filter(admin_alert::Column::Id.lt(after));
        }
        if let Some(acknowledged) = filter.acknowledged {
            query = query.filter(admin_alert::Column::Acknowledged.eq(acknowledged));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(admin_alert::Column::Severity.eq(severity.as_str()));
        }
        query
            .order_by_desc(admin_alert::Column::Id)
            .limit(page.fetch())
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_alert)
            .collect()
    }

    async fn acknowledge(
        &self,
        id: i64,
        event: NewEvent,
        now: DateTime<Utc>,
    ) -> Result<bool, AdminError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let result = admin_alert::Entity::update_many()
            .col_expr(admin_alert::Column::Acknowledged, Expr::value(true))
            .col_expr(admin_alert::Column::AcknowledgedAt, Expr::value(now))
            .filter(admin_alert::Column::Id.eq(id))
            .filter(admin_alert::Column::Acknowledged.eq(false))
            .exec(tx.conn())
            .await?;
        if result.rows_affected > 0 {
            tx.append(vec![event], now).await?;
            tx.commit().await?;
            return Ok(true);
        }
        // Already acknowledged, or no such alert.
        let exists = admin_alert::Entity::find_by_id(id).count(tx.conn()).await?;
        Ok(exists > 0)
    }
}

/// Acknowledged alerts past their retention (open ones stay).
pub fn expiring_alerts(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "admin_alerts",
        "admin_alerts",
        "acknowledged_at IS NOT NULL AND acknowledged_at < {before}",
    )
}
