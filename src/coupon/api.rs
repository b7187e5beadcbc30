//! Coupons over HTTP: the admin's campaigns and vendors, the users' issue
//! and redemption calls, and the polled redemption jobs.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{
    domain::{
        CampaignDraft, CampaignStats, CouponError, CouponState, DEFAULT_PAGE, HeldCoupon,
        JobStatus, MAX_DISCOUNT, MAX_NAME_LEN, MAX_PAGE, MAX_QUANTITY, ReconcileReport, Vendor,
    },
    ports::CouponPorts,
    usecase::CouponService,
};
use crate::{
    auth::api::{AdminAuth, UserAuth},
    kernel::{CouponId, PageRequest, UserCouponId},
    web::{
        ApiTags,
        guarded::{Guarded, Unguarded},
        idempotency::request_key,
        paging::{PageBody, PageSize},
        problem::{AdminCreate, AdminPage, AdminRead, ApiResult, Problem, UserPage, UserRead},
        reply::{Created, Success},
        strict::JsonString,
    },
};

/// How long a client should wait before polling a redemption job.
const JOB_POLL_SECONDS: u32 = 1;

#[derive(Debug, Object)]
#[oai(rename = "CreateVendor", rename_all = "camelCase")]
pub struct CreateVendorBody {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: JsonString,
}

#[derive(Debug, Object)]
#[oai(rename = "Vendor", rename_all = "camelCase")]
pub struct VendorBody {
    pub id: i64,
    pub name: String,
    /// Points paid out for redeemed coupons.
    pub balance: i64,
}

#[derive(Debug, Object)]
#[oai(rename = "CreateCoupon", rename_all = "camelCase")]
pub struct CreateCouponBody {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: JsonString,
    /// The coupon's value in points, paid to the vendor when it is used.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub discount: i64,
    /// How many coupons exist; never more are issued.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub quantity: i64,
    /// Issuing and using start here (RFC 3339).
    pub valid_from: DateTime<Utc>,
    /// ...and end here; must be after `validFrom`.
    pub valid_until: DateTime<Utc>,
    pub vendor_id: i64,
}

#[derive(Debug, Object)]
#[oai(rename = "CouponCreated", rename_all = "camelCase")]
pub struct CouponCreatedBody {
    pub id: i64,
    pub name: String,
    pub quantity: i64,
}

#[derive(Debug, Object)]
#[oai(
    rename = "CouponStats",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct CouponStatsBody {
    pub id: i64,
    pub name: String,
    pub discount: i64,
    pub quantity: i64,
    /// Coupons held by users (database rows).
    pub issued: u64,
    pub redeemed: u64,
    pub remaining: u64,
    pub vendor_id: i64,
    pub vendor_balance: i64,
    /// What the issue ledger counts; absent when it is not loaded. Differs
    /// from `issued` only while winners are being written or before the
    /// reconciler repaired a drift.
    pub ledger_issued: Option<u64>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(rename = "ReconcileReport", rename_all = "camelCase")]
pub struct ReconcileBody {
    /// The ledger was missing and was rebuilt from the database.
    pub rebuilt: bool,
    /// Holders the ledger had lost, added back.
    pub added: Vec<i64>,
    /// Orphan ledger entries (no row, older than the grace period) removed.
    pub removed: Vec<i64>,
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "CouponIssued", rename_all = "camelCase")]
pub struct IssuedBody {
    pub user_coupon_id: i64,
    /// 1..quantity, unique within the campaign.
    pub issue_number: u32,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "CouponState", rename_all = "lowercase")]
pub enum StateBody {
    Issued,
    Used,
    Expired,
}

#[derive(Debug, Object)]
#[oai(rename = "UserCoupon", rename_all = "camelCase")]
pub struct UserCouponBody {
    pub id: i64,
    pub coupon_id: i64,
    pub name: String,
    pub discount: i64,
    pub issue_number: u32,
    pub status: StateBody,
    pub valid_until: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "CouponJobAccepted", rename_all = "camelCase")]
pub struct JobAcceptedBody {
    pub job_id: Uuid,
    pub poll_after_seconds: u32,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "CouponJobStatus", rename_all = "lowercase")]
pub enum JobStatusBody {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Object)]
#[oai(
    rename = "CouponJob",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct JobBody {
    pub job_id: Uuid,
    pub user_coupon_id: i64,
    pub status: JobStatusBody,
    /// Why it failed: `not_your_coupon`, `already_used`, `expired` or
    /// `not_started`.
    pub reason: Option<String>,
    /// A sentence to show the user once the job is finished.
    pub message: Option<String>,
    /// Poll again after this long while `pending`.
    pub poll_after_seconds: u32,
}

#[derive(ApiResponse)]
enum IssueResponse {
    /// You won: the coupon is yours.
    #[oai(status = 201)]
    Created(Json<IssuedBody>),
}

#[derive(ApiResponse)]
enum RedemptionResponse {
    /// Accepted: poll `GET /v1/coupon-jobs/{jobId}`.
    #[oai(status = 202)]
    Accepted(Json<JobAcceptedBody>),
}

pub type CouponApi<P> = Guarded<CouponService<P>>;
pub type CouponAdminApi<P> = Unguarded<CouponService<P>>;

fn vendor_body(vendor: Vendor) -> VendorBody {
    VendorBody {
        id: vendor.id.value(),
        name: vendor.name,
        balance: vendor.balance,
    }
}

fn stats_body(stats: CampaignStats) -> CouponStatsBody {
    let c = stats.campaign;
    CouponStatsBody {
        id: c.id.value(),
        name: c.name,
        discount: c.discount,
        quantity: i64::from(c.quantity),
        issued: stats.issued,
        redeemed: stats.redeemed,
        remaining: u64::from(c.quantity).saturating_sub(stats.issued),
        vendor_id: c.vendor.value(),
        vendor_balance: stats.vendor_balance,
        ledger_issued: stats.ledger_issued,
        valid_from: c.valid_from,
        valid_until: c.valid_until,
    }
}

fn held_body(coupon: HeldCoupon) -> UserCouponBody {
    UserCouponBody {
        id: coupon.id.value(),
        coupon_id: coupon.coupon.value(),
        name: coupon.name,
        discount: coupon.discount,
        issue_number: coupon.number,
        status: match coupon.state {
            CouponState::Issued => StateBody::Issued,
            CouponState::Used => StateBody::Used,
            CouponState::Expired => StateBody::Expired,
        },
        valid_until: coupon.valid_until,
        issued_at: coupon.issued_at,
    }
}

fn report_body(report: ReconcileReport) -> ReconcileBody {
    ReconcileBody {
        rebuilt: report.rebuilt,
        added: report.added.iter().map(|u| u.value()).collect(),
        removed: report.removed.iter().map(|u| u.value()).collect(),
    }
}

crate::refusals! {
    IssueRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [coupon_not_started, coupon_ended, sold_out, already_issued, idempotency_conflict],
        429: [rate_limited],
    }
    RedeemRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [idempotency_conflict],
        429: [rate_limited],
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl<P: CouponPorts> CouponAdminApi<P> {
    /// Create a vendor (who is paid when its coupons are used).
    #[oai(
        path = "/v1/admin/vendors",
        method = "post",
        operation_id = "createVendor"
    )]
    async fn create_vendor(
        &self,
        auth: AdminAuth,
        body: Json<CreateVendorBody>,
    ) -> ApiResult<Created<VendorBody>, AdminCreate> {
        let vendor = self
            .service
            .create_vendor(&body.0.name.0, auth.0.user_id)
            .await?;
        Ok(Created::Created(Json(vendor_body(vendor))))
    }

    /// Vendors and their balances, oldest first, a page at a time.
    #[oai(
        path = "/v1/admin/vendors",
        method = "get",
        operation_id = "listVendors"
    )]
    async fn list_vendors(
        &self,
        _auth: AdminAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        limit: PageSize<MAX_PAGE, DEFAULT_PAGE>,
    ) -> ApiResult<Success<PageBody<VendorBody>>, AdminPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.vendors(asked).await?;
        Ok(Success::page(page, vendor_body))
    }

    /// Create a coupon campaign.
    #[oai(
        path = "/v1/admin/coupons",
        method = "post",
        operation_id = "createCoupon"
    )]
    async fn create_coupon(
        &self,
        auth: AdminAuth,
        body: Json<CreateCouponBody>,
    ) -> ApiResult<Created<CouponCreatedBody>, AdminCreate> {
        let body = body.0;
        let draft = CampaignDraft::parse(
            &body.name.0,
            body.discount,
            body.quantity,
            body.valid_from,
            body.valid_until,
            body.vendor_id,
        )?;
        let campaign = self.service.create_campaign(draft, auth.0.user_id).await?;
        Ok(Created::Created(Json(CouponCreatedBody {
            id: campaign.id.value(),
            name: campaign.name,
            quantity: i64::from(campaign.quantity),
        })))
    }

    /// Campaigns, newest first, with their issued / redeemed / remaining
    /// counts, a page at a time.
    #[oai(
        path = "/v1/admin/coupons",
        method = "get",
        operation_id = "listCoupons"
    )]
    async fn list_coupons(
        &self,
        _auth: AdminAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        limit: PageSize<MAX_PAGE, DEFAULT_PAGE>,
    ) -> ApiResult<Success<PageBody<CouponStatsBody>>, AdminPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.campaigns(asked).await?;
        Ok(Success::page(page, stats_body))
    }

    /// One campaign: issued, remaining, redeemed, the vendor's balance and
    /// the ledger's own count.
    #[oai(
        path = "/v1/admin/coupons/:id",
        method = "get",
        operation_id = "getCoupon"
    )]
    async fn coupon_stats(
        &self,
        _auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<CouponStatsBody>, AdminRead> {
        let stats = self.service.stats(CouponId(id.0)).await?;
        Ok(Success::json(stats_body(stats)))
    }

    /// Make the issue ledger agree with the database now (the reconciler
    /// also runs on its own), and say what was repaired.
    #[oai(
        path = "/v1/admin/coupons/:id/reconcile",
        method = "post",
        operation_id = "reconcileCoupon"
    )]
    async fn reconcile(
        &self,
        _auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<ReconcileBody>, AdminRead> {
        let report = self.service.reconcile(CouponId(id.0)).await?;
        Ok(Success::json(report_body(report)))
    }
}

#[OpenApi(tag = "ApiTags::Coupons")]
impl<P: CouponPorts> CouponApi<P> {
    /// Claim a coupon: first come, first served, one per user. With
    /// `Idempotency-Key`, a retry of the winning request gets the same
    /// answer; otherwise asking again is 409 `already_issued`.
    #[oai(
        path = "/v1/coupons/:id/issue",
        method = "post",
        operation_id = "issueCoupon"
    )]
    async fn issue(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        id: Path<i64>,
        /// Makes retries safe: the winning request's key replays its answer.
        #[oai(name = "Idempotency-Key")]
        key: Header<Option<String>>,
    ) -> ApiResult<IssueResponse, IssueRefusals> {
        let user = auth.0.user_id;
        self.guard.limit(user, req).await?;
        let key = request_key(user, "coupon.issue", key.0.as_deref(), &id.0)?;
        let issued = self
            .service
            .issue(CouponId(id.0), user, key.as_ref())
            .await?;
        Ok(IssueResponse::Created(Json(IssuedBody {
            user_coupon_id: issued.user_coupon.value(),
            issue_number: issued.number,
        })))
    }

    /// Your coupons and their state (`issued`, `used`, `expired`), newest
    /// first, a page at a time.
    #[oai(
        path = "/v1/users/me/coupons",
        method = "get",
        operation_id = "myCoupons"
    )]
    async fn my_coupons(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        limit: PageSize<MAX_PAGE, DEFAULT_PAGE>,
    ) -> ApiResult<Success<PageBody<UserCouponBody>>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.wallet_of(auth.0.user_id, asked).await?;
        Ok(Success::page(page, held_body))
    }

    /// Use a coupon. Answers at once with a job to poll; the job fails with
    /// a reason if the coupon is not yours, already used or expired.
    #[oai(
        path = "/v1/user-coupons/:id/redemptions",
        method = "post",
        operation_id = "redeemCoupon"
    )]
    async fn redeem(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        id: Path<i64>,
        /// Makes retries safe: the same key answers the same job.
        #[oai(name = "Idempotency-Key")]
        key: Header<Option<String>>,
    ) -> ApiResult<RedemptionResponse, RedeemRefusals> {
        let user = auth.0.user_id;
        self.guard.limit(user, req).await?;
        let key = request_key(user, "coupon.redeem", key.0.as_deref(), &id.0)?;
        let job = self
            .service
            .request_redemption(user, UserCouponId(id.0), key.as_ref())
            .await?;
        Ok(RedemptionResponse::Accepted(Json(JobAcceptedBody {
            job_id: job,
            poll_after_seconds: JOB_POLL_SECONDS,
        })))
    }

    /// A redemption job of yours: `pending` until the worker decided it.
    #[oai(
        path = "/v1/coupon-jobs/:job_id",
        method = "get",
        operation_id = "getCouponJob"
    )]
    async fn job(
        &self,
        auth: UserAuth,
        job_id: Path<Uuid>,
    ) -> ApiResult<Success<JobBody>, UserRead> {
        let job = self.service.job(auth.0.user_id, job_id.0).await?;
        let message = match (job.status, job.reason) {
            (JobStatus::Pending, _) => None,
            (JobStatus::Succeeded, _) => Some("Coupon used. Enjoy!".to_owned()),
            (JobStatus::Failed, Some(reason)) => Some(reason.message().to_owned()),
            (JobStatus::Failed, None) => Some("The coupon could not be used.".to_owned()),
        };
        Ok(Success::json(JobBody {
            job_id: job.id,
            user_coupon_id: job.user_coupon.value(),
            status: match job.status {
                JobStatus::Pending => JobStatusBody::Pending,
                JobStatus::Succeeded => JobStatusBody::Succeeded,
                JobStatus::Failed => JobStatusBody::Failed,
            },
            reason: job.reason.map(|r| r.code().to_owned()),
            message,
            poll_after_seconds: JOB_POLL_SECONDS,
        }))
    }
}

impl From<CouponError> for Problem {
    fn from(err: CouponError) -> Self {
        match err {
            CouponError::Invalid(detail) => Problem::validation(detail),
            CouponError::NotFound | CouponError::JobNotFound => Problem::not_found(err.to_string()),
            CouponError::VendorNotFound => Problem::validation("vendorId names no vendor"),
            CouponError::NotStarted => Problem::conflict("coupon_not_started", err.to_string()),
            CouponError::Ended => Problem::conflict("coupon_ended", err.to_string()),
            CouponError::SoldOut => Problem::conflict("sold_out", err.to_string()),
            CouponError::AlreadyIssued => Problem::conflict("already_issued", err.to_string()),
            CouponError::Fault(fault) => Problem::fault("coupon store", &fault),
        }
    }
}

// Keep the documented limits and the domain's limits in one place of truth.
const _: () = {
    assert!(MAX_NAME_LEN == 200);
    assert!(MAX_DISCOUNT == 10_000_000);
    assert!(MAX_QUANTITY == 1_000_000);
    assert!(DEFAULT_PAGE == 50 && MAX_PAGE == 200);
};
