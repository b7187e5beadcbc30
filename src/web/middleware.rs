//! Cross-cutting HTTP behaviour: every error becomes problem+json, request
//! bodies are bounded, and every request is measured.

use std::time::Instant;

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

use super::problem::Problem;

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
/// still label the request.
fn render_error(err: poem::Error) -> Response {
    let operation = err.data::<OperationId>().map(|op| OperationId(op.0));
    let mut resp = error_to_problem(err).into_response();
    if let Some(operation) = operation {
        resp.set_data(operation);
    }
    resp
}

/// Refuses request bodies over `max_bytes` with 413, whether or not the
/// client announced the length.
pub struct BodyLimit {
    max_bytes: usize,
}

impl BodyLimit {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    max_bytes: usize,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > self.max_bytes as u64) {
            return Err(payload_too_large().into());
        }
        let has_body = announced.is_some_and(|len| len > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if has_body {
            // Read at most one byte past the limit, so an unannounced
            // (chunked) oversized body is still refused without buffering it.
            let bytes = req
                .take_body()
                .into_bytes_limit(self.max_bytes)
                .await
                .map_err(|err| match err {
                    ReadBodyError::PayloadTooLarge => payload_too_large(),
                    other => {
                        Problem::validation(format!("could not read the request body: {other}"))
                    }
                })?;
            req.set_body(Body::from(bytes));
        }
        self.inner.call(req).await
    }
}

/// The outermost layer: every error leaves as problem+json, and every request
/// is counted in `http_requests_total` and timed in the
/// `http_request_duration_seconds` histogram, labelled by operation id (not
/// the raw path, which would make one series per seat id).
pub struct Edge;

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint { inner }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let started = Instant::now();
        let method = req.method().to_string();
        let resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => render_error(err),
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
