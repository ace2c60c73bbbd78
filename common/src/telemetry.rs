//! Logs and traces.
//!
//! Logs go to stderr, as text or one JSON object per line (with the fields of the spans an
//! event is in, so a query's `request_id` is on every line logged while serving it).
//! Traces are the same `tracing` spans, exported as OpenTelemetry spans over OTLP/gRPC when
//! an endpoint is configured (`[trace] otlp_endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`). Sampling is
//! parent-based: a request whose caller sampled it is traced, a new one with the configured
//! ratio. Without an endpoint nothing is exported and no trace context is propagated: the
//! spans cost what they cost before. Trace context crosses processes as W3C `traceparent`
//! (HTTP headers, gRPC metadata): [`inject_into_metadata`], [`context_from_metadata`],
//! [`context_from_headers`].

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, ensure};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Default filter: `info`, but lance's per-dataset-open events only from `warn`.
/// (Filter targets match by prefix, so `lance=warn` would silence `lancefleet_*` too.)
pub const DEFAULT_LOG_FILTER: &str = "info,lance::dataset_events=warn";

/// Logging configuration (`[log]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `lancefleet_engine=debug`.
    /// `RUST_LOG`, when set, takes precedence. Default: `info,lance::dataset_events=warn`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: DEFAULT_LOG_FILTER.to_string(), format: LogFormat::Text }
    }
}

impl LogConfig {
    /// Refuses a filter `tracing` cannot parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        EnvFilter::try_new(&self.level).map(drop).map_err(|error| ConfigError::Value {
            key: "log.level".into(),
            reason: format!("'{}' is not a tracing filter: {error}", self.level),
        })
    }
}

/// Distributed traces (`[trace]`): spans exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// OTLP/gRPC endpoint spans are exported to, e.g. `http://otel-collector:4317`. None:
    /// the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// when set, else no export at all. Default: none.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces that are sampled, 0 to 1; a request whose caller sampled (or
    /// dropped) its trace follows the caller. Default: 1.
    pub sample_ratio: f64,
    /// The `service.name` of this node's spans. Default: `$OTEL_SERVICE_NAME`, else
    /// `lancefleet-{role}`.
    pub service_name: Option<String>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, sample_ratio: 1.0, service_name: None }
    }
}

impl TraceConfig {
    /// Refuses a ratio outside 0..=1 and an endpoint that is no URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure((0.0..=1.0).contains(&self.sample_ratio), "trace.sample_ratio", || {
            format!("must be between 0 and 1, got {}", self.sample_ratio)
        })?;
        if let Some(endpoint) = &self.otlp_endpoint {
            ensure(endpoint.parse::<http::Uri>().is_ok_and(|uri| uri.host().is_some()), "trace.otlp_endpoint", || {
                format!("'{endpoint}' is not an address such as http://otel-collector:4317")
            })?;
        }
        Ok(())
    }

    /// Whether spans are exported: an endpoint is configured here or in the environment.
    fn exports(&self) -> bool {
        self.otlp_endpoint.is_some()
            || ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
                .iter()
                .any(|variable| std::env::var(variable).is_ok_and(|value| !value.trim().is_empty()))
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber is installed already.
    #[error("a logger is installed already: {0}")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
    /// The OTLP exporter could not be built.
    #[error("cannot export traces: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The process's telemetry; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("lancefleet: flushing traces failed: {error}");
        }
    }
}

/// Spans exported as traces, whatever the log level: LanceFleet's own (at `info`) and
/// other crates' warnings.
const TRACE_FILTER: &str = "warn,lancefleet=info";

/// What a process's telemetry says about it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Its role (`query-node`…), part of the default `service.name`.
    pub service: &'a str,
    /// Its node id, the `service.instance.id` of its spans.
    pub instance: &'a str,
}

/// Installs logging, and trace export when configured, for the process `origin` names.
/// Call once, inside the async runtime (the OTLP exporter's gRPC channel lives there). The
/// log filter applies to log lines only: spans are exported at [`TRACE_FILTER`] even when
/// the log level is `warn`.
pub fn init(log: &LogConfig, trace: &TraceConfig, origin: Origin<'_>) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env)?,
        _ => EnvFilter::try_new(&log.level)?,
    };
    let logs = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        // Every line carries the fields of every span it is in (the request id of the
        // request span, the query id of an executor's fragment span) as `spans`.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = trace.exports().then(|| tracer_provider(trace, origin)).transpose()?;
    let spans = match &provider {
        Some(provider) => {
            global::set_text_map_propagator(TraceContextPropagator::new());
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("lancefleet"));
            Some(layer.with_filter(EnvFilter::try_new(TRACE_FILTER)?))
        }
        None => None,
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init()?;
    Ok(Telemetry { provider })
}

/// The tracer provider exporting to the configured (or the environment's) endpoint.
fn tracer_provider(trace: &TraceConfig, origin: Origin<'_>) -> Result<SdkTracerProvider, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &trace.otlp_endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let name = trace.service_name.clone().or_else(|| std::env::var("OTEL_SERVICE_NAME").ok());
    let resource = Resource::builder()
        .with_service_name(name.unwrap_or_else(|| format!("lancefleet-{}", origin.service)))
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", origin.instance.to_string()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(trace.sample_ratio))))
        .with_resource(resource)
        .build())
}

/// Writes the current span's trace context into gRPC `metadata` (W3C `traceparent`);
/// nothing when traces are not exported.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut MetadataCarrier(metadata)));
}

/// The trace context a caller sent in gRPC `metadata`.
pub fn context_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&MetadataReader(metadata)))
}

/// The trace context a caller sent in HTTP `headers`.
pub fn context_from_headers(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderReader(headers)))
}

/// A span field as OpenTelemetry keeps it: an `i64` (a `u64` would be exported as text).
pub fn int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Makes `span` a child of the caller's `context` (a no-op without one).
pub fn follow_caller(span: &tracing::Span, context: Context) {
    if let Err(error) = span.set_parent(context) {
        tracing::debug!(%error, "cannot link a span to its caller");
    }
}

struct MetadataCarrier<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(&value))
        {
            self.0.insert(key, value);
        }
    }
}

struct MetadataReader<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn trace_context_crosses_grpc_metadata_and_http_headers() {
        let propagator = TraceContextPropagator::new();
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(sent.clone());
        let mut metadata = tonic::metadata::MetadataMap::new();
        propagator.inject_context(&context, &mut MetadataCarrier(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|value| value.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let received = propagator.extract(&MetadataReader(&metadata));
        assert_eq!(received.span().span_context().trace_id(), sent.trace_id());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            metadata.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().parse().expect("header"),
        );
        assert_eq!(propagator.extract(&HeaderReader(&headers)).span().span_context().span_id(), sent.span_id());
    }

    #[test]
    fn sample_ratios_are_checked() {
        assert!(TraceConfig { sample_ratio: 1.5, ..TraceConfig::default() }.validate().is_err());
        assert!(TraceConfig { otlp_endpoint: Some("not a url".into()), ..TraceConfig::default() }.validate().is_err());
        TraceConfig {
            sample_ratio: 0.01,
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            ..TraceConfig::default()
        }
        .validate()
        .expect("valid");
    }
}
