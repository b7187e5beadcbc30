//! Campaigns, vendors, issued coupons and redemption jobs in the database.

use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    coupon::{
        domain::{
            Campaign, CampaignDraft, CouponError, CouponState, CouponStatus, FailReason,
            HeldCoupon, IssuedCoupon, Job, JobStatus, RecordError, Vendor,
        },
        ports::CouponRepository,
    },
    db::{
        DbTx,
        idempotency::{answered_row, idempotency_key},
    },
    kernel::{
        CouponId, StoreError, Transaction, UserCouponId, UserId, VendorId,
        events::{CouponIssued, NewEvent, types},
        idempotency::RequestKey,
    },
    outbox::ports::OutboxWriter,
};

pub mod vendor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vendors")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub balance: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupons")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub discount: i64,
        pub quantity: i64,
        pub valid_from: DateTimeUtc,
        pub valid_until: DateTimeUtc,
        pub vendor_id: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user_coupon {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_coupons")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub coupon_id: i64,
        pub user_id: i64,
        pub issue_number: i64,
        pub status: String,
        pub version: i64,
        pub issue_key: Option<String>,
        pub issued_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon_job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupon_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: i64,
        pub user_coupon_id: i64,
        pub status: String,
        pub reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod vendor_payment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vendor_payments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub vendor_id: i64,
        #[sea_orm(unique)]
        pub user_coupon_id: i64,
        pub job_id: Uuid,
        pub amount: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(CouponError);

pub fn job_from(row: coupon_job::Model) -> Result<Job, CouponError> {
    Ok(Job {
        id: row.id,
        user: UserId(row.user_id),
        user_coupon: UserCouponId(row.user_coupon_id),
        status: JobStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("job {} has status {:?}", row.id, row.status))?,
        reason: row.reason.as_deref().and_then(FailReason::parse),
    })
}

pub fn campaign_from(row: coupon::Model) -> Result<Campaign, CouponError> {
    Ok(Campaign {
        id: CouponId(row.id),
        quantity: u32::try_from(row.quantity)
            .map_err(|_| anyhow!("coupon {} has quantity {}", row.id, row.quantity))?,
        name: row.name,
        discount: row.discount,
        valid_from: row.valid_from,
        valid_until: row.valid_until,
        vendor: VendorId(row.vendor_id),
    })
}

fn issued_from(row: user_coupon::Model) -> IssuedCoupon {
    IssuedCoupon {
        id: UserCouponId(row.id),
        coupon: CouponId(row.coupon_id),
        user: UserId(row.user_id),
        number: u32::try_from(row.issue_number).unwrap_or(u32::MAX),
    }
}

fn vendor_from(row: vendor::Model) -> Vendor {
    Vendor {
        id: VendorId(row.id),
        name: row.name,
        balance: row.balance,
    }
}

#[derive(Clone)]
pub struct DbCoupons {
    db: DatabaseConnection,
    /// The winners' writer, started on first use (it needs a runtime).
    writer: Arc<OnceLock<mpsc::UnboundedSender<PendingIssue>>>,
}

impl DbCoupons {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            writer: Arc::default(),
        }
    }

    fn writer(&self) -> &mpsc::UnboundedSender<PendingIssue> {
        self.writer.get_or_init(|| {
            let (queue, pending) = mpsc::unbounded_channel();
            tokio::spawn(write_winners(self.db.clone(), pending));
            queue
        })
    }
}

/// A winner's row waiting to be written.
struct PendingIssue {
    row: user_coupon::ActiveModel,
    /// The request's key, stored with the row and the winner's answer.
    key: Option<RequestKey>,
    reply: oneshot::Sender<Result<IssuedCoupon, RecordError>>,
}

/// Most winners written in one transaction.
const MAX_WINNERS_PER_BATCH: usize = 256;

/// Writes winners in batches: whoever won while the previous batch was
/// committing goes into the next transaction (one multi-row insert, one
/// `CouponIssued` insert, one commit), so a rush pays a commit per batch
/// instead of per winner, and a lone winner waits for nobody. A batch the
/// database refuses is written again row by row, so that every winner hears
/// its own answer (a duplicate stays `DuplicateUser` / `DuplicateNumber`).
async fn write_winners(db: DatabaseConnection, mut pending: mpsc::UnboundedReceiver<PendingIssue>) {
    let mut batch = Vec::with_capacity(MAX_WINNERS_PER_BATCH);
    while pending.recv_many(&mut batch, MAX_WINNERS_PER_BATCH).await > 0 {
        let rows = batch
            .iter()
            .map(|p| (p.row.clone(), p.key.clone()))
            .collect();
        match insert_winners(&db, rows).await {
            Ok(written) => {
                for waiting in batch.drain(..) {
                    let mine = written.iter().find(|row| {
                        Set(row.coupon_id) == waiting.row.coupon_id
                            && Set(row.user_id) == waiting.row.user_id
                    });
                    let answer = mine.cloned().map(issued_from).ok_or_else(|| {
                        RecordError::Failed(anyhow!("the batch insert did not return this winner"))
                    });
                    let _ = waiting.reply.send(answer);
                }
            }
            Err(_) if batch.len() > 1 => {
                for waiting in batch.drain(..) {
                    let written = insert_winners(&db, vec![(waiting.row, waiting.key)])
                        .await
                        .and_then(|mut rows| rows.pop().ok_or(DbErr::RecordNotInserted));
                    let _ = waiting
                        .reply
                        .send(written.map(issued_from).map_err(record_error));
                }
            }
            // A batch of one: its own error.
            Err(err) => {
                if let Some(waiting) = batch.pop() {
                    let _ = waiting.reply.send(Err(record_error(err)));
                }
            }
        }
    }
}

/// Inserts winners' rows, their `CouponIssued` events and the keys of
/// those who sent one (with their answers) in one transaction.
async fn insert_winners(
    db: &DatabaseConnection,
    winners: Vec<(user_coupon::ActiveModel, Option<RequestKey>)>,
) -> Result<Vec<user_coupon::Model>, DbErr> {
    let mut tx = DbTx::new(db.begin().await?);
    let txn = tx.conn();
    let mut keys = Vec::new();
    let mut rows = Vec::with_capacity(winners.len());
    for (row, key) in winners {
        if let Some(key) = key {
            keys.push((
                row.coupon_id.clone().unwrap(),
                row.user_id.clone().unwrap(),
                key,
            ));
        }
        rows.push(row);
    }
    let written = user_coupon::Entity::insert_many(rows)
        .exec_with_returning(txn)
        .await?;
    let keyed: Vec<_> = keys
        .iter()
        .filter_map(|(coupon, user, key)| {
            let row = written
                .iter()
                .find(|row| row.coupon_id == *coupon && row.user_id == *user)?;
            let answer = serde_json::to_string(&issued_from(row.clone()).answer()).ok()?;
            Some(answered_row(key, answer, row.issued_at))
        })
        .collect();
    if !keyed.is_empty() {
        idempotency_key::Entity::insert_many(keyed)
            .exec_without_returning(txn)
            .await?;
    }
    let events = written
        .iter()
        .map(|row| {
            NewEvent::new(
                types::COUPON_ISSUED,
                "coupon",
                row.coupon_id,
                &CouponIssued {
                    coupon_id: row.coupon_id,
                    user_coupon_id: row.id,
                    user_id: row.user_id,
                    issue_number: row.issue_number,
                },
            )
        })
        .collect();
    let now = written
        .iter()
        .map(|r| r.issued_at)
        .max()
        .unwrap_or_else(Utc::now);
    // Only the row insert can meet a unique index; any later failure
    // fails the whole batch the same way, so its cause is kept as text.
    let failed = |err: StoreError| DbErr::Custom(format!("{err:#}"));
    tx.append(events, now).await.map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(written)
}

/// Which unique index refused a winner's row, if one did. PostgreSQL names
/// the index (`ux_user_coupons_coupon_number`, `idempotency_keys_pkey`),
/// SQLite the columns (`user_coupons.issue_number`,
/// `idempotency_keys.user_id, …`).
fn record_error(err: DbErr) -> RecordError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("idempotency") => {
            RecordError::KeyReused
        }
        Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("number") => {
            RecordError::DuplicateNumber
        }
        Some(SqlErr::UniqueConstraintViolation(_)) => RecordError::DuplicateUser,
        _ => RecordError::Failed(err.into()),
    }
}

impl CouponRepository for DbCoupons {
    async fn create_vendor(
        &self,
        name: String,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vendor, CouponError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let row = vendor::ActiveModel {
            name: Set(name),
            balance: Set(0),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(tx.conn())
        .await?;
        let vendor = vendor_from(row);
        tx.append(vec![vendor.created(admin)], now).await?;
        tx.commit().await?;
        Ok(vendor)
    }

    async fn vendors(&self) -> Result<Vec<Vendor>, CouponError> {
        Ok(vendor::Entity::find()
            .order_by_asc(vendor::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(vendor_from)
            .collect())
    }

    async fn create_campaign(
        &self,
        draft: CampaignDraft,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> Result<Campaign, CouponError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let txn = tx.conn();
        let row = coupon::ActiveModel {
            name: Set(draft.name),
            discount: Set(draft.discount),
            quantity: Set(i64::from(draft.quantity)),
            valid_from: Set(draft.valid_from),
            valid_until: Set(draft.valid_until),
            vendor_id: Set(draft.vendor.value()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await
        .map_err(|err| match err.sql_err() {
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => CouponError::VendorNotFound,
            _ => err.into(),
        })?;
        let campaign = campaign_from(row)?;
        let event = campaign.created(admin);
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(campaign)
    }

    async fn campaign(&self, id: CouponId) -> Result<Option<Campaign>, CouponError> {
        coupon::Entity::find_by_id(id.value())
            .one(&self.db)
            .await?
            .map(campaign_from)
            .transpose()
    }

    async fn campaigns(
        &self,
        ending_after: Option<DateTime<Utc>>,
    ) -> Result<Vec<Campaign>, CouponError> {
        let mut query = coupon::Entity::find();
        if let Some(after) = ending_after {
            query = query.filter(coupon::Column::ValidUntil.gt(after));
        }
        query
            .order_by_desc(coupon::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(campaign_from)
            .collect()
    }

    async fn record_issue(
        &self,
        campaign: &Campaign,
        user: UserId,
        number: u32,
        key: Option<&RequestKey>,
        now: DateTime<Utc>,
    ) -> Result<IssuedCoupon, RecordError> {
        fail::fail_point!("coupon::record_issue", |_| Err(RecordError::Failed(
            anyhow!("failpoint coupon::record_issue")
        )));
        if number == 0 || number > campaign.quantity {
            return Err(RecordError::Failed(anyhow!(
                "issue number {number} is outside 1..={}",
                campaign.quantity
            )));
        }
        let row = user_coupon::ActiveModel {
            coupon_id: Set(campaign.id.value()),
            user_id: Set(user.value()),
            issue_number: Set(i64::from(number)),
            status: Set(CouponStatus::Issued.as_str().into()),
            version: Set(0),
            // Keys live with every other request's keys now.
            issue_key: Set(None),
            issued_at: Set(now),
            used_at: Set(None),
            ..Default::default()
        };
        let (reply, answer) = oneshot::channel();
        self.writer()
            .send(PendingIssue {
                row,
                key: key.cloned(),
                reply,
            })
            .map_err(|_| RecordError::Failed(anyhow!("the coupon writer has stopped")))?;
        answer
            .await
            .map_err(|_| RecordError::Failed(anyhow!("the coupon writer dropped a winner")))?
    }

    async fn holders(&self, coupon: CouponId) -> Result<Vec<(UserId, u32)>, CouponError> {
        let rows: Vec<(i64, i64)> = user_coupon::Entity::find()
            .select_only()
            .column(user_coupon::Column::UserId)
            .column(user_coupon::Column::IssueNumber)
            .filter(user_coupon::Column::CouponId.eq(coupon.value()))
            .order_by_asc(user_coupon::Column::IssueNumber)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(user, number)| {
                u32::try_from(number)
                    .map(|n| (UserId(user), n))
                    .map_err(|_| anyhow!("coupon {coupon} has issue number {number}").into())
            })
            .collect()
    }

    async fn held_by(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> Result<Option<IssuedCoupon>, CouponError> {
        Ok(user_coupon::Entity::find()
            .filter(user_coupon::Column::CouponId.eq(coupon.value()))
            .filter(user_coupon::Column::UserId.eq(user.value()))
            .one(&self.db)
            .await?
            .map(issued_from))
    }

    async fn wallet_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<HeldCoupon>, CouponError> {
        let rows = user_coupon::Entity::find()
            .filter(user_coupon::Column::UserId.eq(user.value()))
            .order_by_desc(user_coupon::Column::Id)
            .limit(500)
            .all(&self.db)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.coupon_id).collect();
        let campaigns: std::collections::HashMap<i64, coupon::Model> = coupon::Entity::find()
            .filter(coupon::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        rows.into_iter()
            .map(|row| {
                let campaign = campaigns
                    .get(&row.coupon_id)
                    .ok_or_else(|| anyhow!("user coupon {} names no campaign", row.id))?;
                Ok(HeldCoupon {
                    id: UserCouponId(row.id),
                    coupon: CouponId(row.coupon_id),
                    name: campaign.name.clone(),
                    discount: campaign.discount,
                    number: u32::try_from(row.issue_number).unwrap_or(u32::MAX),
                    state: CouponState::of(
                        row.status == CouponStatus::Used.as_str(),
                        campaign.valid_until,
                        now,
                    ),
                    valid_until: campaign.valid_until,
                    issued_at: row.issued_at,
                })
            })
            .collect()
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>, CouponError> {
        coupon_job::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(job_from)
            .transpose()
    }

    async fn stats(&self, campaign: &Campaign) -> Result<(u64, u64, i64), CouponError> {
        let of_campaign = || {
            user_coupon::Entity::find()
                .filter(user_coupon::Column::CouponId.eq(campaign.id.value()))
        };
        let issued = of_campaign().count(&self.db).await?;
        let redeemed = of_campaign()
            .filter(user_coupon::Column::Status.eq(CouponStatus::Used.as_str()))
            .count(&self.db)
            .await?;
        let balance = vendor::Entity::find_by_id(campaign.vendor.value())
            .one(&self.db)
            .await?
            .map_or(0, |v| v.balance);
        Ok((issued, redeemed, balance))
    }
}

/// Finished redemption jobs past their retention (pending ones stay).
pub fn expiring_jobs(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "coupon_jobs",
        "coupon_jobs",
        "finished_at IS NOT NULL AND finished_at < {before}",
    )
}
