"""What encrypting the executors' disk cache costs on warm queries.

    python benchmarks/cache_encryption.py --bin <lancefleet> [--rows 50000 --dim 256]

One table on S3 (moto: warm queries never reach the store's data, only its listing) is
served by two query node + executor pairs side by side, alike but for
`cache.encryption_key_file`. Flat k=10 searches alternate between them, in two settings:
- `disk`: a memory tier (16 MiB) far smaller than the table, so every query reads its
  chunks from the disk tier (opened, for the encrypted one, on every read);
- `memory`: a memory tier holding the whole table (chunks opened once, after a restart).
Reports p50/p90 per side and the ratio sealed / plain. Not a test: numbers go into notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import lance
import lancedb
import numpy as np
import pyarrow as pa

from servers import free_port, wait_healthy, wait_listening

BUCKET = "bench"


def options(port: int) -> dict:
    return {"aws_endpoint": f"http://127.0.0.1:{port}", "aws_access_key_id": "test",
            "aws_secret_access_key": "test", "aws_region": "us-east-1", "allow_http": "true"}


def start_pair(binary: str, port: int, scratch: Path, name: str, memory: str, key: Path | None):
    env = {**os.environ, "NO_COLOR": "1", "LANCEFLEET_INDEXER__EMBEDDED": "false",
           "LANCEFLEET_CACHE__MEMORY": memory, "LANCEFLEET_CACHE__DISK": "1GiB",
           **{f"LANCEFLEET_STORAGE__OPTIONS__{k.upper()}": v for k, v in options(port).items()}}
    if key is not None:
        env["LANCEFLEET_CACHE__ENCRYPTION_KEY_FILE"] = str(key)
    log = open(scratch / f"{name}.log", "ab")
    grpc, rest = free_port(), free_port()
    executor = subprocess.Popen(
        [binary, "plan-executor", "--data-dir", f"s3://{BUCKET}", "--node-id", f"{name}-pe",
         "--listen", f"127.0.0.1:{grpc}", "--metrics-listen", f"127.0.0.1:{free_port()}",
         "--cache-dir", str(scratch / f"{name}-cache"), "--log-level", "warn"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_listening(grpc, executor)
    node = subprocess.Popen(
        [binary, "standalone", "--data-dir", f"s3://{BUCKET}", "--rest-listen", f"127.0.0.1:{rest}",
         "--flight-listen", f"127.0.0.1:{free_port()}", "--executor", f"{name}-pe=http://127.0.0.1:{grpc}",
         "--log-level", "warn"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{rest}"
    wait_healthy(url, node)
    return [executor, node], lancedb.connect("db://bench", host_override=url, api_key="k").open_table("t")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="lancefleet-bench-seal-"))
    processes: list[subprocess.Popen] = []
    try:
        port = free_port()
        moto = shutil.which("moto_server", path=os.path.dirname(sys.executable))
        processes.append(subprocess.Popen([moto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(port, processes[-1])
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                     aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        rng = np.random.default_rng(0)
        vectors = rng.random((args.rows, args.dim), dtype=np.float32)
        lance.write_dataset(pa.table({
            "id": pa.array(np.arange(args.rows), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), args.dim),
        }), f"s3://{BUCKET}/t.lance", max_rows_per_file=args.rows // 4, storage_options=options(port))
        key = scratch / "cache.key"
        key.write_text(os.urandom(32).hex())
        queries = [rng.random(args.dim, dtype=np.float32) for _ in range(args.queries)]
        table_mib = vectors.nbytes / (1 << 20)
        print(f"flat k=10 over {args.rows} x {args.dim} ({table_mib:.0f} MiB), {args.queries} queries per side, "
              f"alternating; binary {args.bin}")
        for setting, memory in (("disk", "16MiB"), ("memory", "1GiB")):
            pairs = {}
            for name, sealed in (("plain", None), ("sealed", key)):
                started, table = start_pair(args.bin, port, scratch, f"{setting}-{name}", memory, sealed)
                processes += started
                pairs[name] = table
            answers = {}
            for name, table in pairs.items():  # warm: every chunk fetched and written to disk once
                for query in queries[:3]:
                    answers[name] = table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()
            assert answers["plain"] == answers["sealed"]
            times: dict[str, list[float]] = {name: [] for name in pairs}
            for query in queries:
                for name, table in pairs.items():
                    began = time.perf_counter()
                    table.search(query).bypass_vector_index().limit(10).to_arrow()
                    times[name].append((time.perf_counter() - began) * 1000)
            p50 = {name: statistics.median(values) for name, values in times.items()}
            p90 = {name: statistics.quantiles(values, n=10)[-1] for name, values in times.items()}
            print(f"{setting:>6} tier: plain p50 {p50['plain']:.1f} ms p90 {p90['plain']:.1f} ms | sealed p50 "
                  f"{p50['sealed']:.1f} ms p90 {p90['sealed']:.1f} ms | sealed/plain p50 {p50['sealed'] / p50['plain']:.2f}")
            for process in processes[1:]:
                process.terminate()
                process.wait(timeout=60)
            del processes[1:]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
