//! The query node's metrics, declared once and registered in the process registry.

use std::sync::LazyLock;

use lancefleet_common::metrics::LATENCY_BUCKETS;
use lancefleet_proto::ErrorCode;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, register_histogram_vec,
    register_int_counter, register_int_counter_vec, register_int_gauge_vec,
};

use crate::dispatch::hedge::HedgeReason;

/// The query node's metrics.
pub struct QueryNodeMetrics {
    /// `lancefleet_rest_requests_total{route, status}`.
    pub requests: IntCounterVec,
    /// `lancefleet_rest_request_duration_seconds{route}`.
    pub request_seconds: HistogramVec,
    /// `lancefleet_flight_requests_total{method, code}`: Arrow Flight and Flight SQL calls
    /// by gRPC method and the gRPC code they were answered with (`Ok` once a stream starts).
    pub flight_requests: IntCounterVec,
    /// `lancefleet_flight_request_duration_seconds{method}`: until the answer (or its
    /// stream) starts: planning for SQL, the whole write for `DoPut`.
    pub flight_request_seconds: HistogramVec,
    /// `lancefleet_query_fragments_total{choice}`: fragments answered by their `first`
    /// choice of executor or by an `other` one (placement affinity).
    pub fragments: IntCounterVec,
    /// `lancefleet_query_fanout_executors`: executors one fragment query went to.
    pub fanout: HistogramVec,
    /// `lancefleet_query_fragment_retries_total`: fragments sent again to their next executor.
    pub retries: IntCounter,
    /// `lancefleet_query_executor_errors_total{code}`: failed executor calls by error code.
    pub executor_errors: IntCounterVec,
    /// `lancefleet_query_event_publish_failures_total`: committed changes whose event
    /// could not be published.
    pub event_failures: IntCounter,
    /// `lancefleet_requests_in_flight{interface}`: REST requests and Flight calls being
    /// served (`rest`, `flight`).
    pub in_flight: IntGaugeVec,
    /// `lancefleet_request_errors_total{interface, code}`: failed REST requests and Flight
    /// calls by error code (`ERROR_CODE_NOT_FOUND`…, or the gRPC code for Flight).
    pub errors: IntCounterVec,
    /// `lancefleet_query_slow_executor_calls_total{executor}`: executor calls slower than
    /// `cluster.slow_call` ("slow takes").
    pub slow_calls: IntCounterVec,
    /// `lancefleet_query_hedged_calls_total{winner,reason}`: executor calls hedged to the
    /// next replica, by which call answered first (`primary`, `hedge`) and why the call was
    /// hedged (`delay`: unanswered after the hedge delay; `straggler`: behind its siblings).
    pub hedged_calls: IntCounterVec,
}

/// The metrics, registered on first use.
pub static METRICS: LazyLock<QueryNodeMetrics> = LazyLock::new(|| {
    // Registration fails only on a duplicate name, a programming error caught by tests.
    let metrics = QueryNodeMetrics {
        requests: register_int_counter_vec!(
            Opts::new("lancefleet_rest_requests_total", "REST requests by route and HTTP status."),
            &["route", "status"]
        )
        .expect("register lancefleet_rest_requests_total"),
        request_seconds: register_histogram_vec!(
            HistogramOpts::new("lancefleet_rest_request_duration_seconds", "REST request latency by route.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"]
        )
        .expect("register lancefleet_rest_request_duration_seconds"),
        flight_requests: register_int_counter_vec!(
            Opts::new("lancefleet_flight_requests_total", "Arrow Flight and Flight SQL calls by method and gRPC code."),
            &["method", "code"]
        )
        .expect("register lancefleet_flight_requests_total"),
        flight_request_seconds: register_histogram_vec!(
            HistogramOpts::new(
                "lancefleet_flight_request_duration_seconds",
                "Arrow Flight and Flight SQL latency until the answer starts, by method."
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"]
        )
        .expect("register lancefleet_flight_request_duration_seconds"),
        fragments: register_int_counter_vec!(
            Opts::new(
                "lancefleet_query_fragments_total",
                "Fragments answered, by the executor's place in their preference list."
            ),
            &["choice"]
        )
        .expect("register lancefleet_query_fragments_total"),
        fanout: register_histogram_vec!(
            HistogramOpts::new("lancefleet_query_fanout_executors", "Executors one fragment query was sent to.")
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            &[]
        )
        .expect("register lancefleet_query_fanout_executors"),
        retries: register_int_counter!(
            "lancefleet_query_fragment_retries_total",
            "Fragments retried on the next executor of their preference list."
        )
        .expect("register lancefleet_query_fragment_retries_total"),
        executor_errors: register_int_counter_vec!(
            Opts::new("lancefleet_query_executor_errors_total", "Failed executor calls by error code."),
            &["code"]
        )
        .expect("register lancefleet_query_executor_errors_total"),
        event_failures: register_int_counter!(
            "lancefleet_query_event_publish_failures_total",
            "Committed changes whose event could not be published to the event bus."
        )
        .expect("register lancefleet_query_event_publish_failures_total"),
        in_flight: register_int_gauge_vec!(
            Opts::new("lancefleet_requests_in_flight", "REST requests and Flight calls being served, by interface."),
            &["interface"]
        )
        .expect("register lancefleet_requests_in_flight"),
        errors: register_int_counter_vec!(
            Opts::new(
                "lancefleet_request_errors_total",
                "Failed REST requests and Flight calls, by interface and code."
            ),
            &["interface", "code"]
        )
        .expect("register lancefleet_request_errors_total"),
        slow_calls: register_int_counter_vec!(
            Opts::new(
                "lancefleet_query_slow_executor_calls_total",
                "Executor calls slower than cluster.slow_call, by executor."
            ),
            &["executor"]
        )
        .expect("register lancefleet_query_slow_executor_calls_total"),
        hedged_calls: register_int_counter_vec!(
            Opts::new(
                "lancefleet_query_hedged_calls_total",
                "Executor calls hedged to the next replica, by which call answered first and why it was hedged."
            ),
            &["winner", "reason"]
        )
        .expect("register lancefleet_query_hedged_calls_total"),
    };
    metrics.start_known_series();
    metrics
});

impl QueryNodeMetrics {
    /// Creates the series whose labels are known in advance at zero, so that the first
    /// event of each is a visible increase to `rate()`.
    fn start_known_series(&self) {
        for code in ErrorCode::ALL {
            self.errors.with_label_values(&["rest", code.as_str_name()]);
            self.executor_errors.with_label_values(&[code.as_str_name()]);
        }
        for code in GRPC_CODES {
            self.errors.with_label_values(&["flight", code]);
        }
        for interface in ["rest", "flight"] {
            self.in_flight.with_label_values(&[interface]);
        }
        for choice in ["first", "other"] {
            self.fragments.with_label_values(&[choice]);
        }
        for winner in ["primary", "hedge"] {
            for reason in [HedgeReason::Delay, HedgeReason::Straggler] {
                self.hedged_calls.with_label_values(&[winner, reason.as_str()]);
            }
        }
    }
}

/// The gRPC codes a failed Flight call is counted under, as `tonic::Code`'s names.
const GRPC_CODES: [&str; 16] = [
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
