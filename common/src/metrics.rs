//! Prometheus metrics: every crate registers its metrics once in the process-wide
//! registry (`prometheus::default_registry()`), and every node serves them as text at
//! `/metrics`. Names follow `lancefleet_<subsystem>_<name>_<unit>`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Latency buckets in seconds, 1 ms to 60 s (the client default buckets stop at 10 s).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every registered metric in the Prometheus text format.
pub fn render() -> String {
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&prometheus::gather(), &mut buffer) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The `/metrics` handler.
pub async fn metrics_handler() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], render())
}

/// Serves `/metrics` (and `/health`, for probes) on a bound `listener` until `shutdown`.
pub async fn serve_metrics_on(listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "serving /metrics and /health");
    let router = Router::new().route("/metrics", get(metrics_handler)).route("/health", get(|| async { "ok" }));
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.wait().await }).await
}

/// Registers what every process exports beside its role's own metrics: the process's CPU
/// time, memory and file descriptors (`process_*`, the Prometheus client's collector) and
/// `lancefleet_build_info{version, role}` (always 1). Call once per process.
pub fn register_process(role: &str) {
    match crate::process_metrics::ProcessMetrics::new() {
        Ok(process) => register(Box::new(process)),
        Err(error) => tracing::warn!(%error, "cannot declare the process metrics"),
    }
    let opts = prometheus::Opts::new("lancefleet_build_info", "The running lancefleet: version and role (always 1).")
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("role", role);
    match prometheus::IntGauge::with_opts(opts) {
        Ok(gauge) => {
            gauge.set(1);
            register(Box::new(gauge));
        }
        Err(error) => tracing::warn!(%error, "cannot declare lancefleet_build_info"),
    }
}

/// `lancefleet_etcd_reachable`: 1 while this node's last listing or watch of etcd worked,
/// 0 after one failed (nodes without etcd do not export it).
static ETCD_REACHABLE: std::sync::LazyLock<Option<prometheus::IntGauge>> = std::sync::LazyLock::new(|| {
    let gauge = prometheus::IntGauge::new(
        "lancefleet_etcd_reachable",
        "1 while this node's last listing or watch of etcd worked, 0 after one failed.",
    )
    .ok()?;
    register(Box::new(gauge.clone()));
    Some(gauge)
});

/// Records whether etcd answered this node's last listing or watch.
pub fn etcd_reachable(reachable: bool) {
    if let Some(gauge) = ETCD_REACHABLE.as_ref() {
        gauge.set(i64::from(reachable));
    }
}

/// Registers `collector` in the process registry, logging (not failing) a duplicate.
pub fn register(collector: Box<dyn prometheus::core::Collector>) {
    if let Err(error) = prometheus::register(collector) {
        tracing::warn!(%error, "metric registered twice");
    }
}
