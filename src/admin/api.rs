use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
};

use super::{
    domain::{
        AdminError, AlertFilter, DEFAULT_ALERT_PAGE, MAX_ALERT_PAGE, Severity, WebhookStatus,
    },
    ports::AlertRepository,
    usecase::AlertService,
};
use crate::{
    auth::api::AdminAuth,
    kernel::{Clock, PageRequest},
    web::{
        ApiTags,
        guarded::Unguarded,
        paging::PageSize,
        problem::{AdminPage, AdminRead, ApiResult, Problem},
        reply::NewestFirst,
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
    /// The watchdog condition it stands for (e.g. `watchdog:payments-paid`);
    /// absent for one-off alerts.
    #[oai(skip_serializing_if_is_none)]
    pub condition: Option<String>,
    /// When its condition cleared (watchdog alerts only).
    #[oai(skip_serializing_if_is_none)]
    pub resolved_at: Option<DateTime<Utc>>,
    // (No doc comment: poem-openapi would wrap the enum's reference in an
    // `allOf` to carry it; the enum documents itself.)
    pub webhook: WebhookStatusBody,
    /// Posts to the webhook so far.
    pub webhook_attempts: i32,
}

/// Where an alert is on its way to the webhook.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "AlertWebhookStatus", rename_all = "snake_case")]
pub enum WebhookStatusBody {
    /// No webhook was configured when it was raised.
    None,
    /// Waiting for its next post.
    Queued,
    Delivered,
    /// The webhook refused it for a day; only the database has it.
    GaveUp,
}

impl From<WebhookStatus> for WebhookStatusBody {
    fn from(value: WebhookStatus) -> Self {
        match value {
            WebhookStatus::None => WebhookStatusBody::None,
            WebhookStatus::Queued => WebhookStatusBody::Queued,
            WebhookStatus::Delivered => WebhookStatusBody::Delivered,
            WebhookStatus::GaveUp => WebhookStatusBody::GaveUp,
        }
    }
}

#[derive(ApiResponse)]
enum AckAlertResponse {
    /// Acknowledged (acknowledging twice is fine).
    #[oai(status = 200)]
    Ok,
}

pub type AlertsApi<R, C> = Unguarded<AlertService<R, C>>;

#[OpenApi(tag = "ApiTags::Admin")]
impl<R: AlertRepository, C: Clock> AlertsApi<R, C> {
    /// List admin alerts.
    #[oai(path = "/v1/admin/alerts", method = "get", operation_id = "listAlerts")]
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
        limit: PageSize<MAX_ALERT_PAGE, DEFAULT_ALERT_PAGE>,
    ) -> ApiResult<NewestFirst<AlertBody>, AdminPage> {
        let filter = AlertFilter {
            acknowledged: acknowledged.0,
            severity: severity.0.map(Severity::from),
        };
        let asked = PageRequest::asked(after.0, limit.get());
        let alerts = self.service.list(filter, asked).await?;
        Ok(NewestFirst::page(alerts, |a| AlertBody {
            id: a.id,
            severity: a.severity.into(),
            source: a.source,
            message: a.message,
            created_at: a.created_at,
            acknowledged: a.acknowledged,
            condition: a.condition,
            resolved_at: a.resolved_at,
            webhook: a.webhook.into(),
            webhook_attempts: a.webhook_attempts,
        }))
    }

    /// Acknowledge an alert.
    #[oai(
        path = "/v1/admin/alerts/:id/ack",
        method = "post",
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
            AdminError::AlreadyOpen(_) => Problem::bug("admin store", &anyhow::anyhow!("{err}")),
            AdminError::Fault(fault) => Problem::fault("admin store", &fault),
        }
    }
}
