"""Does vector index work divide over executors? CPU time the plan executors spend per warm
IVF_PQ query, 3 executors against 1, for the same table with its index as one segment (as
lance builds it) and as segments placed with their fragments (as the indexer keeps it).

    python benchmarks/index_division.py --bin <lancefleet> [--rows 200000 --dim 128 --queries 200]

Local directory storage. One table of --rows random vectors in 24 fragments gets an IVF_PQ
index from pylance, and a copy of it is given to `lancefleet indexer --once` with
`indexer.vector_segment_rows` at an eighth of the table, which rebuilds the index as 8
segments. Each table is queried (k=10, nprobes 20, refine 1) through a query node with 3
plan executors and with 1, after a warm-up; the executors' CPU time comes from /proc. With
one segment every executor searches the whole index (prefiltered to its fragments), so the
3-executor total is near 3x the single executor's; with segments it should stay near 1x.
Not a test: numbers go into the issue notes. Any build works (the ratios compare the same
binary with itself).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa

from servers import start

FRAGMENTS = 24
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def build(data: Path, rows: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.random((rows, dim), dtype=np.float32)
    table = pa.table({
        "id": pa.array(np.arange(rows), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    })
    dataset = lance.write_dataset(table, str(data / "whole.lance"), max_rows_per_file=rows // FRAGMENTS)
    dataset.create_index("vector", index_type="IVF_PQ", num_partitions=64, num_sub_vectors=dim // 16)
    shutil.copytree(data / "whole.lance", data / "segmented.lance")


def segment(binary: str, data: Path, rows: int, log) -> int:
    """Runs `indexer --once` with segments of an eighth of the table; the segments made."""
    env = {**os.environ, "LANCEFLEET_INDEXER__VECTOR_SEGMENT_ROWS": str(rows // 8),
           "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": str(rows // FRAGMENTS),
           "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0", "NO_COLOR": "1"}
    subprocess.run([binary, "indexer", "--data-dir", str(data), "--once"], env=env, check=True, stdout=log,
                   stderr=subprocess.STDOUT)
    return len([i for i in lance.dataset(str(data / "segmented.lance")).list_indices() if i["name"] == "vector_idx"])


def measure(binary: str, data: Path, log_path: Path, executors: int, queries: np.ndarray) -> dict[str, tuple]:
    """Per table: executor CPU ms per query and median latency ms, after a warm-up."""
    servers = start(binary, data, log_path, executors)
    try:
        db = lancedb.connect("db://bench", host_override=servers.url, api_key="bench")
        results = {}
        for name in ("whole", "segmented"):
            table = db.open_table(name)
            search = lambda q: table.search(q).nprobes(20).refine_factor(1).limit(10).to_arrow()  # noqa: E731
            for q in queries[:20]:
                search(q)
            pids = [p.pid for p in servers.processes[:executors]]
            before = [cpu_seconds(pid) for pid in pids]
            latencies = []
            for q in queries:
                started = time.perf_counter()
                search(q)
                latencies.append(time.perf_counter() - started)
            spent = sum(cpu_seconds(pid) for pid in pids) - sum(before)
            results[name] = (spent / len(queries) * 1000, float(np.median(latencies)) * 1000)
        return results
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, log_path = Path(tmp) / "data", Path(tmp) / "servers.log"
        data.mkdir()
        build(data, args.rows, args.dim)
        with open(log_path, "ab") as log:
            segments = segment(args.bin, data, args.rows, log)
        print(f"{args.rows} x {args.dim}, {FRAGMENTS} fragments; the segmented copy has {segments} segments")
        queries = np.random.default_rng(1).random((args.queries, args.dim), dtype=np.float32)
        one = measure(args.bin, data, log_path, 1, queries)
        three = measure(args.bin, data, log_path, 3, queries)
        print(f"{'index':<10} {'1 executor CPU ms/q':>20} {'3 executors CPU ms/q':>21} {'ratio':>6} "
              f"{'p50 ms (1)':>11} {'p50 ms (3)':>11}")
        for name in ("whole", "segmented"):
            (cpu1, p1), (cpu3, p3) = one[name], three[name]
            print(f"{name:<10} {cpu1:>20.2f} {cpu3:>21.2f} {cpu3 / cpu1:>6.2f} {p1:>11.1f} {p3:>11.1f}")


if __name__ == "__main__":
    main()
