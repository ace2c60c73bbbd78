//! The indexer's metrics, declared once and registered in the process registry.
//!
//! Per-table gauges carry the table id as a label and are removed when the table is
//! dropped.

use std::sync::LazyLock;

use lancefleet_common::metrics::LATENCY_BUCKETS;
use lancefleet_engine::catalog::facts::TableFacts;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, register_gauge_vec,
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

use crate::policy::JobKind;

/// The indexer's metrics.
pub struct IndexerMetrics {
    /// `lancefleet_indexer_table_fragments{table}`.
    pub fragments: IntGaugeVec,
    /// `lancefleet_indexer_table_unindexed_rows{table}`: rows its vector index does not
    /// cover yet (every row when it has none).
    pub unindexed_rows: IntGaugeVec,
    /// `lancefleet_indexer_table_index_coverage_ratio{table}`: share of rows its vector index covers.
    pub coverage: GaugeVec,
    /// `lancefleet_indexer_jobs_total{kind, outcome}` (outcome: done, nothing, conflict, failed).
    pub jobs: IntCounterVec,
    /// `lancefleet_indexer_job_duration_seconds{kind}`.
    pub job_seconds: HistogramVec,
    /// `lancefleet_indexer_events_total`: change events received.
    pub events: IntCounter,
    /// `lancefleet_indexer_queue_tables`: tables with changes not yet handled.
    pub queue_tables: IntGauge,
    /// `lancefleet_indexer_queue_lag_seconds`: age of the oldest change not yet handled.
    pub queue_lag_seconds: IntGauge,
}

impl IndexerMetrics {
    /// Records what `table` looks like now.
    pub fn observe(&self, table: &str, facts: &TableFacts) {
        self.fragments.with_label_values(&[table]).set(i64::try_from(facts.fragment_rows.len()).unwrap_or(i64::MAX));
        let vector = facts.indexes.iter().filter(|index| index.is_vector).min_by_key(|index| index.unindexed_rows);
        let (indexed, unindexed) =
            vector.map_or((0, facts.fragment_rows.iter().sum()), |index| (index.indexed_rows, index.unindexed_rows));
        self.unindexed_rows.with_label_values(&[table]).set(i64::try_from(unindexed).unwrap_or(i64::MAX));
        let total = indexed + unindexed;
        #[allow(clippy::cast_precision_loss)]
        let coverage = if total == 0 { 1.0 } else { indexed as f64 / total as f64 };
        self.coverage.with_label_values(&[table]).set(coverage);
    }

    /// Forgets a dropped table.
    pub fn forget(&self, table: &str) {
        let _ = self.fragments.remove_label_values(&[table]);
        let _ = self.unindexed_rows.remove_label_values(&[table]);
        let _ = self.coverage.remove_label_values(&[table]);
    }
}

/// The metrics, registered on first use.
pub static METRICS: LazyLock<IndexerMetrics> = LazyLock::new(|| {
    // Registration fails only on a duplicate name, a programming error caught by tests.
    let metrics = IndexerMetrics {
        fragments: register_int_gauge_vec!(
            Opts::new("lancefleet_indexer_table_fragments", "Fragments of each maintained table."),
            &["table"]
        )
        .expect("register lancefleet_indexer_table_fragments"),
        unindexed_rows: register_int_gauge_vec!(
            Opts::new("lancefleet_indexer_table_unindexed_rows", "Rows not covered by the table's vector index."),
            &["table"]
        )
        .expect("register lancefleet_indexer_table_unindexed_rows"),
        coverage: register_gauge_vec!(
            Opts::new(
                "lancefleet_indexer_table_index_coverage_ratio",
                "Share of rows the table's vector index covers."
            ),
            &["table"]
        )
        .expect("register lancefleet_indexer_table_index_coverage_ratio"),
        jobs: register_int_counter_vec!(
            Opts::new("lancefleet_indexer_jobs_total", "Maintenance jobs by kind and outcome."),
            &["kind", "outcome"]
        )
        .expect("register lancefleet_indexer_jobs_total"),
        job_seconds: register_histogram_vec!(
            HistogramOpts::new("lancefleet_indexer_job_duration_seconds", "Maintenance job duration by kind.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"]
        )
        .expect("register lancefleet_indexer_job_duration_seconds"),
        events: register_int_counter!("lancefleet_indexer_events_total", "Table change events received.")
            .expect("register lancefleet_indexer_events_total"),
        queue_tables: register_int_gauge!("lancefleet_indexer_queue_tables", "Tables with changes not yet handled.")
            .expect("register lancefleet_indexer_queue_tables"),
        queue_lag_seconds: register_int_gauge!(
            "lancefleet_indexer_queue_lag_seconds",
            "Age of the oldest change not yet handled."
        )
        .expect("register lancefleet_indexer_queue_lag_seconds"),
    };
    // Every job kind and outcome starts at zero, so the first of each shows in rate().
    for kind in JobKind::ALL {
        metrics.job_seconds.with_label_values(&[kind.as_str()]);
        for outcome in ["done", "nothing", "conflict", "failed"] {
            metrics.jobs.with_label_values(&[kind.as_str(), outcome]);
        }
    }
    metrics
});
