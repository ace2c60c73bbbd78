"""Flat k=10 vector search: LanceFleet REST vs lance in-process, interleaved, on one table.

    python benchmarks/flat_search.py --bin <release lancefleet> [--rows 100000 --dim 768] [--executors 3]

Builds (once, cached under --work) a table of random float32 vectors with LanceDB OSS (one
fragment up to 1M rows; before 2026-11-30, ten of 10k rows), starts `lancefleet standalone` over the same directory, then runs
the same queries through
 * the official lancedb client against the REST API, and
 * pylance (the same lance version as the server) in this process,
alternating query by query so machine noise hits both sides alike. Reports p50/p99 and the
ratio REST / in-process. Not a test: numbers go into the issue notes.

With `--executors N` (a table of at least 2 × N × 16384 rows), the server spreads queries
over N plan executors and runs its embedded indexer, which splits a copy of the table into
fragments for the fleet (2 per executor); the REST side searches that copy, and lance in-process searches both the
one-fragment original (what LanceDB OSS users have) and the split copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa

from servers import start


def build_table(root: Path, rows: int, dim: int) -> str:
    """Writes (once) `rows` random vectors with LanceDB OSS in one write: one fragment up to
    lance's 1M rows per file. Returns the table's name."""
    name = f"flat_{rows}x{dim}"
    if (root / f"{name}.lance").exists():
        return name
    vectors = np.random.default_rng(42).random((rows, dim), dtype=np.float32)
    data = pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    })
    lancedb.connect(str(root)).create_table(name, data)
    return name


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="lancefleet binary (release build)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--executors", type=int, default=0, help="plan executors (0: in-process)")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/lancefleet-bench"))
    args = parser.parse_args()

    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    name = build_table(root, args.rows, args.dim)
    # The indexer maintains every table of the server's directory: the copy it splits lives
    # in a directory of its own, the original stays one fragment.
    data = root / "fleet" if args.executors else root
    if args.executors and not (data / f"{name}.lance").exists():
        shutil.copytree(root / f"{name}.lance", data / f"{name}.lance")

    # The embedded indexer splits the copy; it must not index it (a flat search is measured).
    indexer = {"LANCEFLEET_INDEXER__EMBEDDED": "true", "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0"}
    servers = start(args.bin, data, root / "flat_search.log", args.executors, indexer if args.executors else None)
    try:
        local = {"lance in-process": lance.dataset(str(root / f"{name}.lance"))}
        if args.executors:
            wanted = 2 * args.executors
            deadline = time.monotonic() + 600
            while len(lance.dataset(str(data / f"{name}.lance")).get_fragments()) < wanted:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the indexer did not split the copy into {wanted} fragments")
                time.sleep(1)
            local["lance, split copy"] = lance.dataset(str(data / f"{name}.lance"))
        fragments = {label: len(dataset.get_fragments()) for label, dataset in local.items()}
        remote = lancedb.connect("db://bench", api_key="bench", host_override=servers.url)
        remote_table = remote.open_table(name)
        rng = np.random.default_rng(7)
        queries = rng.random((args.queries + args.warmup, args.dim), dtype=np.float32)

        def via_rest(q):
            return remote_table.search(q).limit(10).to_arrow()

        def in_process(dataset):
            return lambda q: dataset.to_table(nearest={"column": "vector", "q": q, "k": 10, "use_index": False})

        paths = [("REST (lancedb client)", via_rest)] + [(label, in_process(d)) for label, d in local.items()]
        samples: dict[str, list[float]] = {label: [] for label, _ in paths}
        for index, q in enumerate(queries):
            order = paths[index % len(paths):] + paths[:index % len(paths)]
            results = []
            for label, run in order:
                started = time.perf_counter()
                results.append(run(q))
                if index >= args.warmup:
                    samples[label].append((time.perf_counter() - started) * 1000)
            ids = [r["id"].to_pylist() for r in results]
            assert all(found == ids[0] for found in ids), f"results differ for query {index}: {ids}"

        where = f"{args.executors} plan executors" if args.executors else "in-process"
        print(f"flat k=10 over {args.rows} x {args.dim} float32, {args.queries} queries, interleaved; "
              f"REST {where}; fragments {fragments}")
        print(f"{'path':<24}{'p50 ms':>10}{'p99 ms':>10}")
        for label, values in samples.items():
            print(f"{label:<24}{percentile(values, 50):>10.1f}{percentile(values, 99):>10.1f}")
        rest = samples["REST (lancedb client)"]
        for label in local:
            print(f"ratio REST / {label}: p50 {percentile(rest, 50) / percentile(samples[label], 50):.2f}, "
                  f"p99 {percentile(rest, 99) / percentile(samples[label], 99):.2f}")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
