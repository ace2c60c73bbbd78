"""Arrow Flight ingest and Flight SQL aggregates through LanceFleet, against lance in-process.

    python benchmarks/flight_sql.py --bin <release lancefleet> [--rows 1000000 --executors 3]

Local directory storage, 2 cores. Not a test: numbers go into the issue notes.

1. Ingest: --rows rows (id, g, x, a 32-float vector) in 100k-row batches, appended to a
   table three ways, interleaved over --rounds rounds: one Flight `DoPut` stream (one
   commit); REST `insert` through the lancedb client, one request per batch (how the
   client sends a list of batches); lance in-process `write_dataset(mode="append")` of the
   same batches (one commit). Rows per second, median of the rounds.
2. SQL: `SELECT g, count(*), avg(x) FROM t GROUP BY g` (and the same with a filter) over
   the ingested table (8 fragments), through ADBC Flight SQL, with the query node scanning
   in-process and with the scan spread over --executors plan executors, interleaved with
   the same statement through pylance's DataFusion in-process (`dataset.sql`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import lance
import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from servers import start

BATCH = 100_000
DIM = 32
FRAGMENTS = 8


def batches(rows: int, seed: int = 0) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for begin in range(0, rows, BATCH):
        n = min(BATCH, rows - begin)
        ids = np.arange(begin, begin + n, dtype=np.int64)
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        out.append(pa.record_batch({
            "id": pa.array(ids),
            "g": pa.array(ids % 16),
            "x": pa.array(rng.random(n)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        }))
    return out


def ingest_round(servers, data: Path, round_: int, parts: list[pa.RecordBatch]) -> dict[str, float]:
    rows = sum(batch.num_rows for batch in parts)
    schema = parts[0].schema
    rates = {}

    name = f"put_{round_}"
    client = flight.connect(servers.flight_url)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name, "create"), schema)
    writer.write_batch(parts[0])
    writer.done_writing()
    reader.read()
    writer.close()
    started = time.perf_counter()
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), schema)
    for batch in parts:
        writer.write_batch(batch)
    writer.done_writing()
    ack = json.loads(reader.read().to_pybytes())
    writer.close()
    rates["Flight DoPut"] = rows / (time.perf_counter() - started)
    assert ack["rows"] == rows, ack

    name = f"rest_{round_}"
    db = lancedb.connect("db://bench", api_key="k", host_override=servers.url)
    table = db.create_table(name, pa.Table.from_batches(parts[:1]))
    started = time.perf_counter()
    for batch in parts:
        table.add(pa.Table.from_batches([batch]))
    rates["REST insert"] = rows / (time.perf_counter() - started)

    uri = str(data / f"lance_{round_}.lance")
    lance.write_dataset(pa.Table.from_batches(parts[:1]), uri)
    started = time.perf_counter()
    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, parts), uri, mode="append")
    rates["lance append"] = rows / (time.perf_counter() - started)
    return rates


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def sql_timings(servers, uri: str, statement: str, repeats: int) -> tuple[list[float], list[float]]:
    ours, local = [], []
    with flight_sql.connect(servers.flight_url) as conn:
        cursor = conn.cursor()

        def remote():
            cursor.execute(statement.format(t="big"))
            return cursor.fetch_arrow_table()

        def in_process():
            dataset = lance.dataset(uri)
            return pa.Table.from_batches(dataset.sql(statement.format(t="dataset")).build().to_batch_records())

        got, want = remote().sort_by("g"), in_process().sort_by("g")
        assert got["n"].to_pylist() == want["n"].to_pylist(), "counts differ"
        assert np.allclose(got["mean"].to_numpy(), want["mean"].to_numpy()), "averages differ"
        for _ in range(repeats):
            ours.append(timed(remote))
            local.append(timed(in_process))
        cursor.close()
    return ours, local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sql-rows", type=int, default=2_000_000)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lancefleet-bench" / "flight")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    data = args.work / "data"
    data.mkdir(parents=True)
    parts = batches(args.rows)

    servers = start(args.bin, data, args.work / "server.log", 0)
    try:
        rates: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for way, rate in ingest_round(servers, data, round_, parts).items():
                rates.setdefault(way, []).append(rate)
        baseline = float(np.median(rates["lance append"]))
        for way, values in rates.items():
            median = float(np.median(values))
            print(f"ingest {args.rows} rows  {way:<13} {median / 1000:7.1f} k rows/s  ratio to lance {median / baseline:4.2f}",
                  flush=True)
    finally:
        servers.stop()

    uri = str(data / "big.lance")
    sql_parts = batches(args.sql_rows, seed=1)
    lance.write_dataset(pa.RecordBatchReader.from_batches(sql_parts[0].schema, sql_parts), uri,
                        max_rows_per_file=-(-args.sql_rows // FRAGMENTS))
    statements = {
        "group by": "SELECT g, count(*) AS n, avg(x) AS mean FROM {t} GROUP BY g",
        "filtered group by": "SELECT g, count(*) AS n, avg(x) AS mean FROM {t} WHERE x < 0.25 GROUP BY g",
    }
    for executors in (0, args.executors):
        servers = start(args.bin, data, args.work / "server.log", executors)
        try:
            for what, statement in statements.items():
                sql_timings(servers, uri, statement, 3)
                ours, local = sql_timings(servers, uri, statement, args.repeats)
                o50, l50 = np.percentile(ours, 50), np.percentile(local, 50)
                where = f"{executors} executors" if executors else "in-process"
                print(
                    f"{args.sql_rows} rows {what:<18} {where:<12} Flight SQL p50 {o50:7.1f} ms | "
                    f"lance in-process p50 {l50:7.1f} ms | ratio {o50 / l50:4.2f}",
                    flush=True,
                )
        finally:
            servers.stop()


if __name__ == "__main__":
    main()
