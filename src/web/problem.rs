//! RFC 9457 problem details: the one error shape every endpoint answers with.

use std::{
    collections::{HashMap, HashSet},
    marker::PhantomData,
};

use chrono::{DateTime, Utc};
use poem::{
    IntoResponse, Response,
    error::ResponseError,
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{ToJSON, Type},
};

use crate::kernel::Fault;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, for people (`title`, `detail`) and for programs
/// (`code`, stable across releases).
#[derive(Debug, Clone, PartialEq, Eq, Object, thiserror::Error)]
#[oai(rename = "Problem", rename_all = "camelCase")]
#[error("{status} {code}: {detail}")]
pub struct Problem {
    /// A URI naming the problem type.
    #[oai(rename = "type")]
    pub type_uri: String,
    /// The HTTP reason phrase.
    pub title: String,
    pub status: u16,
    /// What happened, in words meant for the person who sent the request.
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `seat_unavailable`.
    pub code: String,
    /// Seconds after which a retry may succeed (also sent as `Retry-After`).
    #[oai(skip_serializing_if_is_none)]
    pub retry_after_seconds: Option<u32>,
    /// What some codes tell besides (`seats`, `gate`, `at`), as fields of
    /// the problem; boxed together, so the error stays small.
    #[oai(flatten)]
    pub details: Option<Box<ProblemDetails>>,
}

/// The fields only some problems carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Object)]
#[oai(rename = "ProblemDetails", rename_all = "camelCase")]
pub struct ProblemDetails {
    /// With `seat_unavailable`: the seats someone else holds or bought.
    #[oai(skip_serializing_if_is_none)]
    pub seats: Option<Vec<i64>>,
    /// With `already_checked_in`: the gate of the first scan.
    #[oai(skip_serializing_if_is_none)]
    pub gate: Option<String>,
    /// With `already_checked_in`: the time of the first scan.
    #[oai(skip_serializing_if_is_none)]
    pub at: Option<DateTime<Utc>>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:boxoffice:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            retry_after_seconds: None,
            details: None,
        }
    }

    /// The problem with the fields its code tells besides.
    pub fn with(self, details: ProblemDetails) -> Self {
        Self {
            details: Some(Box::new(details)),
            ..self
        }
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A dependency (database, Redis) is down; the client should retry soon.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        }
    }

    /// A bug or an unexpected failure. The cause is logged by the caller,
    /// never sent to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; it has been logged",
        )
    }

    /// 429 `rate_limited` with `Retry-After`: `wait` rounded up to whole
    /// seconds, at least one.
    pub fn rate_limited(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
        Self {
            retry_after_seconds: Some(seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// A store `component` depends on is down: logged as a warning,
    /// answered 503 with `Retry-After`.
    pub fn outage(component: &str, cause: &anyhow::Error) -> Self {
        tracing::warn!(error = %cause, "{component} unavailable");
        Self::unavailable(format!("the {component} is unavailable; retry shortly"))
    }

    /// A bug or unexpected failure in `component`: logged with its cause,
    /// answered 500 without it.
    pub fn bug(component: &str, cause: &anyhow::Error) -> Self {
        tracing::error!(error = ?cause, "{component} failed");
        Self::internal()
    }

    /// The answer to a failure outside a module's rules, in `component`:
    /// 409 `idempotency_conflict` for a reused key, 503 for an outage or a
    /// conflict that outlasted its retries, 500 (logged) for the rest.
    pub fn fault(component: &str, fault: &Fault) -> Self {
        match fault {
            Fault::KeyReused => Self::conflict("idempotency_conflict", fault.to_string()),
            Fault::Unavailable(cause) | Fault::Conflict(cause) => Self::outage(component, cause),
            Fault::Unexpected(cause) => Self::bug(component, cause),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl ResponseError for Problem {
    fn status(&self) -> StatusCode {
        self.status_code()
    }

    fn as_response(&self) -> Response {
        let mut builder = Response::builder()
            .status(self.status_code())
            .content_type(PROBLEM_JSON);
        if let Some(seconds) = self.retry_after_seconds {
            builder = builder.header(header::RETRY_AFTER, seconds);
        }
        if self.status == StatusCode::UNAUTHORIZED.as_u16() {
            builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
        }
        builder.body(self.to_json_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

/// One error status an operation can answer, with the `code`s it uses.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub status: u16,
    pub codes: &'static [&'static str],
    /// Written by [`refusals!`]: the codes, each in backticks.
    pub description: &'static str,
}

/// The problems one operation (or a family of alike operations) can
/// answer, declared next to it with [`refusals!`] and documented in its
/// OpenAPI entry status by status. `500 internal` and `503 unavailable`
/// (with `Retry-After`) are added to every set.
pub trait Refusals: Send + Sync + 'static {
    const REFUSALS: &'static [Refusal];
}

/// Declares a [`Refusals`] set:
///
/// ```ignore
/// refusals! {
///     /// Holding a seat.
///     pub HoldRefusals {
///         400: [validation_failed],
///         409: [seat_unavailable, hold_limit],
///     }
/// }
/// ```
#[macro_export]
macro_rules! refusals {
    ($(
        $(#[$doc:meta])*
        $vis:vis $name:ident { $($status:literal : [$first:ident $(, $rest:ident)* $(,)?]),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        $vis enum $name {}

        impl $crate::web::problem::Refusals for $name {
            const REFUSALS: &'static [$crate::web::problem::Refusal] = &[$(
                $crate::web::problem::Refusal {
                    status: $status,
                    codes: &[stringify!($first) $(, stringify!($rest))*],
                    description: concat!(
                        "Refused; `code`: `", stringify!($first), "`" $(, ", `", stringify!($rest), "`")*
                    ),
                },
            )*];
        }
    )*};
}

refusals! {
    /// Needs nothing that can be refused (only `500`/`503`).
    pub Unrefused {}
    /// A user's own resource without parameters.
    pub UserOnly {
        401: [unauthorized],
    }
    /// A page of a user's own things.
    pub UserPage {
        400: [validation_failed],
        401: [unauthorized],
    }
    /// One of a user's own things, by id.
    pub UserRead {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
    }
    /// An operator's view without parameters.
    pub AdminOnly {
        401: [unauthorized],
        403: [forbidden],
    }
    /// A page of an operator's list.
    pub AdminPage {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
    }
    /// One thing an operator names by id.
    pub AdminRead {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
        404: [not_found],
    }
    /// An operator creating something from a JSON body.
    pub AdminCreate {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
        413: [payload_too_large],
        415: [unsupported_media_type],
    }
}

/// The error half of an operation's result: a [`Problem`] whose possible
/// statuses and codes the operation declares with `R` (see [`refusals!`]),
/// so a generated client knows that holding a seat can answer 409
/// `seat_unavailable`. Anything that converts into a `Problem` converts
/// into this, so `?` works as before.
pub struct Refused<R>(pub Problem, PhantomData<fn() -> R>);

pub type ApiResult<T, R> = Result<T, Refused<R>>;

impl<R> std::fmt::Debug for Refused<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R, E: Into<Problem>> From<E> for Refused<R> {
    fn from(err: E) -> Self {
        Self(err.into(), PhantomData)
    }
}

impl<R> From<Refused<R>> for poem::Error {
    fn from(refused: Refused<R>) -> Self {
        refused.0.into()
    }
}

impl<R> IntoResponse for Refused<R> {
    fn into_response(self) -> Response {
        self.0.as_response()
    }
}

fn problem_content() -> Vec<MetaMediaType> {
    vec![MetaMediaType {
        content_type: PROBLEM_JSON,
        schema: <Problem as Type>::schema_ref(),
    }]
}

fn retry_after() -> MetaHeader {
    MetaHeader {
        name: "Retry-After".to_owned(),
        description: Some("Seconds to wait before retrying.".to_owned()),
        required: false,
        deprecated: false,
        schema: <u32 as Type>::schema_ref(),
    }
}

/// Every operation's errors, in status order, as problem+json.
pub fn refusal_responses(refusals: &[Refusal]) -> MetaResponses {
    let mut responses: Vec<MetaResponse> = refusals
        .iter()
        .map(|r| MetaResponse {
            description: r.description,
            status: Some(r.status),
            status_range: None,
            content: problem_content(),
            headers: if r.status == 429 {
                vec![retry_after()]
            } else {
                vec![]
            },
        })
        .collect();
    responses.push(MetaResponse {
        description: "A bug or an unexpected failure, logged by the server; `code`: `internal`",
        status: Some(500),
        status_range: None,
        content: problem_content(),
        headers: vec![],
    });
    responses.push(MetaResponse {
        description: "A dependency (database, Redis) is down; retry after the `Retry-After` header's seconds; `code`: `unavailable`",
        status: Some(503),
        status_range: None,
        content: problem_content(),
        headers: vec![retry_after()],
    });
    responses.sort_by_key(|r| r.status);
    MetaResponses { responses }
}

impl<R: Refusals> ApiResponse for Refused<R> {
    fn meta() -> MetaResponses {
        refusal_responses(R::REFUSALS)
    }

    fn register(registry: &mut Registry) {
        <Problem as Type>::register(registry);
    }
}

/// Adds `code` to what `operation` (an OpenAPI operation object whose
/// errors [`Refused`] wrote) documents answering at `status`, for a refusal
/// made before its handler runs (a security scheme's checker). The status
/// keeps its place among the responses.
pub fn document_refusal(operation: &mut serde_json::Value, status: u16, code: &str) {
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let key = status.to_string();
    if let Some(description) = responses
        .get_mut(&key)
        .and_then(|response| response.get_mut("description"))
    {
        let listed = description.as_str().unwrap_or_default();
        if !listed.split('`').skip(1).step_by(2).any(|c| c == code) {
            *description = format!("{listed}, `{code}`").into();
        }
        return;
    }
    let at = responses
        .keys()
        .position(|other| other.as_str() > key.as_str())
        .unwrap_or(responses.len());
    responses.shift_insert(
        at,
        key,
        serde_json::json!({
            "description": format!("Refused; `code`: `{code}`"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }),
    );
}

/// Where the documented refusals are checked against what is answered:
/// every operation's statuses and codes as the served document lists them.
#[derive(Debug, Default)]
pub struct Documented {
    operations: HashMap<String, HashMap<u16, HashSet<String>>>,
}

impl Documented {
    /// Reads the error responses of every operation of an OpenAPI document
    /// written from [`Refused`] (codes are the backticked words of each
    /// response's description).
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let mut operations = HashMap::new();
        let ops = spec
            .get("paths")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flat_map(|paths| paths.values())
            .filter_map(serde_json::Value::as_object)
            .flat_map(|methods| methods.values());
        for op in ops {
            let Some(id) = op.get("operationId").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let mut statuses: HashMap<u16, HashSet<String>> = HashMap::new();
            for (status, response) in op
                .get("responses")
                .and_then(serde_json::Value::as_object)
                .into_iter()
                .flatten()
            {
                let Ok(status) = status.parse::<u16>() else {
                    continue;
                };
                let description = response
                    .get("description")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let codes = description
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
                statuses.insert(status, codes);
            }
            operations.insert(id.to_owned(), statuses);
        }
        Self { operations }
    }

    /// Whether `operation` documents answering `status` with `code`
    /// (an operation the document does not know is not checked).
    pub fn allows(&self, operation: &str, status: u16, code: &str) -> bool {
        match self.operations.get(operation) {
            None => true,
            Some(statuses) => statuses
                .get(&status)
                .is_some_and(|codes| codes.contains(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_problem_json_with_retry_after() {
        let resp = Problem::unavailable("database is down").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value =
            serde_json::from_str(&resp.into_body().into_string().await.unwrap()).unwrap();
        assert_eq!(body["code"], "unavailable");
        assert_eq!(body["status"], 503);
        assert_eq!(body["type"], "urn:boxoffice:problem:unavailable");
        assert_eq!(body["retryAfterSeconds"], 1);
    }

    #[test]
    fn a_refusal_documented_afterwards_joins_its_status_or_adds_it_in_order() {
        let problem =
            serde_json::json!({PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}});
        let mut op = serde_json::json!({"operationId": "op", "responses": {
            "200": {"description": ""},
            "401": {"description": "Refused; `code`: `unauthorized`", "content": problem},
            "409": {"description": "Refused; `code`: `taken`", "content": problem},
        }});
        document_refusal(&mut op, 403, "forbidden");
        document_refusal(&mut op, 409, "forbidden");
        document_refusal(&mut op, 409, "taken");
        let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["200", "401", "403", "409"]);
        assert_eq!(op["responses"]["403"]["content"], problem);
        let documented =
            Documented::from_spec(&serde_json::json!({"paths": {"/x": {"get": op.clone()}}}));
        assert!(documented.allows("op", 403, "forbidden"));
        assert!(documented.allows("op", 409, "forbidden"));
        assert!(documented.allows("op", 409, "taken"));
        assert_eq!(
            op["responses"]["409"]["description"],
            "Refused; `code`: `taken`, `forbidden`"
        );
    }
}
