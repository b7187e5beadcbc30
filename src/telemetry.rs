//! Logging set-up: human-readable by default, JSON with `--log-format
//! json`; with `--otlp-endpoint`, spans (requests, event handling,
//! compensation attempts) are also exported over OTLP/HTTP, in the trace
//! each one continues (see `kernel::trace`).

use opentelemetry::{
    Context,
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    },
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    config::LogFormat,
    kernel::trace::{self, TraceContext},
};

/// Keeps the OTLP exporter running; dropping it flushes and stops it.
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("boxoffice: flushing traces failed: {err}");
        }
    }
}

/// Where spans go for `--otlp-endpoint URL`: the URL itself when it names
/// the traces path, else `URL/v1/traces` (a collector's base URL).
pub fn otlp_traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_env("BOXOFFICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let fmt_layer = fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt_layer = match format {
        LogFormat::Text => fmt_layer.boxed(),
        LogFormat::Json => fmt_layer.json().boxed(),
    };
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(otlp_traces_url(endpoint))
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name("boxoffice").build())
                    .build(),
            )
        }
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("boxoffice"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                // Exported: the spans that make up a purchase's trace.
                meta.is_span() && matches!(meta.name(), "request" | "event" | "compensation")
            }))
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    // Already initialised (e.g. twice in one test process): keep the first.
    if result.is_ok() && provider.is_some() {
        trace::set_export_hook(join_exported_trace);
    }
    Ok(Telemetry { provider })
}

/// The export hook: the OpenTelemetry span of `span` gets `parent` as its
/// remote parent (or, starting a trace, a parent naming the chosen trace
/// id), and the work runs under that span's own id.
fn join_exported_trace(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    chosen: TraceContext,
) -> TraceContext {
    let remote = parent.unwrap_or(chosen);
    let remote = SpanContext::new(
        TraceId::from_bytes(remote.trace_id),
        SpanId::from_bytes(remote.span_id),
        if remote.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    if span
        .set_parent(Context::new().with_remote_span_context(remote))
        .is_err()
    {
        return chosen;
    }
    let exported = span.context();
    let exported = exported.span().span_context().clone();
    if !exported.is_valid() || exported.trace_id().to_bytes() != chosen.trace_id {
        return chosen;
    }
    TraceContext {
        span_id: exported.span_id().to_bytes(),
        ..chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collector_base_url_gets_the_traces_path() {
        assert_eq!(
            otlp_traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            otlp_traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            otlp_traces_url("https://otel.example/v1/traces"),
            "https://otel.example/v1/traces"
        );
    }
}
