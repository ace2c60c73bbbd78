"""Vector search on S3: a LanceFleet cluster (cold and warm caches) vs lance in-process
reading S3 directly, all in one run, with a fixed delay in front of every S3 request.

    python benchmarks/cluster_s3.py --bin <release lancefleet> --s3s-fs <s3s-fs binary>

- S3 is `s3s-fs` (a real S3 implementation over a local directory; moto is too slow for
  large objects). Install: cargo install s3s-fs --version 0.14.1 --features binary --root DIR
- A small asyncio proxy adds --latency-ms before each request is forwarded (object-store
  latency); both the cluster and lance in-process go through it.
- The table (--rows x --dim float32, IVF_PQ index) is written once under --work.
- The cluster is --executors plan executors with empty caches behind two query nodes: one
  with strong read consistency (the default: each query asks S3 for the latest version),
  one with weak reads (--weak-seconds: the latest version is looked up at most that often,
  like a LanceDB OSS table without a read_consistency_interval). The first pass over the
  queries (strong node) is "cold", the second "warm" on both nodes. lance in-process runs
  the same queries through the proxy (its own session caches warm up on its first pass too).
Numbers go into issue notes; ratios matter more than absolute values on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
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

BUCKET = "bench"


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


class DelayProxy:
    """Forwards TCP to `upstream`, holding every client->server chunk that starts an HTTP
    request for `delay` seconds (one delay per S3 request, keep-alive included)."""

    METHODS = (b"GET ", b"PUT ", b"HEAD", b"POST", b"DELE")

    def __init__(self, upstream_port: int, delay: float):
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result()

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader, writer, delay_requests: bool) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                if delay_requests and chunk.startswith(self.METHODS):
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, True),
            self._pipe(upstream_reader, client_writer, False),
        )


def options(port: int) -> dict:
    return {
        "aws_endpoint": f"http://127.0.0.1:{port}",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "allow_http": "true",
    }


def build_table(uri: str, port: int, rows: int, dim: int) -> None:
    storage = options(port)
    try:
        if lance.dataset(uri, storage_options=storage).count_rows() == rows:
            return
    except Exception:  # noqa: BLE001 - not there yet
        pass
    rng = np.random.default_rng(42)
    batch = 20_000
    for start in range(0, rows, batch):
        vectors = rng.random((min(batch, rows - start), dim), dtype=np.float32)
        data = pa.table({
            "id": pa.array(np.arange(start, start + len(vectors), dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        })
        lance.write_dataset(data, uri, mode="create" if start == 0 else "append", storage_options=storage)
    dataset = lance.dataset(uri, storage_options=storage)
    dataset.create_index("vector", index_type="IVF_PQ", num_partitions=256, num_sub_vectors=dim // 16)


def percentiles(samples: list[float]) -> tuple[float, float]:
    array = np.array(samples) * 1000
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--s3s-fs", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=30)
    parser.add_argument("--weak-seconds", type=int, default=60)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/lancefleet-bench/s3"))
    args = parser.parse_args()

    work = Path(args.work)
    (work / BUCKET).mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    scratch = Path(tempfile.mkdtemp(prefix="lancefleet-bench-"))
    try:
        s3_port = free_port()
        processes.append(subprocess.Popen(
            [args.s3s_fs, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", "test",
             "--secret-key", "test", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_port(s3_port)
        name = f"v{args.rows}x{args.dim}"
        uri = f"s3://{BUCKET}/{name}.lance"
        build_table(uri, s3_port, args.rows, args.dim)
        proxy = DelayProxy(s3_port, args.latency_ms / 1000)

        env = {**os.environ, **{f"LANCEFLEET_STORAGE__OPTIONS__{k.upper()}": v for k, v in options(proxy.port).items()}}
        endpoints = []
        for index in range(args.executors):
            port = free_port()
            processes.append(subprocess.Popen(
                [args.bin, "plan-executor", "--data-dir", f"s3://{BUCKET}", "--node-id", f"pe-{index}",
                 "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
                 "--cache-dir", str(scratch / f"pe-{index}"), "--log-level", "warn"],
                env=env, stdin=subprocess.DEVNULL,
            ))
            endpoints += ["--executor", f"pe-{index}=http://127.0.0.1:{port}"]
            wait_port(port)
        tables = {}
        for mode, weak_seconds in (("strong", 0), ("weak", args.weak_seconds)):
            rest = free_port()
            node_env = {**env, "LANCEFLEET_REST__WEAK_READ_CONSISTENCY_INTERVAL_SECONDS": str(weak_seconds)}
            processes.append(subprocess.Popen(
                [args.bin, "query-node", "--data-dir", f"s3://{BUCKET}", "--rest-listen", f"127.0.0.1:{rest}", "--flight-listen", "127.0.0.1:0",
                 "--log-level", "warn", *endpoints], env=node_env, stdin=subprocess.DEVNULL,
            ))
            wait_port(rest)
            requests.get(f"http://127.0.0.1:{rest}/health", timeout=10).raise_for_status()
            connection = lancedb.connect("db://bench", api_key="x", host_override=f"http://127.0.0.1:{rest}")
            tables[mode] = connection.open_table(name)
        direct = lance.dataset(uri, storage_options=options(proxy.port))
        rng = np.random.default_rng(7)
        queries = [rng.random(args.dim, dtype=np.float32) for _ in range(args.queries)]

        def search(mode):
            return lambda q: tables[mode].search(q).nprobes(20).limit(10).to_arrow()

        def in_process(q):
            return direct.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 20})

        passes = [
            [("cluster cold (strong)", search("strong")), ("lance direct, 1st", in_process)],
            [("cluster warm (strong)", search("strong")), ("cluster warm (weak)", search("weak")),
             ("lance direct, 2nd", in_process)],
        ]
        timings: dict[str, list[float]] = {label: [] for runs in passes for label, _ in runs}
        for runs in passes:
            for q in queries:  # interleaved, so machine noise hits every path alike
                for label, run in runs:
                    started = time.perf_counter()
                    run(q)
                    timings[label].append(time.perf_counter() - started)

        print(f"IVF_PQ k=10 nprobes=20 over {args.rows} x {args.dim} on S3 (s3s-fs + {args.latency_ms:.0f} ms "
              f"per request), {args.executors} executors, {args.queries} queries per pass")
        print(f"{'path':24} {'p50 ms':>9} {'p99 ms':>9}")
        for label, samples in timings.items():
            p50, p99 = percentiles(samples)
            print(f"{label:24} {p50:9.1f} {p99:9.1f}")
        for warm_label in ("cluster warm (strong)", "cluster warm (weak)"):
            warm, _ = percentiles(timings[warm_label])
            for label in ("lance direct, 1st", "lance direct, 2nd"):
                p50, _ = percentiles(timings[label])
                print(f"{label} / {warm_label}, p50: {p50 / warm:.1f}x")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
