//! The wallet over HTTP.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Query},
    payload::Json,
};

use super::{
    domain::{EntryKind, MAX_PAGE, WalletError},
    ports::WalletPorts,
    usecase::WalletService,
};
use crate::{
    auth::api::UserAuth,
    kernel::PageRequest,
    web::{
        ApiTags,
        guarded::Guarded,
        idempotency::request_key,
        paging::PageSize,
        problem::{ApiResult, Problem, UserOnly, UserPage},
        reply::Success,
    },
};

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "Balance", rename_all = "camelCase")]
pub struct BalanceBody {
    pub balance: i64,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Charge", rename_all = "camelCase")]
pub struct ChargeBody {
    /// Points to add, 1 to 10,000,000.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub amount: i64,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "LedgerKind", rename_all = "lowercase")]
pub enum KindBody {
    Charge,
    Payment,
    Refund,
}

#[derive(Debug, Object)]
#[oai(rename = "LedgerEntry", rename_all = "camelCase")]
pub struct EntryBody {
    pub id: i64,
    pub kind: KindBody,
    /// Positive for charges and refunds, negative for payments.
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(
    rename = "LedgerPage",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct PageBody {
    pub items: Vec<EntryBody>,
    /// Pass as `after` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

#[derive(ApiResponse)]
enum ChargeResponse {
    /// Charged; the new balance.
    #[oai(status = 201)]
    Created(Json<BalanceBody>),
}

pub type WalletApi<P> = Guarded<WalletService<P>>;

crate::refusals! {
    ChargeRefusals {
        400: [validation_failed],
        401: [unauthorized],
        409: [balance_limit, idempotency_conflict],
        413: [payload_too_large],
        415: [unsupported_media_type],
        429: [rate_limited],
    }
}

#[OpenApi(tag = "ApiTags::Wallet")]
impl<P: WalletPorts> WalletApi<P> {
    /// Your balance.
    #[oai(path = "/v1/wallet", method = "get", operation_id = "getWallet")]
    async fn balance(&self, auth: UserAuth) -> ApiResult<Success<BalanceBody>, UserOnly> {
        let balance = self.service.balance(auth.0.user_id).await?;
        Ok(Success::json(BalanceBody {
            balance: balance.value(),
        }))
    }

    /// Add points. With `Idempotency-Key`, a retry replays the first answer.
    #[oai(
        path = "/v1/wallet/charges",
        method = "post",
        operation_id = "chargeWallet"
    )]
    async fn charge(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        body: Json<ChargeBody>,
        /// Makes retries safe: the same key and body charge once.
        #[oai(name = "Idempotency-Key")]
        key: Header<Option<String>>,
    ) -> ApiResult<ChargeResponse, ChargeRefusals> {
        let user = auth.0.user_id;
        self.guard.limit(user, req).await?;
        let key = request_key(user, "wallet.charge", key.0.as_deref(), &body.0)?;
        let balance = self
            .service
            .charge(user, body.0.amount, key.as_ref())
            .await?;
        Ok(ChargeResponse::Created(Json(BalanceBody {
            balance: balance.value(),
        })))
    }

    /// Your ledger, newest first.
    #[oai(
        path = "/v1/wallet/transactions",
        method = "get",
        operation_id = "walletTransactions"
    )]
    async fn transactions(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// The old name of `after`.
        #[oai(deprecated)]
        cursor: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_PAGE, 20>,
    ) -> ApiResult<Success<PageBody>, UserPage> {
        let asked = PageRequest::asked(after.0.or(cursor.0), limit.get());
        let page = self.service.transactions(auth.0.user_id, asked).await?;
        Ok(Success::json(PageBody {
            items: page
                .items
                .into_iter()
                .map(|e| EntryBody {
                    id: e.id,
                    kind: match e.kind {
                        EntryKind::Charge => KindBody::Charge,
                        EntryKind::Payment => KindBody::Payment,
                        EntryKind::Refund => KindBody::Refund,
                    },
                    amount: e.amount,
                    balance_after: e.balance_after.value(),
                    created_at: e.created_at,
                })
                .collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

impl From<WalletError> for Problem {
    fn from(err: WalletError) -> Self {
        match err {
            WalletError::InvalidAmount(detail) => Problem::validation(detail),
            WalletError::BalanceLimit => Problem::conflict("balance_limit", err.to_string()),
            WalletError::Fault(fault) => Problem::fault("wallet store", &fault),
        }
    }
}
