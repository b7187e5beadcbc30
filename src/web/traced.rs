//! The outermost layer: every request gets a request id (`X-Request-Id`,
//! the client's own kept) and runs in a `request` span and a W3C trace
//! context (`kernel::trace`) that the events it writes carry on, so one id
//! follows a purchase from the request through every consumer.
//!
//! The trace is the client's `traceparent` when it sends one, else the
//! trace its `X-Request-Id` names when that is a UUID or 32 hex digits,
//! else a new one. A request id the server makes is the trace id itself,
//! so the id a client sees in `X-Request-Id` is the id to look for in the
//! logs, the event stream and the data-platform lines.

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    http::{HeaderName, HeaderValue},
};
use tracing::Instrument;

use crate::kernel::trace::{self, TraceContext};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The longest client request id kept (a longer one is replaced).
const MAX_REQUEST_ID: usize = 128;

pub struct Traced;

impl<E: Endpoint> Middleware<E> for Traced {
    type Output = TracedEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        TracedEndpoint { inner }
    }
}

pub struct TracedEndpoint<E> {
    inner: E,
}

/// The request id, the remote parent and the trace id hint of a request,
/// from its headers.
pub fn request_trace(
    request_id: Option<&str>,
    traceparent: Option<&str>,
) -> (Option<String>, Option<TraceContext>, Option<[u8; 16]>) {
    let request_id = request_id.filter(|id| {
        !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
    });
    let parent = trace::parse(traceparent);
    let hint = request_id.and_then(TraceContext::trace_id_of_request_id);
    (request_id.map(str::to_owned), parent, hint)
}

impl<E: Endpoint> Endpoint for TracedEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (request_id, parent, hint) = request_trace(header(&REQUEST_ID), header(&TRACEPARENT));
        let span = tracing::info_span!(
            "request",
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            method = %req.method(),
            path = %req.uri().path(),
        );
        let ctx = trace::begin(&span, parent, hint);
        let request_id = request_id.unwrap_or_else(|| ctx.trace_id());
        span.record("request_id", request_id.as_str());
        let work = async {
            let started = std::time::Instant::now();
            let resp = match self.inner.call(req).await {
                Ok(output) => output.into_response(),
                Err(err) => err.into_response(),
            };
            tracing::debug!(
                target: "boxoffice::trace",
                status = resp.status().as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "answered"
            );
            resp
        };
        let mut resp = ctx.scope(work.instrument(span)).await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, value);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begun(request_id: Option<&str>, traceparent: Option<&str>) -> (String, TraceContext) {
        let (id, parent, hint) = request_trace(request_id, traceparent);
        let span = tracing::info_span!(
            "request",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        let ctx = trace::begin(&span, parent, hint);
        (id.unwrap_or_else(|| ctx.trace_id()), ctx)
    }

    #[test]
    fn a_server_made_request_id_is_the_trace_id() {
        let (id, ctx) = begun(None, None);
        assert_eq!(id, ctx.trace_id());
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn a_clients_id_is_kept_and_names_the_trace_when_it_can() {
        let (id, ctx) = begun(Some("0f8fad5b-d9cb-469f-a165-70867728950e"), None);
        assert_eq!(id, "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(ctx.trace_id(), "0f8fad5bd9cb469fa16570867728950e");
        let (id, ctx) = begun(Some("checkout-7f3a"), None);
        assert_eq!(id, "checkout-7f3a");
        assert_eq!(ctx.trace_id().len(), 32);
        let (id, _) = begun(Some("has space"), None);
        assert_ne!(
            id, "has space",
            "an id that is not a visible token is replaced"
        );
    }

    #[test]
    fn a_clients_traceparent_is_continued() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (id, ctx) = begun(Some("checkout-7f3a"), Some(parent));
        assert_eq!(id, "checkout-7f3a");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            ctx.span_id(),
            "00f067aa0ba902b7",
            "the request is a new span"
        );
        let (id, ctx) = begun(None, Some(parent));
        assert_eq!(id, ctx.trace_id());
        let (_, ctx) = begun(None, Some("garbage"));
        assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
