"""The unindexed tail, and the indexer that removes it: vector search latency as the tail
grows, after the indexer catches up, ingest through REST while it runs, and how long a
burst of writes takes to be fully indexed.

    python benchmarks/indexer_tail.py --bin <release lancefleet> [--rows 100000 --dim 128]

Local directory storage (the tail costs CPU: every unindexed row is a flat-scanned one).
1. A table of --rows rows with an IVF_PQ index (pylance). `lancefleet standalone` without
   its indexer serves it; --tail rows are appended through REST in 1000-row batches, and
   at tails of 0, 10k and 100k rows the same IVF_PQ queries (k=10, nprobes=20) run through
   REST and through lance in-process on the same directory, interleaved (baseline).
2. The server restarts with its embedded indexer (index optimize at 1 unindexed row,
   compaction at 8 small fragments): time until the index covers every row, then the same
   queries again.
3. Sustained ingest: --ingest-seconds of 1000-row appends from 2 client threads, with the
   indexer running and (baseline) without it; and lance in-process appends.
4. A burst of 50 appends of 1000 rows, then the time until the index covers all of them.
Not a test: numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa
import requests

TABLE = "tail"
BATCH = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch(start: int, rows: int, dim: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(np.arange(start, start + rows), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(rows * dim, dtype=np.float32)), dim),
    })


class Server:
    def __init__(self, binary: str, data: Path, log: Path, indexer: bool):
        self.port = free_port()
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "LANCEFLEET_INDEXER__EMBEDDED": "true" if indexer else "false",
            "LANCEFLEET_INDEXER__OPTIMIZE_MIN_UNINDEXED_ROWS": "1",
        }
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "standalone", "--data-dir", str(data), "--rest-listen", f"127.0.0.1:{self.port}", "--flight-listen", "127.0.0.1:0"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        self.table = lancedb.connect("db://bench", api_key="k", host_override=self.url).open_table(TABLE)

    def unindexed(self) -> int:
        stats = requests.post(f"{self.url}/v1/table/{TABLE}/index/vector_idx/stats/", json={}, timeout=60).json()
        return stats["num_unindexed_rows"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def search_timings(server: Server, uri: str, queries: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Each query through REST then through lance in-process (a fresh open each time, like
    a strong read), interleaved; milliseconds."""
    rest, local = [], []
    for query in queries:
        started = time.perf_counter()
        server.table.search(query).nprobes(20).limit(10).to_arrow()
        rest.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        lance.dataset(uri).to_table(nearest={"column": "vector", "q": query, "k": 10, "nprobes": 20})
        local.append((time.perf_counter() - started) * 1000)
    return rest, local


def report(label: str, rest: list[float], local: list[float]) -> None:
    (rest50, rest99), (local50, local99) = percentiles(rest), percentiles(local)
    print(
        f"{label:<28} REST p50 {rest50:7.1f} p99 {rest99:7.1f} ms | lance in-process p50 {local50:7.1f} "
        f"p99 {local99:7.1f} ms | p50 ratio {rest50 / local50:4.2f}",
        flush=True,
    )


def ingest(server: Server, dim: int, seconds: float, start_id: int) -> tuple[int, float]:
    """Appends 1000-row batches from two threads for `seconds`; (rows, rows per second)."""
    written = [0, 0]
    stop = time.monotonic() + seconds

    def writer(slot: int) -> None:
        table = lancedb.connect("db://bench", api_key="k", host_override=server.url).open_table(TABLE)
        next_id = start_id + slot * 10_000_000
        while time.monotonic() < stop:
            table.add(batch(next_id, BATCH, dim, seed=next_id))
            next_id += BATCH
            written[slot] += BATCH

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(written), sum(written) / (time.monotonic() - started)


def wait_indexed(server: Server, timeout: float = 1800) -> float:
    started = time.monotonic()
    while server.unindexed() > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError("the indexer did not catch up")
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--ingest-seconds", type=float, default=30)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lancefleet-bench" / "tail")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    data = args.work / "data"
    data.mkdir(parents=True)
    uri = str(data / f"{TABLE}.lance")
    log = args.work / "server.log"
    base = batch(0, args.rows, args.dim, seed=1)
    lance.write_dataset(base, uri, max_rows_per_file=args.rows)
    lance.dataset(uri).create_index(
        "vector", index_type="IVF_PQ", name="vector_idx", num_partitions=max(1, int(args.rows**0.5)),
        num_sub_vectors=args.dim // 16,
    )
    rng = np.random.default_rng(7)
    queries = [rng.random(args.dim, dtype=np.float32) for _ in range(args.queries)]
    print(f"table: {args.rows} x {args.dim} IVF_PQ; queries k=10 nprobes=20, {args.queries} per point", flush=True)

    server = Server(args.bin, data, log, indexer=False)
    next_id = args.rows
    for tail in [0, 10_000, 100_000]:
        while next_id - args.rows < tail:
            server.table.add(batch(next_id, BATCH, args.dim, seed=next_id))
            next_id += BATCH
        search_timings(server, uri, queries[:5])
        report(f"unindexed tail {tail:>6} rows", *search_timings(server, uri, queries))
    server.stop()

    server = Server(args.bin, data, log, indexer=True)
    caught_up = wait_indexed(server)
    fragments = len(lance.dataset(uri).get_fragments())
    print(f"indexer caught up with a 100000-row tail in {caught_up:.1f} s ({fragments} fragments after)", flush=True)
    search_timings(server, uri, queries[:5])
    report("after the indexer caught up", *search_timings(server, uri, queries))

    rows, with_indexer = ingest(server, args.dim, args.ingest_seconds, 100_000_000)
    print(f"ingest with the indexer running: {with_indexer:8.0f} rows/s ({rows} rows)", flush=True)
    caught_up = wait_indexed(server)
    print(f"  indexed {caught_up:.1f} s after the ingest stopped", flush=True)

    burst_start = time.monotonic()
    for number in range(50):
        server.table.add(batch(200_000_000 + number * BATCH, BATCH, args.dim, seed=number))
    burst = time.monotonic() - burst_start
    indexed = wait_indexed(server)
    print(f"burst of 50 x {BATCH} rows: written in {burst:.1f} s, fully indexed {indexed:.1f} s after the last write",
          flush=True)
    server.stop()

    server = Server(args.bin, data, log, indexer=False)
    rows, without = ingest(server, args.dim, args.ingest_seconds, 300_000_000)
    print(f"ingest without an indexer:       {without:8.0f} rows/s ({rows} rows); with/without {with_indexer / without:4.2f}",
          flush=True)
    server.stop()

    started, written = time.monotonic(), 0
    while time.monotonic() - started < args.ingest_seconds:
        lance.write_dataset(batch(400_000_000 + written, BATCH, args.dim, seed=written), uri, mode="append")
        written += BATCH
    local = written / (time.monotonic() - started)
    print(f"lance in-process appends:        {local:8.0f} rows/s; REST with indexer / lance {with_indexer / local:4.2f}",
          flush=True)


if __name__ == "__main__":
    main()
