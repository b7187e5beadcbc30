//! `GET /v1/users/me/notifications`: what the listeners told the user.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Query, payload::Json};
use sea_orm::DatabaseConnection;

use super::infra::notifications;
use crate::{
    auth::api::UserAuth,
    web::{ApiTags, problem::Problem},
};

#[derive(Debug, Object)]
#[oai(rename = "Notification", rename_all = "camelCase")]
pub struct NotificationBody {
    pub id: i64,
    /// `reservation_confirmed`, `reservation_expired`, `payment_refunded`, …
    pub kind: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(
    rename = "NotificationPage",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct PageBody {
    pub items: Vec<NotificationBody>,
    /// Pass as `after` next time; the same cursor when nothing is new.
    pub next_cursor: Option<i64>,
}

#[derive(ApiResponse)]
enum PageResponse {
    #[oai(status = 200)]
    Ok(Json<PageBody>),
}

pub struct NotificationsApi {
    db: DatabaseConnection,
}

impl NotificationsApi {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[OpenApi]
impl NotificationsApi {
    /// Your notifications, oldest first, after a cursor.
    #[oai(
        path = "/v1/users/me/notifications",
        method = "get",
        tag = "ApiTags::Notifications",
        operation_id = "listNotifications"
    )]
    async fn list(
        &self,
        auth: UserAuth,
        /// The `nextCursor` of the previous answer.
        after: Query<Option<i64>>,
        /// At most this many (1–100, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u64>>,
    ) -> Result<PageResponse, Problem> {
        let items = notifications::list(&self.db, auth.0.user_id, after.0, limit.0.unwrap_or(50))
            .await
            .map_err(|err| {
                if crate::db::is_outage(&err) {
                    Problem::outage("notification store", &err.into())
                } else {
                    Problem::bug("notification store", &err.into())
                }
            })?;
        let next_cursor = items.last().map(|n| n.id).or(after.0);
        Ok(PageResponse::Ok(Json(PageBody {
            items: items
                .into_iter()
                .map(|n| NotificationBody {
                    id: n.id,
                    kind: n.kind,
                    message: n.message,
                    created_at: n.created_at,
                })
                .collect(),
            next_cursor,
        })))
    }
}
