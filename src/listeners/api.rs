//! `GET /v1/users/me/notifications`: what the listeners told the user.

use super::{
    ports::NotificationRepository,
    usecase::{MAX_NOTIFICATION_PAGE, NotificationService},
};
use crate::{
    auth::api::UserAuth,
    kernel::PageRequest,
    web::{
        ApiTags,
        guarded::Unguarded,
        paging::PageSize,
        problem::{ApiResult, Problem, UserPage},
        reply::Success,
    },
};
use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, param::Query};

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

pub type NotificationsApi<R> = Unguarded<NotificationService<R>>;

#[OpenApi(tag = "ApiTags::Notifications")]
impl<R: NotificationRepository> NotificationsApi<R> {
    /// Your notifications, oldest first, after a cursor.
    #[oai(
        path = "/v1/users/me/notifications",
        method = "get",
        operation_id = "listNotifications"
    )]
    async fn list(
        &self,
        auth: UserAuth,
        /// The `nextCursor` of the previous answer.
        after: Query<Option<i64>>,
        /// At most this many (1–100, default 50).
        limit: PageSize<MAX_NOTIFICATION_PAGE, 50>,
    ) -> ApiResult<Success<PageBody>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self
            .service
            .page(auth.0.user_id, asked)
            .await
            .map_err(|err| Problem::fault("notification store", &err.into()))?;
        Ok(Success::json(PageBody {
            items: page
                .items
                .into_iter()
                .map(|n| NotificationBody {
                    id: n.id,
                    kind: n.kind,
                    message: n.message,
                    created_at: n.created_at,
                })
                .collect(),
            next_cursor: page.next_cursor,
        }))
    }
}
