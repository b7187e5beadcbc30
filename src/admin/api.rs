use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{
    domain::{AdminError, AlertFilter, DEFAULT_ALERT_PAGE, MAX_ALERT_PAGE, Severity},
    ports::{AlertNotifier, AlertRepository},
    usecase::AlertService,
};
use crate::{
    auth::api::AdminAuth,
    kernel::Clock,
    web::{
        ApiTags,
        paging::PageBody,
        problem::{AdminPage, AdminRead, ApiResult, Problem},
    },
};

const _: () = assert!(DEFAULT_ALERT_PAGE == 100 && MAX_ALERT_PAGE == 500);

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "AlertSeverity", rename_all = "lowercase")]
pub enum SeverityBody {
    Info,
    Warning,
    Critical,
}

impl From<SeverityBody> for Severity {
    fn from(value: SeverityBody) -> Self {
        match value {
            SeverityBody::Info => Severity::Info,
            SeverityBody::Warning => Severity::Warning,
            SeverityBody::Critical => Severity::Critical,
        }
    }
}

impl From<Severity> for SeverityBody {
    fn from(value: Severity) -> Self {
        match value {
            Severity::Info => SeverityBody::Info,
            Severity::Warning => SeverityBody::Warning,
            Severity::Critical => SeverityBody::Critical,
        }
    }
}

#[derive(Debug, Object)]
#[oai(rename = "Alert", rename_all = "camelCase")]
pub struct AlertBody {
    pub id: i64,
    pub severity: SeverityBody,
    pub source: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub acknowledged: bool,
}

#[derive(ApiResponse)]
enum ListAlertsResponse {
    /// Newest first.
    #[oai(status = 200)]
    Ok(Json<PageBody<AlertBody>>),
}

#[derive(ApiResponse)]
enum AckAlertResponse {
    /// Acknowledged (acknowledging twice is fine).
    #[oai(status = 200)]
    Ok,
}

pub struct AlertsApi<R, N, C> {
    service: AlertService<R, N, C>,
}

impl<R, N, C> AlertsApi<R, N, C> {
    pub fn new(service: AlertService<R, N, C>) -> Self {
        Self { service }
    }
}

#[OpenApi]
impl<R: AlertRepository, N: AlertNotifier, C: Clock> AlertsApi<R, N, C> {
    /// List admin alerts.
    #[oai(
        path = "/v1/admin/alerts",
        method = "get",
        tag = "ApiTags::Admin",
        operation_id = "listAlerts"
    )]
    async fn list(
        &self,
        _auth: AdminAuth,
        /// Only acknowledged (`true`) or unacknowledged (`false`) alerts.
        acknowledged: Query<Option<bool>>,
        /// Only alerts of this severity.
        severity: Query<Option<SeverityBody>>,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> ApiResult<ListAlertsResponse, AdminPage> {
        let alerts = self
            .service
            .list(
                AlertFilter {
                    acknowledged: acknowledged.0,
                    severity: severity.0.map(Severity::from),
                },
                after.0,
                limit.0.unwrap_or(DEFAULT_ALERT_PAGE),
            )
            .await?;
        Ok(ListAlertsResponse::Ok(Json(PageBody::from_page(
            alerts,
            |a| AlertBody {
                id: a.id,
                severity: a.severity.into(),
                source: a.source,
                message: a.message,
                created_at: a.created_at,
                acknowledged: a.acknowledged,
            },
        ))))
    }

    /// Acknowledge an alert.
    #[oai(
        path = "/v1/admin/alerts/:id/ack",
        method = "post",
        tag = "ApiTags::Admin",
        operation_id = "ackAlert"
    )]
    async fn ack(&self, auth: AdminAuth, id: Path<i64>) -> ApiResult<AckAlertResponse, AdminRead> {
        self.service.acknowledge(id.0, auth.0.user_id).await?;
        Ok(AckAlertResponse::Ok)
    }
}

impl From<AdminError> for Problem {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::AlertNotFound(_) => Problem::not_found(err.to_string()),
            AdminError::Unavailable(cause) | AdminError::Conflict(cause) => {
                Problem::outage("admin store", &cause)
            }
            AdminError::Unexpected(cause) => Problem::bug("admin store", &cause),
        }
    }
}
