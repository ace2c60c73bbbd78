"""Does bounded-load spill help? The same concurrent query load through two query nodes in
front of the same plan executors, one without spill (the default) and one with
`cluster.spill_above_average_percent`, alternating in rounds.

    python benchmarks/spill.py --bin <release lancefleet>

The table has few fragments (--fragments), so consistent hashing leaves the executors
unevenly loaded: the case spill is meant for. Each round runs --threads clients doing flat
k=10 searches for --seconds; rounds alternate between the two query nodes so machine
noise hits both alike. Numbers are ratios on one shared machine: every executor competes
for the same cores, so this measures the scheduling effect only, not added hardware.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def run_round(url: str, queries: list[np.ndarray], threads: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        table = lancedb.connect("db://bench", api_key="x", host_override=url).open_table("t")
        turn = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            table.search(queries[turn % len(queries)]).limit(10).to_arrow()
            latencies.append(time.perf_counter() - started)
            turn += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--fragments", type=int, default=6)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spill-percent", type=int, default=25)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lancefleet-spill-"))
    processes: list[subprocess.Popen] = []
    try:
        rng = np.random.default_rng(3)
        vectors = rng.random((args.rows, args.dim), dtype=np.float32)
        for index, rows in enumerate(np.array_split(np.arange(args.rows), args.fragments)):
            data = pa.table({
                "id": pa.array(rows, pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), args.dim),
            })
            lance.write_dataset(data, str(work / "t.lance"), mode="create" if index == 0 else "append")
        endpoints = []
        metrics_ports = []
        for index in range(args.executors):
            port = free_port()
            metrics_ports.append(free_port())
            processes.append(subprocess.Popen(
                [args.bin, "plan-executor", "--data-dir", str(work), "--node-id", f"pe-{index}",
                 "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_ports[-1]}",
                 "--log-level", "warn"], stdin=subprocess.DEVNULL,
            ))
            endpoints += ["--executor", f"pe-{index}=http://127.0.0.1:{port}"]
            wait_port(port)
        urls = {}
        for mode, percent in (("no spill", None), (f"spill +{args.spill_percent}%", args.spill_percent)):
            rest = free_port()
            env = dict(os.environ)
            if percent is not None:
                env["LANCEFLEET_CLUSTER__SPILL_ABOVE_AVERAGE_PERCENT"] = str(percent)
            processes.append(subprocess.Popen(
                [args.bin, "query-node", "--data-dir", str(work), "--rest-listen", f"127.0.0.1:{rest}",
                 "--log-level", "warn", *endpoints], env=env, stdin=subprocess.DEVNULL,
            ))
            wait_port(rest)
            urls[mode] = f"http://127.0.0.1:{rest}"
        queries = [rng.random(args.dim, dtype=np.float32) for _ in range(32)]
        for url in urls.values():  # warm-up: open datasets everywhere
            run_round(url, queries, 2, 2)

        results: dict[str, list[float]] = {mode: [] for mode in urls}
        elapsed: dict[str, float] = {mode: 0.0 for mode in urls}
        for _ in range(args.rounds):
            for mode, url in urls.items():
                started = time.monotonic()
                results[mode] += run_round(url, queries, args.threads, args.seconds)
                elapsed[mode] += time.monotonic() - started

        print(f"flat k=10 over {args.rows} x {args.dim} in {args.fragments} fragments, {args.executors} executors, "
              f"{args.threads} client threads, {args.rounds} x {args.seconds:.0f} s rounds per mode")
        print(f"{'mode':16} {'queries/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for mode, latencies in results.items():
            array = np.array(latencies) * 1000
            print(f"{mode:16} {len(latencies) / elapsed[mode]:10.1f} {np.percentile(array, 50):8.1f} "
                  f"{np.percentile(array, 99):8.1f}")
        for mode, url in urls.items():
            text = requests.get(f"{url}/metrics", timeout=10).text
            choices = [line for line in text.splitlines() if line.startswith("lancefleet_query_fragments_total")]
            print(mode, "placement:", "; ".join(choices))
        for index, port in enumerate(metrics_ports):
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            done = [line.split()[-1] for line in text.splitlines() if line.startswith("lancefleet_executor_fragments_total")]
            print(f"pe-{index} fragment calls (both modes): {' '.join(done)}")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
