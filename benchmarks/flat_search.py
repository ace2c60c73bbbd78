"""Flat k=10 vector search: LanceFleet REST vs lance in-process, interleaved, on one table.

    python benchmarks/flat_search.py --bin <release lancefleet> [--rows 100000 --dim 768]

Builds (once, cached under --work) a table of random float32 vectors with LanceDB OSS,
starts `lancefleet standalone` over the same directory, then runs the same queries through
 * the official lancedb client against the REST API, and
 * pylance (the same lance version as the server) in this process,
alternating query by query so machine noise hits both sides alike. Reports p50/p99 and the
ratio REST / in-process. Not a test: numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
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


def build_table(root: Path, rows: int, dim: int) -> None:
    marker = root / f"bench_{rows}x{dim}.lance"
    if marker.exists():
        return
    rng = np.random.default_rng(42)
    db = lancedb.connect(str(root))
    batch = 10_000
    for start in range(0, rows, batch):
        count = min(batch, rows - start)
        vectors = rng.random((count, dim), dtype=np.float32)
        data = pa.table({
            "id": pa.array(np.arange(start, start + count, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        })
        if start == 0:
            db.create_table(marker.stem, data)
        else:
            db.open_table(marker.stem).add(data)


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="lancefleet binary (release build)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/lancefleet-bench"))
    args = parser.parse_args()

    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    build_table(root, args.rows, args.dim)
    name = f"bench_{args.rows}x{args.dim}"

    port = free_port()
    server = subprocess.Popen(
        [args.bin, "standalone", "--data-dir", str(root), "--rest-listen", f"127.0.0.1:{port}", "--flight-listen", "127.0.0.1:0", "--log-level", "warn"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.1)

        remote = lancedb.connect("db://bench", api_key="bench", host_override=f"http://127.0.0.1:{port}")
        remote_table = remote.open_table(name)
        dataset = lance.dataset(str(root / f"{name}.lance"))
        rng = np.random.default_rng(7)
        queries = rng.random((args.queries + args.warmup, args.dim), dtype=np.float32)

        def via_rest(q):
            return remote_table.search(q).limit(10).to_arrow()

        def in_process(q):
            return dataset.to_table(nearest={"column": "vector", "q": q, "k": 10, "use_index": False})

        rest_ms, local_ms = [], []
        for index, q in enumerate(queries):
            order = [(via_rest, rest_ms), (in_process, local_ms)]
            if index % 2:
                order.reverse()
            results = []
            for run, samples in order:
                started = time.perf_counter()
                results.append(run(q))
                if index >= args.warmup:
                    samples.append((time.perf_counter() - started) * 1000)
            ids = [r["id"].to_pylist() for r in results]
            assert ids[0] == ids[1], f"results differ for query {index}: {ids}"

        print(f"flat k=10 over {args.rows} x {args.dim} float32, {args.queries} queries, interleaved")
        print(f"{'path':<22}{'p50 ms':>10}{'p99 ms':>10}")
        for label, samples in (("REST (lancedb client)", rest_ms), ("lance in-process", local_ms)):
            print(f"{label:<22}{percentile(samples, 50):>10.1f}{percentile(samples, 99):>10.1f}")
        print(f"ratio REST / in-process: p50 {percentile(rest_ms, 50) / percentile(local_ms, 50):.2f}, "
              f"p99 {percentile(rest_ms, 99) / percentile(local_ms, 99):.2f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
