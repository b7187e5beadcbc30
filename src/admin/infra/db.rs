use anyhow::anyhow;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, TransactionTrait,
    sea_query::{Expr, LockBehavior, LockType},
};

use crate::{
    admin::{
        domain::{AdminError, Alert, AlertFilter, NewAlert, QueuedAlert, Severity, WebhookStatus},
        ports::{AlertRepository, Raising, Refusal, WebhookQueue},
    },
    db::{DbTx, Paged, all_as},
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
        pub condition: Option<String>,
        pub resolved_at: Option<DateTimeUtc>,
        pub traceparent: Option<String>,
        pub webhook_attempts: i32,
        pub webhook_next_at: Option<DateTimeUtc>,
        pub webhook_delivered_at: Option<DateTimeUtc>,
        pub webhook_error: Option<String>,
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

fn to_alert(row: admin_alert::Model) -> anyhow::Result<Alert> {
    let webhook = if row.webhook_delivered_at.is_some() {
        WebhookStatus::Delivered
    } else if row.webhook_next_at.is_some() {
        WebhookStatus::Queued
    } else if row.webhook_attempts > 0 {
        WebhookStatus::GaveUp
    } else {
        WebhookStatus::None
    };
    Ok(Alert {
        id: row.id,
        severity: Severity::parse(&row.severity)
            .ok_or_else(|| anyhow!("alert {} has unknown severity {:?}", row.id, row.severity))?,
        source: row.source,
        message: row.message,
        created_at: row.created_at,
        acknowledged: row.acknowledged,
        condition: row.condition,
        resolved_at: row.resolved_at,
        webhook,
        webhook_attempts: row.webhook_attempts,
    })
}

impl AlertRepository for DbAlerts {
    async fn insert(
        &self,
        alert: &NewAlert,
        raising: Raising,
        now: DateTime<Utc>,
    ) -> Result<Alert, AdminError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let condition = raising.condition.clone().unwrap_or_default();
        let row = admin_alert::ActiveModel {
            severity: Set(alert.severity.as_str().to_owned()),
            source: Set(alert.source.chars().take(255).collect()),
            message: Set(alert.message.clone()),
            created_at: Set(now),
            acknowledged: Set(false),
            acknowledged_at: Set(None),
            condition: Set(raising.condition),
            resolved_at: Set(None),
            traceparent: Set(raising.traceparent),
            webhook_attempts: Set(0),
            webhook_next_at: Set(raising.queue_for_webhook.then_some(now)),
            webhook_delivered_at: Set(None),
            webhook_error: Set(None),
            ..Default::default()
        }
        .insert(tx.conn())
        .await
        .map_err(|err| match err.sql_err() {
            // Another instance's watchdog raised this condition first.
            Some(SqlErr::UniqueConstraintViolation(_)) => AdminError::AlreadyOpen(condition),
            _ => err.into(),
        })?;
        let stored = to_alert(row)?;
        tx.append(vec![stored.raised()], now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn list(&self, filter: AlertFilter, page: PageRequest) -> Result<Vec<Alert>, AdminError> {
        let mut query = admin_alert::Entity::find();
        if let Some(acknowledged) = filter.acknowledged {
            query = query.filter(admin_alert::Column::Acknowledged.eq(acknowledged));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(admin_alert::Column::Severity.eq(severity.as_str()));
        }
        let query = query.newest_first(admin_alert::Column::Id, page);
        Ok(all_as(query, &self.db, to_alert).await?)
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

    async fn open_conditions(&self, prefix: &str) -> Result<Vec<Alert>, AdminError> {
        let query = admin_alert::Entity::find()
            .filter(admin_alert::Column::Condition.starts_with(prefix))
            .filter(admin_alert::Column::ResolvedAt.is_null())
            .order_by_asc(admin_alert::Column::Id);
        Ok(all_as(query, &self.db, to_alert).await?)
    }

    async fn resolve(&self, alert: &Alert, now: DateTime<Utc>) -> Result<bool, AdminError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let result = admin_alert::Entity::update_many()
            .col_expr(admin_alert::Column::ResolvedAt, Expr::value(now))
            .filter(admin_alert::Column::Id.eq(alert.id))
            .filter(admin_alert::Column::ResolvedAt.is_null())
            .exec(tx.conn())
            .await?;
        if result.rows_affected == 0 {
            return Ok(false);
        }
        tx.append(vec![alert.resolved()], now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl WebhookQueue for DbAlerts {
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: TimeDelta,
        max: u64,
    ) -> Result<Vec<QueuedAlert>, AdminError> {
        let tx = self.db.begin().await?;
        let mut query = admin_alert::Entity::find()
            .filter(admin_alert::Column::WebhookNextAt.lte(now))
            .order_by_asc(admin_alert::Column::Id)
            .limit(max);
        // Two instances claim different alerts; SQLite has one writer.
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = query.all(&tx).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        admin_alert::Entity::update_many()
            .col_expr(admin_alert::Column::WebhookNextAt, Expr::value(now + claim))
            .filter(admin_alert::Column::Id.is_in(rows.iter().map(|r| r.id)))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|row| {
                let traceparent = row.traceparent.clone();
                Ok(QueuedAlert {
                    alert: to_alert(row)?,
                    traceparent,
                })
            })
            .collect()
    }

    async fn delivered(
        &self,
        id: i64,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<(), AdminError> {
        admin_alert::Entity::update_many()
            .col_expr(
                admin_alert::Column::WebhookNextAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(admin_alert::Column::WebhookDeliveredAt, Expr::value(now))
            .col_expr(admin_alert::Column::WebhookAttempts, Expr::value(attempts))
            .col_expr(
                admin_alert::Column::WebhookError,
                Expr::value(Option::<String>::None),
            )
            .filter(admin_alert::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), AdminError> {
        let error: String = refusal.error.chars().take(500).collect();
        admin_alert::Entity::update_many()
            .col_expr(
                admin_alert::Column::WebhookNextAt,
                Expr::value(refusal.next),
            )
            .col_expr(
                admin_alert::Column::WebhookAttempts,
                Expr::value(refusal.attempts),
            )
            .col_expr(admin_alert::Column::WebhookError, Expr::value(error))
            .filter(admin_alert::Column::Id.eq(refusal.alert))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// Acknowledged alerts past their retention (open ones, and ones still
/// waiting for the webhook, stay).
pub fn expiring_alerts(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "admin_alerts",
        "admin_alerts",
        "acknowledged_at IS NOT NULL AND acknowledged_at < {before} AND webhook_next_at IS NULL",
    )
}
