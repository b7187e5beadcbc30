//! RFC 9457 problem details: the one error shape every endpoint answers with.

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

/// Documents every operation's error answers as problem+json (4XX and 5XX).
impl ApiResponse for Problem {
    fn meta() -> MetaResponses {
        let content = || {
            vec![MetaMediaType {
                content_type: PROBLEM_JSON,
                schema: <Problem as Type>::schema_ref(),
            }]
        };
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The request was refused; `code` says why.",
                    status: None,
                    status_range: Some("4XX".to_owned()),
                    content: content(),
                    headers: vec![],
                },
                MetaResponse {
                    description: "The server or one of its dependencies failed; retry after `Retry-After` seconds when present.",
                    status: None,
                    status_range: Some("5XX".to_owned()),
                    content: content(),
                    headers: vec![MetaHeader {
                        name: "Retry-After".to_owned(),
                        description: Some("Seconds to wait before retrying.".to_owned()),
                        required: false,
                        deprecated: false,
                        schema: <u32 as Type>::schema_ref(),
                    }],
                },
            ],
        }
    }

    fn register(registry: &mut Registry) {
        <Problem as Type>::register(registry);
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
}
