//! The plan executor's metrics, declared once and registered in the process registry.
//! Cache hits, misses and bytes per tier come from the object cache's own collector.

use std::sync::LazyLock;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, Opts, register_int_counter, register_int_counter_vec, register_int_gauge,
};

/// The plan executor's metrics.
pub struct ExecutorMetrics {
    /// `lancefleet_executor_fragments_total{rpc}`: plan fragments received (`execute`, `count`, `analyze`).
    pub fragments: IntCounterVec,
    /// `lancefleet_executor_fragment_errors_total{code}`: plan fragments failed, by code.
    pub errors: IntCounterVec,
    /// `lancefleet_executor_prewarm_total{what,trigger}`: fragments and indexes read into
    /// the cache ahead of queries (`fragment`, `index`, `failed`), at start or after a
    /// membership change (`membership`) or after maintenance (`maintenance`).
    pub prewarm: IntCounterVec,
    /// `lancefleet_executor_admission_waiting`: fragments waiting for room in the memory budget.
    pub admission_waiting: IntGauge,
    /// `lancefleet_executor_admission_refused_total`: fragments refused for want of room
    /// (the query node retries them on another replica).
    pub admission_refused: IntCounter,
}

/// The metrics, registered on first use (registration fails only on a duplicate name).
pub static METRICS: LazyLock<ExecutorMetrics> = LazyLock::new(|| {
    let metrics = declare();
    // The series whose labels are known start at zero, so their first event shows in rate().
    for rpc in ["execute", "count", "analyze"] {
        metrics.fragments.with_label_values(&[rpc]);
    }
    for what in ["fragment", "index", "failed"] {
        for trigger in ["membership", "maintenance"] {
            metrics.prewarm.with_label_values(&[what, trigger]);
        }
    }
    for code in lancefleet_proto::ErrorCode::ALL {
        metrics.errors.with_label_values(&[code.as_str_name()]);
    }
    metrics
});

fn declare() -> ExecutorMetrics {
    ExecutorMetrics {
        fragments: register_int_counter_vec!(
            Opts::new("lancefleet_executor_fragments_total", "Plan fragments received, by RPC."),
            &["rpc"]
        )
        .expect("register lancefleet_executor_fragments_total"),
        errors: register_int_counter_vec!(
            Opts::new("lancefleet_executor_fragment_errors_total", "Plan fragments that failed, by error code."),
            &["code"]
        )
        .expect("register lancefleet_executor_fragment_errors_total"),
        prewarm: register_int_counter_vec!(
            Opts::new(
                "lancefleet_executor_prewarm_total",
                "Fragments and indexes of this executor's share read into its cache ahead of queries."
            ),
            &["what", "trigger"]
        )
        .expect("register lancefleet_executor_prewarm_total"),
        admission_waiting: register_int_gauge!(
            "lancefleet_executor_admission_waiting",
            "Plan fragments waiting for room in the executor's memory budget."
        )
        .expect("register lancefleet_executor_admission_waiting"),
        admission_refused: register_int_counter!(
            "lancefleet_executor_admission_refused_total",
            "Plan fragments refused for want of room in the memory budget."
        )
        .expect("register lancefleet_executor_admission_refused_total"),
    }
}
