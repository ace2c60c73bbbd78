"""OpenTelemetry traces across the fleet, received by a real OTLP/gRPC receiver.

The receiver is the TraceService of the `opentelemetry-proto` package served by grpcio
(lf_observe.OtlpReceiver), writing one JSON line per span. It listens on one port per
process, so each span says which process exported it: the query node exports to port 0
(`trace.otlp_endpoint`, as LANCEFLEET_TRACE__OTLP_ENDPOINT), executor pe-0 to port 1 and
pe-2 to port 3 through the standard OTEL_EXPORTER_OTLP_ENDPOINT, pe-1 to port 2 through
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTEL_BSP_SCHEDULE_DELAY=100 flushes spans quickly. The
cluster: a query node in front of 3 plan executors (JSON logs), a table of 12 fragments.

- one REST query is one trace: the query node's `request` span (the root, with the
  request id the response header carries), an `executor_call` span per executor under it,
  and under each, the `fragment` span of the executor it called (remote parent), from at
  least 2 executors; the request id is the executors' `query_id` and is on every log line
  each node wrote for the query (query node, executors);
- a fragment retried after an executor stopped (SIGSTOP, cluster.fragment_timeout 500 ms,
  hedging off):
  two `executor_call` attempts under the same request span, attempt 1 timed out, attempt 2
  on other executors covering the same fragments;
- a caller's W3C `traceparent` (REST header, Flight call header) makes the request span its
  child; an unsampled one (flags 00) exports nothing, on the query node or the executors;
- traces do not depend on the log level: with `log.level = "warn"` every span is still
  exported;
- with tracing off (no endpoint anywhere), the query node exports nothing, not even to the
  default localhost:4317, and sends no trace context to executors (whose own spans are
  then roots).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
import requests

from conftest import PlanExecutor, lancefleet_bin
from lf_control import wait_until
from lf_helpers import json_body, query_body, raw_request, write_fragments
from lf_observe import Fleet, OtlpReceiver, QueryNode, json_lines

pytestmark = pytest.mark.lifecycle

TABLE = "traced"
DIM = 16
FRAGMENTS = 12
FLUSH = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
                  "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "LANCEFLEET_TRACE__OTLP_ENDPOINT")


@pytest.fixture(scope="module", autouse=True)
def no_tracing_from_the_environment():
    """The processes inherit os.environ: nothing in it may turn tracing on."""
    saved = {name: os.environ.pop(name) for name in OTEL_VARIABLES if name in os.environ}
    yield
    os.environ.update(saved)


def write_table(data) -> None:
    rng = np.random.default_rng(9)
    write_fragments(str(data / f"{TABLE}.lance"), rng.random((1200, DIM), dtype=np.float32), FRAGMENTS)


def executor_tracing(receiver: OtlpReceiver):
    def env(index: int) -> dict:
        endpoint = receiver.endpoint(index + 1)
        if index == 1:
            return {**FLUSH, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}
        return {**FLUSH, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    return env


class Traced:
    def __init__(self, fleet: Fleet, receiver: OtlpReceiver):
        self.fleet = fleet
        self.receiver = receiver
        # Which process exported a span: the receiver port it came in on.
        self.process_of_port = {receiver.ports[0]: "qn-0",
                                **{receiver.ports[i + 1]: e.node_id for i, e in enumerate(fleet.executors)}}

    def query(self, request_id: str, headers: dict | None = None, vector=None) -> dict:
        vector = vector if vector is not None else np.random.default_rng().random(DIM).tolist()
        status, answer_headers, body = raw_request(
            self.fleet.query_node.url, "POST", f"/v1/table/{TABLE}/query/", json_body(query_body(vector, k=5)),
            {"content-type": "application/json", "x-request-id": request_id, **(headers or {})})
        assert status == 200, body[:500]
        assert answer_headers.get("x-request-id") == request_id, answer_headers
        return answer_headers

    def spans(self, name: str | None = None, **attributes) -> list[dict]:
        return [s for s in self.receiver.snapshot() if name in (None, s["name"])
                and all(str(s["attributes"].get(k)) == str(v) for k, v in attributes.items())]

    def trace_of(self, request_id: str, executors: int = 2) -> tuple[dict, list[dict]]:
        """The request span with `request_id` and every span of its trace, once the request
        span and fragment spans from at least `executors` executors have arrived."""
        def arrived():
            requests_ = self.spans(request_id=request_id)
            fragments = self.spans(name="fragment", query_id=request_id)
            processes = {self.process_of_port[s["port"]] for s in fragments}
            return requests_ and len(processes) >= executors and (requests_, fragments)

        wait_until(arrived, 15, f"the spans of request {request_id}")
        time.sleep(0.3)  # one more flush: late siblings
        roots = [s for s in self.spans(request_id=request_id) if s["name"] in ("request", "flight")]
        assert len(roots) == 1, roots
        root = roots[0]
        return root, [s for s in self.receiver.snapshot() if s["trace_id"] == root["trace_id"]]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    data = root / "data"
    data.mkdir()
    write_table(data)
    receiver = OtlpReceiver(root / "spans.jsonl", ports=4).start()
    fleet = Fleet(root, data, executors=3, control_planes=0, indexer=False,
                  query_env={**FLUSH, "LANCEFLEET_TRACE__OTLP_ENDPOINT": receiver.endpoint(0),
                             "LANCEFLEET_CLUSTER__FRAGMENT_TIMEOUT": "500ms",
                             "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off",
                             "LANCEFLEET_CLUSTER__SLOW_CALL": "1ms"},
                  executor_env=executor_tracing(receiver))
    try:
        fleet.start()
        yield Traced(fleet, receiver)
    finally:
        fleet.stop()
        receiver.stop()


def by_id(spans: list[dict]) -> dict[str, dict]:
    return {s["span_id"]: s for s in spans}


def log_mark(paths) -> dict:
    return {path: path.stat().st_size if path.exists() else 0 for path in paths}


def test_one_trace_per_distributed_query_with_parent_links_and_request_ids(traced):
    fleet = traced.fleet
    request_id = f"obs-{uuid.uuid4().hex[:12]}"
    logs = [fleet.query_node.log_path, *(e.log_path for e in fleet.executors)]
    mark = log_mark(logs)
    traced.query(request_id)
    root, trace = traced.trace_of(request_id)
    spans = by_id(trace)

    # The request span: the root of its trace, on the query node.
    assert root["name"] == "request" and root["parent_span_id"] == "", root
    assert root["service"] == "lancefleet-query-node" and traced.process_of_port[root["port"]] == "qn-0"
    attributes = root["attributes"]
    assert attributes["route"] == "/v1/table/{id}/query" and attributes["method"] == "POST"
    assert attributes["table"] == TABLE and str(attributes["status"]) == "200" and str(attributes["k"]) == "5"
    assert attributes["filter"] in (False, "false") and str(attributes["rows"]) == "5"

    calls = [s for s in trace if s["name"] == "executor_call"]
    fragments = [s for s in trace if s["name"] == "fragment"]
    assert calls and all(c["parent_span_id"] == root["span_id"] for c in calls), calls
    assert all(traced.process_of_port[c["port"]] == "qn-0" for c in calls)
    assert all(str(c["attributes"]["attempt"]) == "1" and c["attributes"].get("outcome") == "ok" for c in calls), calls
    assert sum(int(c["attributes"]["fragments"]) for c in calls) == FRAGMENTS
    # Each fragment span: a child of the executor_call span of the executor that exported it.
    executors = set()
    for fragment in fragments:
        call = spans.get(fragment["parent_span_id"])
        assert call is not None and call["name"] == "executor_call", fragment
        process = traced.process_of_port[fragment["port"]]
        assert process == call["attributes"]["executor"], (process, call["attributes"])
        assert fragment["service"] == "lancefleet-plan-executor"
        fa = fragment["attributes"]
        assert fa["query_id"] == request_id and fa["rpc"] == "execute" and fa["table"].endswith(f"{TABLE}.lance")
        assert str(fa["fragments"]) == str(call["attributes"]["fragments"]), (fa, call["attributes"])
        for key in ("version", "rows", "cache_memory_hits", "cache_disk_hits", "cache_misses", "fetched_bytes",
                    "object_store_requests"):
            assert key in fa, (key, fa)
        executors.add(process)
    assert len(executors) >= 2, f"fragments ran on {executors} only"
    assert {c["attributes"]["executor"] for c in calls} == executors
    # Every span of the trace came from those processes; no span of this query elsewhere.
    assert {traced.process_of_port[s["port"]] for s in trace} == {"qn-0"} | executors
    assert all(s["trace_id"] == root["trace_id"] for s in traced.spans(query_id=request_id))

    # The request id on every log line each node wrote for the query.
    time.sleep(0.2)
    answered = [line for line in json_lines(fleet.query_node.log_path, mark[fleet.query_node.log_path])
                if line.get("message") == "request answered"]
    assert [line["span"]["request_id"] for line in answered] == [request_id], answered
    for path in logs:
        node = path.stem
        lines = [line for line in json_lines(path, mark[path]) if "span" in line]
        if node in executors:
            assert any(line.get("message") == "fragment answered" and line["span"].get("query_id") == request_id
                       for line in lines), f"{node}: no 'fragment answered' line for {request_id}"
        elif node != "qn-0":
            assert not lines, f"{node} served no fragment of the query but logged {lines}"
        missing = [line for line in lines if request_id not in json.dumps(line)]
        assert not missing, f"{node}: log lines of the query without its request id:\n" + "\n".join(
            json.dumps(line) for line in missing)


def test_a_retried_fragment_is_two_executor_calls_under_one_request(traced):
    fleet = traced.fleet
    warm = f"obs-{uuid.uuid4().hex[:12]}"
    traced.query(warm)
    _, trace = traced.trace_of(warm)
    first = sorted({s["attributes"]["executor"] for s in trace if s["name"] == "executor_call"})[0]
    stopped = next(e for e in fleet.executors if e.node_id == first)
    request_id = f"obs-retry-{uuid.uuid4().hex[:8]}"
    stopped.proc.send_signal(signal.SIGSTOP)
    try:
        traced.query(request_id)
    finally:
        stopped.proc.send_signal(signal.SIGCONT)
    root, trace = traced.trace_of(request_id)
    calls = [s for s in trace if s["name"] == "executor_call"]
    assert all(c["parent_span_id"] == root["span_id"] for c in calls), calls
    failed = [c for c in calls if c["attributes"]["executor"] == first and str(c["attributes"]["attempt"]) == "1"]
    assert len(failed) == 1, calls
    assert failed[0]["attributes"].get("outcome") == "ERROR_CODE_TIMEOUT", f"the timed-out call: {failed[0]}"
    retried = [c for c in calls if str(c["attributes"]["attempt"]) == "2"]
    assert retried and all(c["attributes"].get("outcome") == "ok" and c["attributes"]["executor"] != first
                           for c in retried), calls
    assert sum(int(c["attributes"]["fragments"]) for c in retried) == int(failed[0]["attributes"]["fragments"])
    spans = by_id(trace)
    answered_by = {traced.process_of_port[s["port"]] for s in trace
                   if s["name"] == "fragment" and spans.get(s["parent_span_id"]) in retried}
    assert answered_by == {c["attributes"]["executor"] for c in retried}, answered_by


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def test_a_callers_traceparent_makes_the_request_span_its_child(traced):
    header, trace_id, parent = traceparent()
    request_id = f"obs-tp-{uuid.uuid4().hex[:8]}"
    traced.query(request_id, {"traceparent": header})
    root, trace = traced.trace_of(request_id)
    assert root["trace_id"] == trace_id and root["parent_span_id"] == parent, root
    assert {s["name"] for s in trace} >= {"request", "executor_call", "fragment"}

    # An unsampled caller: nothing is exported for the request, anywhere.
    header, unsampled_trace, _ = traceparent(sampled=False)
    quiet = f"obs-unsampled-{uuid.uuid4().hex[:8]}"
    traced.query(quiet, {"traceparent": header})
    after = f"obs-after-{uuid.uuid4().hex[:8]}"
    traced.query(after)
    traced.trace_of(after)  # spans exported after the unsampled request's have arrived
    assert not [s for s in traced.receiver.snapshot()
                if s["trace_id"] == unsampled_trace or quiet in json.dumps(s["attributes"])]


def test_a_flight_callers_traceparent_and_request_id(traced):
    import pyarrow.flight as flight

    received = {}

    class Capture(flight.ClientMiddleware):
        def received_headers(self, headers):
            received.update(headers)

    class CaptureFactory(flight.ClientMiddlewareFactory):
        def start_call(self, info):
            return Capture()

    header, trace_id, parent = traceparent()
    request_id = f"obs-flight-{uuid.uuid4().hex[:8]}"
    client = flight.connect(traced.fleet.query_node.flight_url, middleware=[CaptureFactory()])
    options = flight.FlightCallOptions(headers=[(b"traceparent", header.encode()),
                                                (b"x-request-id", request_id.encode())])
    ticket = {"table": TABLE, "vector": [0.5] * DIM, "k": 4}
    assert client.do_get(flight.Ticket(json.dumps(ticket)), options).read_all().num_rows == 4
    client.close()
    assert request_id in received.get("x-request-id", []), received
    root, trace = traced.trace_of(request_id)
    assert root["name"] == "flight" and root["attributes"]["method"] == "DoGet", root
    assert root["trace_id"] == trace_id and root["parent_span_id"] == parent, root
    calls = [s for s in trace if s["name"] == "executor_call"]
    assert calls and all(c["parent_span_id"] == root["span_id"] for c in calls)
    assert all(s["attributes"]["query_id"] == request_id for s in trace if s["name"] == "fragment")


def test_traces_do_not_depend_on_the_log_level(tmp_path):
    """Logs at `warn` (a usual production setting) still export every span of a query: on
    the query node (request, executor_call) and on the executor (fragment)."""
    data = tmp_path / "data"
    data.mkdir()
    write_table(data)
    receiver = OtlpReceiver(tmp_path / "spans.jsonl", ports=2).start()
    quiet = {**FLUSH, "LANCEFLEET_LOG__LEVEL": "warn", "NO_COLOR": "1"}
    executor = PlanExecutor(tmp_path, data, "pe-0")
    log = open(executor.log_path, "ab")
    executor.proc = subprocess.Popen(
        [lancefleet_bin(), "plan-executor", "--data-dir", str(data), "--node-id", "pe-0",
         "--listen", f"127.0.0.1:{executor.port}", "--metrics-listen", f"127.0.0.1:{executor.metrics_port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **quiet, "LANCEFLEET_TRACE__OTLP_ENDPOINT": receiver.endpoint(1)})
    node = None
    try:
        wait_until(lambda: executor.proc.poll() is not None or serves(f"http://127.0.0.1:{executor.metrics_port}"),
                   60, "the executor's /health")
        assert executor.proc.poll() is None, executor.log_path.read_text()[-3000:]
        node = QueryNode(tmp_path, data, {**quiet, "LANCEFLEET_TRACE__OTLP_ENDPOINT": receiver.endpoint(0)},
                         executors=[executor.endpoint]).start()
        status, headers, body = raw_request(node.url, "POST", f"/v1/table/{TABLE}/query/",
                                            json_body(query_body([0.5] * DIM, k=3)),
                                            {"content-type": "application/json", "x-request-id": "quiet-logs"})
        assert status == 200, body[:300]
        time.sleep(1)
    finally:
        if node is not None:
            node.stop()
        executor.stop()
        log.close()
        receiver.stop()
    names = sorted({s["name"] for s in receiver.snapshot()
                    if s["name"] in ("request", "executor_call", "fragment")})
    assert names == ["executor_call", "fragment", "request"], f"spans exported with log.level=warn: {names}"


def serves(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
        return True
    except OSError:
        return False


def test_with_tracing_off_nothing_is_exported_or_propagated(tmp_path):
    """The query node has no endpoint: a receiver on the OTLP default port (localhost:4317,
    IPv4 and IPv6, where free) gets nothing. The executor does export (to its own port), and
    its fragment spans are roots: the query node sent no trace context."""
    import grpc
    from concurrent import futures
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    data = tmp_path / "data"
    data.mkdir()
    write_table(data)
    calls = []

    class Default(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the gRPC method name
            calls.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    default = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Default(), default)
    listening = [host for host in ("127.0.0.1", "::1") if bindable(host, 4317)
                 and default.add_insecure_port(f"[{host}]:4317" if ":" in host else f"{host}:4317") == 4317]
    default.start()
    receiver = OtlpReceiver(tmp_path / "spans.jsonl", ports=1).start()
    executor = PlanExecutor(tmp_path, data, "pe-0", {**FLUSH, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(0),
                                                     "LANCEFLEET_LOG__FORMAT": "json"}).start()
    node = QueryNode(tmp_path, data, dict(FLUSH), executors=[executor.endpoint]).start()
    try:
        for index in range(3):
            status, headers, body = raw_request(node.url, "POST", f"/v1/table/{TABLE}/query/",
                                                json_body(query_body([0.5] * DIM, k=3)),
                                                {"content-type": "application/json", "x-request-id": f"off-{index}"})
            assert status == 200 and headers["x-request-id"] == f"off-{index}", body[:300]
        wait_until(lambda: len([s for s in receiver.snapshot() if s["name"] == "fragment"]) >= 3, 15,
                   "the executor's fragment spans")
    finally:
        assert node.stop() == 0  # a graceful stop flushes whatever a tracer would have
        executor.stop()
        receiver.stop()
        time.sleep(0.5)
        default.stop(grace=1).wait()
    fragments = [s for s in receiver.snapshot() if s["name"] == "fragment"]
    assert all(s["parent_span_id"] == "" for s in fragments), "the query node propagated a trace context"
    assert len({s["trace_id"] for s in fragments}) == len(fragments)
    assert {s["attributes"]["query_id"] for s in fragments} == {"off-0", "off-1", "off-2"}
    assert not [s for s in receiver.snapshot() if s["service"] == "lancefleet-query-node"]
    assert not calls, f"the query node exported {len(calls)} batches to the default endpoint"
    print(f"\ndefault OTLP endpoint watched on {listening or 'no free address'}")
    assert any(line.get("message") == "request answered" for line in json_lines(node.log_path))
