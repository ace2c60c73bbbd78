"""The cost of tracing: warm vector search through the REST API with tracing off, on at
sample ratio 1.0, and on at 0.01, side by side.

    python benchmarks/tracing_overhead.py --binary <release lancefleet> [--rows 100000 --dim 128]

Builds (once, cached under --work) a table of random float32 vectors in 12 fragments with
lance, then starts three identical clusters over that directory, one per mode, each a
`lancefleet query-node` in front of 3 `lancefleet plan-executor` processes:

 * off:   no OTLP endpoint anywhere (nothing exported, no trace context sent to executors);
 * 1.0:   every process exports to a real OTLP/gRPC receiver, `trace.sample_ratio` 1.0;
 * 0.01:  the same with `trace.sample_ratio` 0.01 (executors follow the query node).

The receiver (the `opentelemetry-proto` TraceService on grpcio, as in the tests) runs in a
process of its own and only counts spans. After a warm-up on every cluster, the same
queries go to the three clusters interleaved query by query, the order rotating, so
machine noise hits every mode alike; the official lancedb client sends them. Reports p50
and p99 per mode, the ratios to "off", and the spans received. Not a test: the numbers
go into the issue notes (the issue's bar: ratio 0.01 within noise, <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa

from servers import free_port, wait_healthy

FRAGMENTS = 12
EXECUTORS = 3

RECEIVER = r"""
import json, sys, threading, time
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

out, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
counts = {port: 0 for port in ports}
lock = threading.Lock()

class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port):
        self.port = port
    def Export(self, request, context):
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with lock:
            counts[self.port] += n
        return trace_service_pb2.ExportTraceServiceResponse()

servers = []
for port in ports:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(port), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    servers.append(server)
print("ready", flush=True)
while True:
    time.sleep(0.5)
    with lock:
        text = json.dumps({str(k): v for k, v in counts.items()})
    with open(out + ".tmp", "w") as f:
        f.write(text)
    import os; os.replace(out + ".tmp", out)
"""


def build_table(root: Path, rows: int, dim: int) -> str:
    name = f"trace_{rows}x{dim}"
    uri = root / f"{name}.lance"
    if not uri.exists():
        rng = np.random.default_rng(42)
        for index, ids in enumerate(np.array_split(np.arange(rows), FRAGMENTS)):
            vectors = rng.random((len(ids), dim), dtype=np.float32)
            data = pa.table({"id": pa.array(ids.astype(np.int64)),
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)})
            lance.write_dataset(data, str(uri), mode="create" if index == 0 else "append")
    assert len(lance.dataset(str(uri)).get_fragments()) == FRAGMENTS
    return name


class Cluster:
    """A query node and its executors over `data`; `trace` is the environment that turns
    tracing on (empty: off). Logs at the default level (info) to `log`, alike in every mode."""

    def __init__(self, binary: str, data: Path, log: Path, trace: dict):
        self.processes: list[subprocess.Popen] = []
        env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        env = {**env, "NO_COLOR": "1", "LANCEFLEET_INDEXER__EMBEDDED": "false", **trace}
        out = open(log, "ab")
        executors = []
        for index in range(EXECUTORS):
            port, metrics = free_port(), free_port()
            self.processes.append(subprocess.Popen(
                [binary, "plan-executor", "--data-dir", str(data), "--node-id", f"pe-{index}",
                 "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
            wait_healthy(f"http://127.0.0.1:{metrics}", self.processes[-1])
            executors += ["--executor", f"pe-{index}=http://127.0.0.1:{port}"]
        port = free_port()
        self.processes.append(subprocess.Popen(
            [binary, "query-node", "--data-dir", str(data), "--rest-listen", f"127.0.0.1:{port}",
             "--flight-listen", f"127.0.0.1:{free_port()}", *executors],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.processes[-1])

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="lancefleet binary (a release build)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300, help="measured queries per mode")
    parser.add_argument("--warmup", type=int, default=30, help="queries per mode before measuring")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/lancefleet-bench"))
    args = parser.parse_args()

    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    name = build_table(root, args.rows, args.dim)
    logs = Path(tempfile.mkdtemp(prefix="tracing-overhead-"))

    ports = {"1.0": free_port(), "0.01": free_port()}
    counts_path = logs / "spans.json"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(counts_path), *map(str, ports.values())],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert receiver.stdout.readline().strip() == "ready", "the OTLP receiver did not start"

    def traced(ratio: str) -> dict:
        return {"LANCEFLEET_TRACE__OTLP_ENDPOINT": f"http://127.0.0.1:{ports[ratio]}",
                "LANCEFLEET_TRACE__SAMPLE_RATIO": ratio}

    modes = {"off": {}, "1.0": traced("1.0"), "0.01": traced("0.01")}
    clusters: dict[str, Cluster] = {}
    try:
        for mode, env in modes.items():
            clusters[mode] = Cluster(args.binary, root, logs / f"{mode}.log", env)
        tables = {mode: lancedb.connect("db://bench", api_key="bench", host_override=cluster.url).open_table(name)
                  for mode, cluster in clusters.items()}
        rng = np.random.default_rng(7)
        queries = rng.random((args.warmup + args.queries, args.dim), dtype=np.float32)
        samples: dict[str, list[float]] = {mode: [] for mode in modes}
        order = list(modes)
        for index, query in enumerate(queries):
            shift = index % len(order)
            answers = []
            for mode in order[shift:] + order[:shift]:
                started = time.perf_counter()
                answers.append(tables[mode].search(query).limit(args.k).to_arrow()["id"].to_pylist())
                if index >= args.warmup:
                    samples[mode].append((time.perf_counter() - started) * 1000)
            assert all(answer == answers[0] for answer in answers), f"modes disagree on query {index}"
    finally:
        for cluster in clusters.values():
            cluster.stop()  # a graceful stop flushes the spans still queued
        time.sleep(1.5)
        spans = json.loads(counts_path.read_text()) if counts_path.exists() else {}
        receiver.terminate()
        receiver.wait(timeout=10)

    base50, base99 = percentile(samples["off"], 50), percentile(samples["off"], 99)
    print(f"warm flat k={args.k} search, {args.rows} x {args.dim} float32 in {FRAGMENTS} fragments, "
          f"{EXECUTORS} executors per cluster, {args.queries} queries per mode interleaved "
          f"(after {args.warmup} warm-up), lancedb client over REST")
    print(f"{'tracing':<14}{'p50 ms':>9}{'p99 ms':>9}{'p50/off':>9}{'p99/off':>9}{'spans':>10}")
    for mode in modes:
        p50, p99 = percentile(samples[mode], 50), percentile(samples[mode], 99)
        received = "-" if mode == "off" else str(spans.get(str(ports[mode]), 0))
        label = "off" if mode == "off" else f"ratio {mode}"
        print(f"{label:<14}{p50:>9.2f}{p99:>9.2f}{p50 / base50:>9.3f}{p99 / base99:>9.3f}{received:>10}")
    print(f"logs: {logs}")
    if not spans.get(str(ports["1.0"])):
        raise SystemExit("no spans arrived at ratio 1.0: tracing exported nothing, the numbers compare nothing")


if __name__ == "__main__":
    main()
