//! Cross-cutting HTTP behaviour: every error becomes problem+json, request
//! bodies are bounded, and every request is measured.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{
    Body, Endpoint, IntoResponse, Middleware, Request, Response, Result,
    error::{MethodNotAllowedError, NotFoundError, ParseJsonError, ReadBodyError, SizedLimitError},
    http::{StatusCode, header},
};
use poem_openapi::{
    OperationId,
    error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    },
};

use super::problem::{Documented, Problem};

/// Turns any error that reaches the edge into a problem+json response.
/// Client mistakes keep their explanation; server failures are logged and
/// answered without internals.
pub fn error_to_problem(err: poem::Error) -> Problem {
    if let Some(problem) = err.downcast_ref::<Problem>() {
        return problem.clone();
    }
    let detail = err.to_string();
    if err.is::<ParseRequestPayloadError>()
        || err.is::<ParseParamError>()
        || err.is::<ParsePathError>()
        || err.is::<ParseJsonError>()
    {
        return Problem::validation(detail);
    }
    if err.is::<AuthorizationError>() {
        return Problem::unauthorized("a valid bearer token is required");
    }
    if err.is::<NotFoundError>() {
        return Problem::not_found("no such resource");
    }
    if err.is::<MethodNotAllowedError>() {
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this resource does not support that method",
        );
    }
    if err.is::<ContentTypeError>() {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        );
    }
    if matches!(
        err.downcast_ref::<SizedLimitError>(),
        Some(SizedLimitError::PayloadTooLarge)
    ) || matches!(
        err.downcast_ref::<ReadBodyError>(),
        Some(ReadBodyError::PayloadTooLarge)
    ) {
        return payload_too_large();
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %err, %status, "request failed");
        return Problem::internal();
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "validation_failed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "bad_request",
    };
    Problem::new(status, code, detail)
}

fn payload_too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts",
    )
}

/// Renders an error as problem+json, keeping the operation id so metrics can
/// still label the request. With `documented` (debug builds), a problem the
/// operation's OpenAPI entry does not list is a bug: it is logged and
/// answered 500, so tests and schemathesis catch the missing entry.
fn render_error(err: poem::Error, documented: Option<&Documented>) -> Response {
    let operation = err.data::<OperationId>().map(|op| OperationId(op.0));
    let mut problem = error_to_problem(err);
    if let (Some(documented), Some(operation)) = (documented, &operation)
        && !documented.allows(operation.0, problem.status, &problem.code)
    {
        tracing::error!(
            operation = operation.0,
            status = problem.status,
            code = %problem.code,
            "an answer the operation's OpenAPI entry does not document; add it to its refusals"
        );
        problem = Problem::internal();
    }
    let mut resp = problem.into_response();
    if let Some(operation) = operation {
        resp.set_data(operation);
    }
    resp
}

/// Refuses request bodies over `max_bytes` with 413 as soon as they
/// stream past it, whatever the framing (an announced length, chunked,
/// HTTP/2 with or without a length), and bodies that take longer than
/// `within` to arrive with 408.
pub struct BodyLimit {
    max_bytes: usize,
    within: Duration,
    larger: Vec<(&'static str, usize)>,
}

impl BodyLimit {
    pub fn new(max_bytes: usize, within: Duration) -> Self {
        Self {
            max_bytes,
            within,
            larger: Vec::new(),
        }
    }

    /// Lets the bodies of the requests to `path` be up to `max_bytes`
    /// (when that is more than the limit of the others).
    pub fn allowing(mut self, path: &'static str, max_bytes: usize) -> Self {
        self.larger.push((path, max_bytes));
        self
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            max_bytes: self.max_bytes,
            within: self.within,
            larger: self.larger.clone(),
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    max_bytes: usize,
    within: Duration,
    larger: Vec<(&'static str, usize)>,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let path = req.uri().path();
        let max_bytes = (self.larger.iter())
            .find(|(larger, _)| *larger == path)
            .map_or(self.max_bytes, |(_, bytes)| self.max_bytes.max(*bytes));
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > max_bytes as u64) {
            return Err(payload_too_large().into());
        }
        // Whatever the headers say: HTTP/2 may send a body with no length
        // and no Transfer-Encoding. Only a body known to be empty is not read.
        let body = req.take_body();
        if !body.is_empty() {
            // Reading stops one chunk past the limit, so an oversized body
            // is refused without being buffered.
            let read = tokio::time::timeout(self.within, body.into_bytes_limit(max_bytes));
            let bytes = read
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body arrived too slowly",
                    )
                })?
                .map_err(|err| match err {
                    ReadBodyError::PayloadTooLarge => payload_too_large(),
                    other => {
                        Problem::validation(format!("could not read the request body: {other}"))
                    }
                })?;
            req.set_body(Body::from(bytes));
        } else {
            req.set_body(body);
        }
        self.inner.call(req).await
    }
}

/// The outermost layer: every error leaves as problem+json, and every request
/// is counted in `http_requests_total` and timed in the
/// `http_request_duration_seconds` histogram, labelled by operation id (not
/// the raw path, which would make one series per seat id).
#[derive(Default)]
pub struct Edge {
    documented: Option<Arc<Documented>>,
}

impl Edge {
    /// Also refuses (500, logged) any problem an operation answers that its
    /// OpenAPI entry does not list: for debug builds and tests.
    pub fn checking(documented: Documented) -> Self {
        Self {
            documented: Some(Arc::new(documented)),
        }
    }
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint {
            inner,
            documented: self.documented.clone(),
        }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
    documented: Option<Arc<Documented>>,
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let started = Instant::now();
        let method = req.method().to_string();
        let resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => render_error(err, self.documented.as_deref()),
        };
        let operation = resp.data::<OperationId>().map(|op| op.0).unwrap_or("other");
        let status = resp.status().as_u16().to_string();
        let labels = [
            ("method", method),
            ("operation", operation.to_owned()),
            ("status", status),
        ];
        metrics::counter!("http_requests_total", &labels).increment(1);
        metrics::histogram!("http_request_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn documented() -> Documented {
        Documented::from_spec(&json!({"paths": {"/v1/reservations": {"post": {
            "operationId": "holdSeat",
            "responses": {
                "201": {"description": "held"},
                "409": {"description": "Refused; `code`: `seat_unavailable`, `hold_limit`"},
                "503": {"description": "down; `code`: `unavailable`"}
            }
        }}}}))
    }

    fn answer(problem: Problem, operation: Option<&'static str>) -> (u16, Problem) {
        let mut err: poem::Error = problem.into();
        if let Some(op) = operation {
            err.set_data(OperationId(op));
        }
        let documented = documented();
        let resp = render_error(err, Some(&documented));
        let status = resp.status().as_u16();
        assert_eq!(
            resp.data::<OperationId>().map(|op| op.0),
            operation,
            "the operation id survives for the metrics"
        );
        let body = futures::executor::block_on(resp.into_body().into_string()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            status,
            Problem::new(
                StatusCode::from_u16(status).unwrap(),
                json["code"].as_str().unwrap(),
                json["detail"].as_str().unwrap(),
            ),
        )
    }

    const HOLD: Option<&str> = Some("holdSeat");

    /// The problem, raised by `operation` (or outside any), is answered
    /// with the status and code given.
    fn assert_answered(operation: Option<&'static str>, problem: Problem, expected: (u16, &str)) {
        let (status, answered) = answer(problem, operation);
        assert_eq!((status, answered.code.as_str()), expected);
    }

    #[test]
    fn a_documented_problem_passes_through() {
        let hold_limit = Problem::conflict("hold_limit", "four holds already");
        assert_answered(HOLD, hold_limit, (409, "hold_limit"));
        assert_answered(HOLD, Problem::unavailable("down"), (503, "unavailable"));
    }

    #[test]
    fn an_undocumented_code_or_status_becomes_a_logged_500() {
        let not_ours = Problem::conflict("sold_out", "not this operation's");
        assert_answered(HOLD, not_ours, (500, "internal"));
        assert_answered(HOLD, Problem::not_found("no such seat"), (500, "internal"));
    }

    #[test]
    fn answers_outside_any_documented_operation_are_not_checked() {
        assert_answered(
            None,
            Problem::not_found("no such route"),
            (404, "not_found"),
        );
        let unknown = Problem::conflict("x", "unknown op");
        assert_answered(Some("notInTheDocument"), unknown, (409, "x"));
    }
}
