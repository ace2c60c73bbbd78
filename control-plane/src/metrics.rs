//! The control plane's metrics, declared once and registered in the process registry.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge, Opts, register_int_counter_vec, register_int_gauge};

/// The control plane's metrics.
pub struct ControlPlaneMetrics {
    /// `lancefleet_control_leader`: 1 while this instance leads.
    pub leader: IntGauge,
    /// `lancefleet_control_probes_total{result}`: executor health probes (`passed`, `failed`).
    pub probes: IntCounterVec,
    /// `lancefleet_control_unhealthy_executors`: executors marked unhealthy (as the leader
    /// last saw the marks).
    pub unhealthy: IntGauge,
}

/// The metrics, registered on first use (registration fails only on a duplicate name).
pub static METRICS: LazyLock<ControlPlaneMetrics> = LazyLock::new(|| {
    let metrics = declare();
    // Both results start at zero, so the first failed probe shows in rate().
    for result in ["passed", "failed"] {
        metrics.probes.with_label_values(&[result]);
    }
    metrics
});

fn declare() -> ControlPlaneMetrics {
    ControlPlaneMetrics {
        leader: register_int_gauge!("lancefleet_control_leader", "1 while this control-plane instance leads.")
            .expect("register lancefleet_control_leader"),
        probes: register_int_counter_vec!(
            Opts::new("lancefleet_control_probes_total", "Executor health probes, by result."),
            &["result"]
        )
        .expect("register lancefleet_control_probes_total"),
        unhealthy: register_int_gauge!(
            "lancefleet_control_unhealthy_executors",
            "Executors marked unhealthy, as the leader last saw the marks."
        )
        .expect("register lancefleet_control_unhealthy_executors"),
    }
}
