//! Following one purchase: the W3C trace context (`traceparent`) a request
//! starts, carried on every event it writes and continued by whoever
//! handles those events (consumers, the compensation runner), so the
//! request's log lines, its events, their data-platform lines and the
//! consumers' log lines share one trace id.
//!
//! The context travels as ambient state of the task doing the work (a
//! tokio task-local set by the HTTP edge, the consumer runner and the
//! compensation runner), the way tracing spans do: use cases stay free of
//! it, and `NewEvent::new` picks it up when an event is made.

use std::{fmt, future::Future};

use rand::RngCore;

/// A W3C trace context: the trace, the span that is working in it now,
/// and whether it is sampled.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (`trace_id` given, or random) with a fresh span.
    pub fn root(trace_id: Option<[u8; 16]>) -> Self {
        let trace_id = trace_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            while id == [0; 16] {
                rand::rng().fill_bytes(&mut id);
            }
            id
        });
        Self {
            trace_id,
            span_id: fresh_span_id(),
            sampled: true,
        }
    }

    /// The next step of the same trace: a fresh span whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: fresh_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` header value (`00-<trace>-<span>-<flags>`);
    /// `None` for anything malformed, an all-zero id or version `ff`, as
    /// the W3C recommendation says to ignore such a header.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let [version, trace, span, flags, ..] = parts.as_slice() else {
            return None;
        };
        if version.len() != 2 || *version == "ff" || (*version == "00" && parts.len() != 4) {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags]: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` value naming this span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    /// The trace id as 32 lowercase hex digits: the one id to look for.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace a request id names, when it is one (32 hex digits, or a
    /// UUID): a client that sends its own id finds it as the trace id.
    pub fn trace_id_of_request_id(request_id: &str) -> Option<[u8; 16]> {
        let simple: String = if request_id.len() == 36 {
            uuid::Uuid::parse_str(request_id).ok()?.simple().to_string()
        } else {
            request_id.to_ascii_lowercase()
        };
        let id: [u8; 16] = hex_bytes(&simple)?;
        (id != [0; 16]).then_some(id)
    }

    /// The context of the task running now, if it works for a trace.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|ctx| *ctx).ok()
    }

    /// Runs `work` as part of this trace: events it makes carry it.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }
}

/// How a span joins its trace in an exporter (OpenTelemetry, when
/// `--otlp-endpoint` is set): given the span, the remote parent (if any)
/// and the context chosen for the work, it returns the context the work
/// runs in (with the exporter's span id).
pub type ExportHook = fn(&tracing::Span, Option<TraceContext>, TraceContext) -> TraceContext;

static EXPORT_HOOK: std::sync::OnceLock<ExportHook> = std::sync::OnceLock::new();

/// Installs the exporter's hook (once per process).
pub fn set_export_hook(hook: ExportHook) {
    let _ = EXPORT_HOOK.set(hook);
}

/// Starts the work of `span` in a trace: continuing `parent` (the
/// `traceparent` of the request or event being handled) as a new span of
/// it, or else a new trace (with `trace_id` when given). Records
/// `trace_id` and `span_id` on the span (declare them, e.g. as
/// `tracing::field::Empty`) and returns the context to run the work in
/// with [`TraceContext::scope`].
pub fn begin(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    trace_id: Option<[u8; 16]>,
) -> TraceContext {
    let chosen = parent.map_or_else(|| TraceContext::root(trace_id), |p| p.child());
    let ctx = EXPORT_HOOK
        .get()
        .map_or(chosen, |hook| hook(span, parent, chosen));
    span.record("trace_id", ctx.trace_id());
    span.record("span_id", ctx.span_id());
    ctx
}

/// Parses an optional `traceparent`.
pub fn parse(traceparent: Option<&str>) -> Option<TraceContext> {
    traceparent.and_then(TraceContext::parse)
}

/// The `traceparent` of the task running now.
pub fn current_traceparent() -> Option<String> {
    TraceContext::current().map(|ctx| ctx.traceparent())
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn fresh_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(header).unwrap();
        assert_eq!(ctx.traceparent(), header);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id(), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version may add fields after the flags.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let root = TraceContext::root(None);
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(TraceContext::root(None).trace_id, root.trace_id);
    }

    #[test]
    fn a_request_id_that_is_a_trace_id_or_uuid_names_the_trace() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(
            hex(&TraceContext::trace_id_of_request_id(uuid).unwrap()),
            "0f8fad5bd9cb469fa16570867728950e"
        );
        assert_eq!(
            hex(&TraceContext::trace_id_of_request_id("0F8FAD5BD9CB469FA16570867728950E").unwrap()),
            "0f8fad5bd9cb469fa16570867728950e"
        );
        assert_eq!(TraceContext::trace_id_of_request_id("checkout-7f3a"), None);
        assert_eq!(
            TraceContext::trace_id_of_request_id("00000000000000000000000000000000"),
            None
        );
    }

    #[test]
    fn work_begun_from_a_parent_continues_its_trace_and_else_starts_one() {
        let parent = TraceContext::root(None);
        let span = tracing::info_span!(
            "work",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        let ctx = begin(&span, Some(parent), None);
        assert_eq!(ctx.trace_id, parent.trace_id);
        assert_ne!(ctx.span_id, parent.span_id);
        let named = [7u8; 16];
        assert_eq!(begin(&span, None, Some(named)).trace_id, named);
        assert_ne!(begin(&span, None, None).trace_id, parent.trace_id);
        assert_eq!(parse(Some("nonsense")), None);
    }

    #[tokio::test]
    async fn the_context_is_ambient_inside_its_scope_only() {
        assert_eq!(TraceContext::current(), None);
        let ctx = TraceContext::root(None);
        let seen = ctx.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(ctx));
        assert_eq!(current_traceparent(), None);
    }
}
