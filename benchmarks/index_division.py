"""Does vector index work divide over executors? CPU time the plan executors spend per warm
IVF_PQ query, 3 executors against 1, and how it is shared among the 3, for one table with
its index as one segment (as lance builds it) and a copy with its index as segments placed
with their fragments (as the indexer keeps it).

    python benchmarks/index_division.py --bin <lancefleet> [--rows 200000 --dim 128 --partitions 64 --queries 200]

Local directory storage. One table of --rows random vectors in 24 fragments gets an IVF_PQ
index from pylance; a copy of it is given to `lancefleet indexer --once` with
`indexer.vector_segment_rows` at a --segments'th of the table (default 8), which rebuilds
its index as that many segments. Each table is queried (k=10, nprobes a third of the partitions, refine 1) through
a query node with 3 plan executors and with 1, after a warm-up; the executors' CPU time
comes from /proc. Index work is divided when the 3 executors together spend about what one
spends (ratio near 1, where searching the whole index on every executor for its own
fragments costs about 3) and the busiest of them does about a third of it. Not a test:
numbers go into the issue notes. Any build works (the ratios compare a binary with itself).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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


def build(data: Path, rows: int, dim: int, partitions: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.random((rows, dim), dtype=np.float32)
    table = pa.table({
        "id": pa.array(np.arange(rows), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    })
    dataset = lance.write_dataset(table, str(data / "whole.lance"), max_rows_per_file=rows // FRAGMENTS)
    dataset.create_index("vector", index_type="IVF_PQ", num_partitions=partitions, num_sub_vectors=dim // 16)


def segment(binary: str, data: Path, rows: int, segments: int, log) -> None:
    """Copies `whole` to `segmented` and has `indexer --once` (over a directory of that copy
    alone) rebuild its index as `segments` segments."""
    alone = data.parent / "to-segment"
    shutil.rmtree(alone, ignore_errors=True)
    shutil.copytree(data / "whole.lance", alone / "segmented.lance")
    env = {**os.environ, "LANCEFLEET_INDEXER__VECTOR_SEGMENT_ROWS": str(-(-rows // segments)),
           "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": str(rows // FRAGMENTS),
           "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0", "NO_COLOR": "1"}
    subprocess.run([binary, "indexer", "--data-dir", str(alone), "--once"], env=env, check=True, stdout=log,
                   stderr=subprocess.STDOUT)
    shutil.move(alone / "segmented.lance", data / "segmented.lance")


def measure(binary: str, data: Path, log_path: Path, executors: int, queries: np.ndarray,
            nprobes: int, perf: str | None = None) -> dict[str, tuple]:
    """Per table, after a warm-up: the executors' CPU ms per query, the busiest one's share
    of it, and the median latency in ms. With `perf` (a directory), each table's timed
    queries are recorded by `perf record` into `{executors}-executors-{table}.data` there."""
    servers = start(binary, data, log_path, executors)
    try:
        db = lancedb.connect("db://bench", host_override=servers.url, api_key="bench")
        results = {}
        for name in ("whole", "segmented"):
            table = db.open_table(name)
            search = lambda q: table.search(q).nprobes(nprobes).refine_factor(1).limit(10).to_arrow()  # noqa: E731
            for q in queries[:20]:
                search(q)
            pids = [p.pid for p in servers.processes[:executors]]
            recorder = None
            if perf:
                output = str(Path(perf) / f"{executors}-executors-{name}.data")
                recorder = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-o", output, "-p",
                                             ",".join(map(str, pids))], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                time.sleep(1)
            before = [cpu_seconds(pid) for pid in pids]
            latencies = []
            for q in queries:
                started = time.perf_counter()
                search(q)
                latencies.append(time.perf_counter() - started)
            if recorder:
                recorder.send_signal(signal.SIGINT)
                recorder.wait()
            spent = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
            per_query = sum(spent) / len(queries) * 1000
            results[name] = (per_query, max(spent) / max(sum(spent), 1e-9), float(np.median(latencies)) * 1000)
        return results
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--segments", type=int, default=8, help="index segments of the segmented copy")
    parser.add_argument("--perf", help="record every timed pass with `perf record -g` into this directory, one "
                        "file per pass (the CPU numbers then include perf's sampling: measure without it)")
    parser.add_argument("--indexer-bin", help="the binary that segments the index (default --bin): a release "
                        "build's, when --bin is a debug build profiled for its symbols")
    parser.add_argument("--tables", help="keep the two tables in this directory and reuse them when it holds "
                        "them already (runs comparing builds or settings need not build them again; give the same "
                        "--partitions)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, log_path = Path(args.tables or Path(tmp) / "data"), Path(tmp) / "servers.log"
        if not (data / "segmented.lance").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            build(data, args.rows, args.dim, args.partitions)
            with open(log_path, "ab") as log:
                segment(args.indexer_bin or args.bin, data, args.rows, args.segments, log)
        segmented = lance.dataset(str(data / "segmented.lance"))
        segments = len([i for i in segmented.list_indices() if i["name"] == "vector_idx"])
        args.rows, args.dim = segmented.count_rows(), segmented.schema.field("vector").type.list_size
        print(f"{args.rows} x {args.dim}, {FRAGMENTS} fragments; the segmented copy has {segments} segments")
        queries = np.random.default_rng(1).random((args.queries, args.dim), dtype=np.float32)
        nprobes = max(1, args.partitions // 3)
        if args.perf:
            Path(args.perf).mkdir(parents=True, exist_ok=True)
        one = measure(args.bin, data, log_path, 1, queries, nprobes, args.perf)
        three = measure(args.bin, data, log_path, 3, queries, nprobes, args.perf)
        print(f"{'index':<10} {'CPU ms/q, 1 executor':>21} {'CPU ms/q, 3 executors':>22} {'ratio':>6} "
              f"{'busiest of 3':>13} {'p50 ms (1)':>11} {'p50 ms (3)':>11}")
        for name in ("whole", "segmented"):
            (cpu1, _, p1), (cpu3, busiest, p3) = one[name], three[name]
            print(f"{name:<10} {cpu1:>21.2f} {cpu3:>22.2f} {cpu3 / cpu1:>6.2f} {busiest:>12.0%} {p1:>11.1f} {p3:>11.1f}")
        # The bar: a segmented index over 3 executors against one process searching
        # the index as lance builds it.
        print(f"segmented over 3 executors / whole index in 1: CPU {three['segmented'][0] / one['whole'][0]:.2f}x, "
              f"p50 {three['segmented'][2] / one['whole'][2]:.2f}x")


if __name__ == "__main__":
    main()
