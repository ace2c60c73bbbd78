"""Full-text search through LanceFleet against the same search through lance in-process.

    python benchmarks/fts_search.py --bin <release lancefleet> [--rows 200000 --executors 3]

Local directory storage. A table of --rows documents (8-30 words drawn from a Zipf-like
vocabulary of 5000 words) in 8 fragments, with an FTS (inverted) index built by pylance.
The same queries (one and two rare-to-common terms, k=10) run through REST, with every
query spread over --executors plan executors and, separately, in-process in `standalone`,
and through lance in-process on the same directory (a fresh open each time, like a strong
read), interleaved. Then the index is rebuilt as 8 segments (one per fragment, by
`lancefleet indexer --once`) and the executors' run is repeated, against lance in-process
on the segmented table. Not a test: numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa

from index_division import cpu_seconds
from servers import start

TABLE = "docs"
FRAGMENTS = 8


def vocabulary(size: int) -> list[str]:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(4, 10)))) for _ in range(size)]


def documents(rows: int, words: list[str], seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    lengths = rng.integers(8, 31, rows)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=weights)
    texts, at = [], 0
    for length in lengths:
        texts.append(" ".join(words[i] for i in picks[at : at + length]))
        at += length
    return pa.table({"id": pa.array(np.arange(rows), pa.int64()), "text": pa.array(texts)})


def timings(table, uri: str, queries: list[str], k: int) -> tuple[list[float], list[float], int]:
    rest, local, mismatches = [], [], 0
    for query in queries:
        started = time.perf_counter()
        remote = table.search(query, query_type="fts").limit(k).to_arrow()
        rest.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        own = lance.dataset(uri).to_table(full_text_query=query, limit=k)
        local.append((time.perf_counter() - started) * 1000)
        same = np.allclose(np.sort(remote["_score"].to_numpy()), np.sort(own["_score"].to_numpy()), rtol=1e-5)
        mismatches += 0 if same else 1
    return rest, local, mismatches


def segment(binary: str, data: Path, rows: int, log: Path) -> int:
    """Has `lancefleet indexer --once` rebuild the table's FTS index as one segment per
    fragment; the segments made."""
    env = {**os.environ, "LANCEFLEET_INDEXER__INDEX_SEGMENT_ROWS": str(-(-rows // FRAGMENTS)),
           "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": str(-(-rows // FRAGMENTS)),
           "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0", "NO_COLOR": "1"}
    with open(log, "w") as out:
        subprocess.run([binary, "indexer", "--data-dir", str(data), "--once"], env=env, check=True, stdout=out,
                       stderr=subprocess.STDOUT)
    return len([i for i in lance.dataset(str(data / f"{TABLE}.lance")).list_indices() if i["name"] == "text_idx"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lancefleet-bench" / "fts")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    data = args.work / "data"
    data.mkdir(parents=True)
    uri = str(data / f"{TABLE}.lance")
    words = vocabulary(5000)
    lance.write_dataset(documents(args.rows, words, seed=1), uri, max_rows_per_file=-(-args.rows // FRAGMENTS))
    started = time.monotonic()
    lance.dataset(uri).create_scalar_index("text", "INVERTED", name="text_idx")
    print(f"table: {args.rows} documents in {FRAGMENTS} fragments; FTS index built in {time.monotonic() - started:.1f} s")
    rng = np.random.default_rng(5)
    queries = [
        " ".join(words[int(i)] for i in rng.integers(10, 2000, size=int(rng.integers(1, 3))))
        for _ in range(args.queries)
    ]

    runs = [(0, "whole"), (args.executors, "whole"), (args.executors, "segmented")]
    for executors, layout in runs:
        if layout == "segmented":
            print(f"index rebuilt as {segment(args.bin, data, args.rows, args.work / 'indexer.log')} segments")
        servers = start(args.bin, data, args.work / "server.log", executors)
        try:
            table = lancedb.connect("db://bench", api_key="k", host_override=servers.url).open_table(TABLE)
            timings(table, uri, queries[:10], 10)
            for k in (10, 100):
                pids = [process.pid for process in servers.processes]
                before = [cpu_seconds(pid) for pid in pids]
                rest, local, mismatches = timings(table, uri, queries, k)
                # CPU per query of the server processes (executors and query node): what
                # divides when index work divides.
                cpu = sum(cpu_seconds(pid) - spent for pid, spent in zip(pids, before)) / len(queries) * 1000
                r50, r99 = np.percentile(rest, [50, 99])
                l50, l99 = np.percentile(local, [50, 99])
                where = f"{executors} executors" if executors else "in-process"
                where = f"{where}, {layout}"
                print(
                    f"{where:<22} k={k:<4} REST p50 {r50:6.1f} p99 {r99:6.1f} ms | lance in-process p50 {l50:6.1f} "
                    f"p99 {l99:6.1f} ms | p50 ratio {r50 / l50:4.2f} | server CPU {cpu:5.1f} ms/q | "
                    f"score mismatches {mismatches}",
                    flush=True,
                )
        finally:
            servers.stop()


if __name__ == "__main__":
    main()
