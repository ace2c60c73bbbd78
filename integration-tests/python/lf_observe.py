"""Helpers of the observability tests (test_observability.py, test_tracing.py) and of
benchmarks/tracing_overhead.py:

- QueryNode: one `lancefleet query-node` (or `standalone`) process, JSON logs;
- Fleet: a whole cluster on loopback — etcd, plan executors, control planes, an indexer
  and a query node (any of them optional), each process its own log file;
- OtlpReceiver: a real OTLP/gRPC trace receiver (the TraceService of the
  `opentelemetry-proto` package served by grpcio) writing one JSON line per span;
- Prometheus: Debian's `prometheus` on a free port, scraping given targets every second,
  queried through its HTTP API;
- dashboard_queries(): every PromQL expression of a Grafana dashboard JSON, with the
  Grafana variables substituted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
import requests
import yaml

from conftest import READY_TIMEOUT_S, STOP_TIMEOUT_S, PlanExecutor, free_port, lancefleet_bin
from lf_control import ControlPlane, Etcd, Indexer, etcd_env, serving_executors, wait_until
from lf_helpers import parse_metrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lancefleet"
DASHBOARDS = CHART / "dashboards"
ALERTS = CHART / "alerts"
DOC = REPO / "docs" / "observability.md"


def json_lines(path: Path, since: int = 0) -> list[dict]:
    """The JSON objects of a log file from byte `since` on (other lines skipped)."""
    try:
        with open(path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


class QueryNode:
    """One `lancefleet query-node` (default) or `standalone` process, JSON logs to its file."""

    def __init__(self, root: Path, data_dir, env: dict, node_id: str = "qn-0", executors=(), role: str = "query-node"):
        self.root = Path(root)
        self.data_dir = data_dir
        self.env = env
        self.node_id = node_id
        self.executors = list(executors)
        self.role = role
        self.log_path = self.root / f"{node_id}.log"
        self.port = self.flight_port = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def flight_url(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def start(self) -> "QueryNode":
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port, self.flight_port = free_port(), free_port()
            cmd = [
                lancefleet_bin(), self.role, "--data-dir", str(self.data_dir), "--node-id", self.node_id,
                "--rest-listen", f"127.0.0.1:{self.port}", "--flight-listen", f"127.0.0.1:{self.flight_port}",
                "--log-format", "json",
            ]
            for executor in self.executors:
                cmd += ["--executor", executor]
            start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "NO_COLOR": "1", "LANCEFLEET_INDEXER__EMBEDDED": "false", **self.env},
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)  # readiness polling only
            output = self.log_path.read_text(errors="replace")[start:]
            if self.proc.poll() is None:
                self.proc.kill()
                pytest.fail(f"{self.role} {self.node_id} not ready within {READY_TIMEOUT_S}s\n{output[-4000:]}")
            if "in use" not in output:
                pytest.fail(f"{self.role} {self.node_id} exited with {self.proc.returncode}\n{output[-4000:]}")
        pytest.fail(f"{self.role} {self.node_id} found no free port")

    def logs(self) -> list[dict]:
        return json_lines(self.log_path)

    def metrics_text(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.node_id} did not exit within {STOP_TIMEOUT_S}s of SIGTERM") from None


def stop_quietly(process) -> None:
    """Stops a helper-managed process if it still runs (teardown: never raises)."""
    proc = getattr(process, "proc", None)
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


class Fleet:
    """A cluster on loopback: etcd (when `control_planes` or `indexer`), `executors` plan
    executors (JSON logs, their `fragment answered` debug lines included), `control_planes`
    control-plane instances, an indexer and a query node, all over `data_dir`.

    `env` goes to every process; `query_env` to the query node only; `executor_env(i)` to
    executor i. Without etcd the query node gets the executors as `--executor` flags."""

    def __init__(self, root: Path, data_dir, *, cluster: str = "obs", executors: int = 3, control_planes: int = 2,
                 indexer: bool = True, env: dict | None = None, query_env: dict | None = None,
                 executor_env=None, lease_ttl: int = 3):
        self.root = Path(root)
        self.data_dir = data_dir
        self.etcd = Etcd(self.root) if (control_planes or indexer) else None
        self.cluster = cluster
        self.lease_ttl = lease_ttl
        self.env = dict(env or {})
        self.query_env = dict(query_env or {})
        self.executor_env = executor_env or (lambda index: {})
        self.n_executors = executors
        self.n_control_planes = control_planes
        self.with_indexer = indexer
        self.executors: list[PlanExecutor] = []
        self.control_planes: list[ControlPlane] = []
        self.indexer: Indexer | None = None
        self.query_node: QueryNode | None = None

    def process_env(self) -> dict:
        logs = {"LANCEFLEET_LOG__FORMAT": "json"}
        if self.etcd is not None:
            return {**logs, **etcd_env(self.etcd, self.cluster, self.lease_ttl), **self.env}
        return {**logs, **self.env}

    def start(self) -> "Fleet":
        try:
            if self.etcd is not None:
                self.etcd.start()
            env = self.process_env()
            self.control_planes = [ControlPlane(self.root, f"cp-{i}", env).start()
                                   for i in range(self.n_control_planes)]
            executor_logs = {"LANCEFLEET_LOG__LEVEL": "info,lancefleet_plan_executor=debug"}
            self.executors = [
                PlanExecutor(self.root, self.data_dir, f"pe-{i}", {**env, **executor_logs, **self.executor_env(i)})
                for i in range(self.n_executors)
            ]
            for executor in self.executors:
                executor.start()
            if self.with_indexer:
                self.indexer = Indexer(self.root, "ix-0", self.data_dir, env).start()
            fixed = [] if self.etcd is not None else [e.endpoint for e in self.executors]
            self.query_node = QueryNode(self.root, self.data_dir, {**env, **self.query_env}, executors=fixed).start()
            if self.control_planes:
                wanted = {e.node_id for e in self.executors}
                wait_until(lambda: serving_executors(self.state()) == wanted, 30, f"executors {sorted(wanted)} serving")
                wait_until(lambda: self.state().get("leader"), 30, "a control-plane leader")
        except BaseException:
            self.stop()
            raise
        return self

    def state(self) -> dict:
        for control_plane in self.control_planes:
            if control_plane.proc is not None and control_plane.proc.poll() is None:
                return control_plane.state()
        raise AssertionError("no control plane is running")

    def metrics_targets(self) -> dict[str, list[str]]:
        """host:port of every /metrics, by Prometheus job (named like the chart's
        ServiceMonitor names them: app.kubernetes.io/component)."""
        targets = {"query-node": [f"127.0.0.1:{self.query_node.port}"],
                   "plan-executor": [f"127.0.0.1:{e.metrics_port}" for e in self.executors]}
        if self.control_planes:
            targets["control-plane"] = [f"127.0.0.1:{c.port}" for c in self.control_planes]
        if self.indexer is not None:
            targets["indexer"] = [f"127.0.0.1:{self.indexer.port}"]
        if self.etcd is not None:
            targets["etcd"] = [f"127.0.0.1:{self.etcd.client_port}"]
        return targets

    def role_metrics_urls(self) -> dict[str, list[str]]:
        """/metrics URLs of the LanceFleet processes, by role."""
        return {role: [f"http://{target}/metrics" for target in targets]
                for role, targets in self.metrics_targets().items() if role != "etcd"}

    def log_paths(self) -> list[Path]:
        processes = [self.query_node, *self.executors, *self.control_planes, self.indexer]
        return [p.log_path for p in processes if p is not None]

    def stop(self) -> None:
        """SIGTERM to everything (query node first, etcd last); never raises."""
        for process in [self.query_node, self.indexer, *self.executors, *self.control_planes]:
            if process is not None:
                stop_quietly(process)
        if self.etcd is not None and self.etcd.proc is not None:
            stop_quietly(self.etcd)


# --------------------------------------------------------------------------- OTLP receiver


def _any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


class OtlpReceiver:
    """A real OTLP/gRPC trace receiver: the opentelemetry-proto TraceService served by grpcio
    on one or more loopback ports. Every exported span becomes one JSON line in `path`
    (and a dict in `spans`): service (the resource's service.name), port (which of the
    receiver's ports it came in on: tells processes apart), name, trace_id, span_id,
    parent_span_id ("" for a root), kind, start/end (unix ns), status, attributes."""

    def __init__(self, path: Path, ports: int = 1):
        self.path = Path(path)
        self.ports = [free_port() for _ in range(ports)]
        self.spans: list[dict] = []
        self.exports = 0
        self.lock = threading.Lock()
        self.servers = []

    def endpoint(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def start(self) -> "OtlpReceiver":
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def __init__(self, port: int):
                self.port = port

            def Export(self, request, context):  # noqa: N802 - the gRPC method name
                rows = []
                for resource_spans in request.resource_spans:
                    resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            rows.append({
                                "service": resource.get("service.name"),
                                "resource": resource,
                                "port": self.port,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "status": span.status.code,
                                "attributes": {kv.key: _any_value(kv.value) for kv in span.attributes},
                            })
                receiver.record(rows)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.path.touch()
        for port in self.ports:  # one server per port, so each span says which port it came in on
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(port), server)
            if server.add_insecure_port(f"127.0.0.1:{port}") != port:
                pytest.fail(f"OTLP receiver cannot listen on 127.0.0.1:{port}")
            server.start()
            self.servers.append(server)
        return self

    def record(self, rows: list[dict]) -> None:
        with self.lock:
            self.exports += 1
            self.spans.extend(rows)
            with open(self.path, "a") as out:
                for row in rows:
                    out.write(json.dumps(row) + "\n")

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.spans)

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace=1).wait()
        self.servers = []


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    """Debian's `prometheus` on a free loopback port, scraping `targets` ({job: [host:port]})
    every `interval`, with its data in `root`."""

    def __init__(self, root: Path, targets: dict[str, list[str]], interval: str = "1s"):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (Debian package prometheus; scripts/test.sh installs it)",
                        pytrace=False)
        self.binary = binary
        self.root = Path(root)
        self.targets = targets
        self.interval = interval
        self.config_path = self.root / "prometheus.yml"
        self.log_path = self.root / "prometheus.log"
        self.port = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.targets.items()
            ],
        }

    def start(self) -> "Prometheus":
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for _attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.root / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)  # readiness polling only
            if self.proc.poll() is None:
                self.proc.kill()
                pytest.fail(f"prometheus not ready\n{self.log_path.read_text()[-3000:]}")
            if "address already in use" not in self.log_path.read_text():
                pytest.fail(f"prometheus exited with {self.proc.returncode}\n{self.log_path.read_text()[-3000:]}")
        pytest.fail("prometheus found no free port")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=30).json()
        if answer.get("status") != "success":
            raise AssertionError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]["result"]

    def active_targets(self) -> list[dict]:
        return requests.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def wait_all_up(self, timeout: float = 30) -> None:
        def up():
            targets = self.active_targets()
            return len(targets) == sum(len(t) for t in self.targets.values()) and all(
                t["health"] == "up" for t in targets)
        wait_until(up, timeout, "every Prometheus target up")

    def stop(self) -> None:
        stop_quietly(self)


# --------------------------------------------------------------------------- dashboards


# What a Grafana server would put in for its built-in interval variables, for a test that
# runs a minute or two with a 1 s scrape interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "30s",
    "__interval": "5s",
    "__range": "2m",
    "__range_s": "120",
    "__interval_ms": "5000",
}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def all_panels(dashboard: dict):
    """Every panel, those inside (collapsed) rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, dashboard: dict) -> str:
    """`expr` with Grafana's variables replaced: the built-in intervals by fixed windows and
    every templating variable by a match-all regex (the dashboards use their variables
    only in `=~` matchers; anything else fails the substitution check)."""
    out = expr
    for name, value in sorted(GRAFANA_BUILTINS.items(), key=lambda item: -len(item[0])):
        out = re.sub(r"\$\{" + re.escape(name) + r"\}|\$" + re.escape(name) + r"\b", value, out)
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable.get("type") == "datasource":
            continue
        out = re.sub(r'=~"\$\{' + re.escape(name) + r'(:[a-z]+)?\}"|=~"\$' + re.escape(name) + r'"', '=~".*"', out)
    if "$" in out:
        raise AssertionError(f"unsubstituted Grafana variable in {expr!r}")
    return out


def dashboard_queries(path: Path) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL with variables substituted) of every panel target."""
    dashboard = json.loads(path.read_text())
    queries = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append((panel["title"], target.get("refId", "?"), substitute(target["expr"], dashboard)))
    return queries


def lancefleet_metric_names(text: str) -> dict[str, str]:
    """{metric family: type} of every `lancefleet_*` family in Prometheus text."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE lancefleet_"):
            _, _, name, kind = line.split()
            families[name] = kind
    for name, _labels in parse_metrics(text):
        if name.startswith("lancefleet_"):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            families.setdefault(base if base in families else name, "untyped")
    return families
