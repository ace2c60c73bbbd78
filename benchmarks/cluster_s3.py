"""Vector search on S3 at scale: a LanceFleet cluster against lance in-process reading the
same S3 and the same table on local disk, all in one run, with a fixed delay in front of
every S3 request.

    python benchmarks/cluster_s3.py --bin <release lancefleet> --s3s-fs <s3s-fs binary> [--rows 1000000]

- S3 is `s3s-fs` (a real S3 implementation over a local directory; moto is too slow for
  large objects). Install: cargo install s3s-fs --version 0.14.1 --features binary --root DIR.
  A small asyncio proxy adds --latency-ms before each request is forwarded (object-store
  latency); the cluster and lance-on-S3 both go through it. "lance, local disk" opens the
  files s3s-fs keeps in its directory.
- The table: --rows x --dim float32 drawn around 1024 centres (clustered, so that an IVF
  index can reach a high recall, as on real embeddings), written by pylance as lance writes
  it (fragments of up to 1M rows) with an IVF_PQ index (--partitions, dim/16 sub-vectors).
  Kept under --work between runs.
- The cluster's copy of the table is what the indexer makes of it for --executors
  executors (`lancefleet indexer --once`): fragments split to two per executor, the index
  rebuilt as one segment per executor sharing one model, so that each executor searches
  and caches its share.
- The cluster: etcd, --executors plan executors, restarted with empty caches once the
  table is ready and given time to prewarm their shares (the segments and fragments placed
  on each as first choice or replica; --no-prewarm queries executors that start cold), and
  query nodes with strong reads learnt from etcd (the default), strong reads listing the
  store on every query (`rest.external_writer_check = 0s`, as before etcd recorded
  versions), weak reads (--weak-seconds), and strong reads without hedging
  (`cluster.hedge_after = off`).
- Passes, each interleaving its paths query by query so that machine noise hits all alike:
  cold (the query nodes' first look, after the executors' prewarm; lance's first), warm
  (every path), throughput (--threads client threads for --qps-queries queries per path),
  recall@10 of the cluster and of lance against exact search, and a slowed executor
  (SIGSTOPped --stall-ms out of every second) with hedging on and off.
Not a test: numbers go into the issue notes; ratios between paths matter more than absolute
values on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lance
import lancedb
import numpy as np
import pyarrow as pa
import requests

BENCH_BUCKET = "bench"  # the table as lance writes and indexes it
FLEET_BUCKET = "fleet"  # the cluster's copy, as the indexer keeps it
CENTRES = 1024
CHUNK = 50_000


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


class Data:
    """The benchmark's vectors, generated again identically on every run (seeded)."""

    def __init__(self, rows: int, dim: int):
        self.rows, self.dim = rows, dim
        self.centres = np.random.default_rng(42).normal(size=(CENTRES, dim)).astype(np.float32)

    def _around_centres(self, rng, count: int) -> np.ndarray:
        noise = rng.normal(scale=0.35, size=(count, self.dim)).astype(np.float32)
        return self.centres[rng.integers(0, CENTRES, count)] + noise

    def chunks(self):
        rng = np.random.default_rng(43)
        for start in range(0, self.rows, CHUNK):
            yield start, self._around_centres(rng, min(CHUNK, self.rows - start))

    def queries(self, count: int) -> np.ndarray:
        return self._around_centres(np.random.default_rng(7), count)

    def batches(self):
        for start, vectors in self.chunks():
            yield pa.record_batch({
                "id": pa.array(np.arange(start, start + len(vectors), dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dim),
            })

    def exact_top10(self, queries: np.ndarray) -> np.ndarray:
        """Ids of each query's 10 nearest rows by L2, by brute force over every row."""
        best_ids = np.zeros((len(queries), 0), dtype=np.int64)
        best = np.zeros((len(queries), 0), dtype=np.float32)
        for start, vectors in self.chunks():
            # |v - q|^2 without |q|^2, which does not change the order of one query's rows.
            distances = (vectors * vectors).sum(axis=1)[None, :] - 2 * queries @ vectors.T
            ids = np.broadcast_to(np.arange(start, start + len(vectors)), distances.shape)
            best = np.concatenate([best, distances], axis=1)
            best_ids = np.concatenate([best_ids, ids], axis=1)
            keep = np.argpartition(best, 10, axis=1)[:, :10]
            best, best_ids = np.take_along_axis(best, keep, 1), np.take_along_axis(best_ids, keep, 1)
        return best_ids


def build_table(data: Data, uri: str, port: int, partitions: int) -> None:
    # lance writes a 1M x 768 fragment as one 3 GB object: s3s-fs takes longer than
    # object_store's default 30 s to complete its multipart upload on a busy machine.
    storage = {**options(port), "timeout": "600s"}
    try:
        if lance.dataset(uri, storage_options=storage).list_indices():
            return
    except Exception:  # noqa: BLE001 - not there yet
        pass
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), data.dim))])
    started = time.monotonic()
    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, data.batches()), uri, mode="overwrite",
                        storage_options=storage)
    dataset = lance.dataset(uri, storage_options=storage)
    dataset.create_index("vector", index_type="IVF_PQ", num_partitions=partitions, num_sub_vectors=data.dim // 16)
    print(f"table written and indexed by pylance in {time.monotonic() - started:.0f} s", flush=True)


def copy_etags(work: Path, table: str) -> None:
    """Gives the fleet bucket's copy of `table` the ETags s3s-fs saved for the original's
    objects (in `.bucket-<b64>.object-<b64>.internal.json` beside the buckets): without
    them s3s-fs computes an object's MD5 on every GET, which for a 3 GB data file makes
    each range read take seconds."""
    encode = lambda text: base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")  # noqa: E731
    for path in (work / BENCH_BUCKET / table).rglob("*"):
        if path.is_file():
            key = str(path.relative_to(work / BENCH_BUCKET))
            saved = work / f".bucket-{encode(BENCH_BUCKET)}.object-{encode(key)}.internal.json"
            if saved.exists():
                shutil.copyfile(saved, work / f".bucket-{encode(FLEET_BUCKET)}.object-{encode(key)}.internal.json")


def prepare_fleet_copy(args, work: Path, name: str, etcd_url: str, s3_port: int, log) -> None:
    """The cluster's copy: the lance table copied file by file, then maintained once by
    the indexer for a fleet of --executors (fragments split, index kept as segments)."""
    target = work / FLEET_BUCKET / f"{name}.lance"
    if target.exists() and len(lance.dataset(str(target)).get_fragments()) >= args.executors:
        return
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(work / BENCH_BUCKET / f"{name}.lance", target)
    copy_etags(work, f"{name}.lance")
    # Completing a multipart upload of a 500 MB fragment takes s3s-fs longer than
    # object_store's default 30 s request timeout on this machine (as for lance's write).
    env = {**os.environ, **storage_env(s3_port), "NO_COLOR": "1", "LANCEFLEET_STORAGE__OPTIONS__TIMEOUT": "600s",
           "LANCEFLEET_INDEXER__VECTOR_SEGMENT_ROWS": str(-(-args.rows // args.executors)),
           "LANCEFLEET_INDEXER__MIN_FRAGMENT_ROWS": "1000"}
    started = time.monotonic()
    subprocess.run([args.bin, "indexer", "--data-dir", f"s3://{FLEET_BUCKET}", "--etcd", etcd_url, "--once"],
                   env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    dataset = lance.dataset(str(target))
    segments = [index for index in dataset.list_indices() if index["name"] == "vector_idx"]
    print(f"the indexer kept the cluster's copy as {len(dataset.get_fragments())} fragments and "
          f"{len(segments)} index segments in {time.monotonic() - started:.0f} s", flush=True)


def storage_env(port: int) -> dict:
    return {f"LANCEFLEET_STORAGE__OPTIONS__{key.upper()}": value for key, value in options(port).items()}


LOOKUPS = "lancefleet_catalog_latest_version_lookups_total"
HEDGES = "lancefleet_query_hedged_calls_total"
INDEX_BYTES = "lancefleet_cache_index_read_bytes_total"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def counters(url: str, name: str) -> dict[str, float]:
    """The samples of counter `name` on a node's /metrics page, by their labels."""
    found = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, value = line[len(name):].rsplit(" ", 1)
            found[labels or "total"] = float(value)
    return found


def percentiles(samples: list[float]) -> tuple[float, float]:
    array = np.array(samples) * 1000
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def recall(found: list[np.ndarray], exact: np.ndarray) -> float:
    return float(np.mean([len(set(ids.tolist()) & set(truth.tolist())) / 10 for ids, truth in zip(found, exact)]))


class Staller:
    """SIGSTOPs a process for `stall` seconds out of every second until stopped."""

    def __init__(self, pid: int, stall: float):
        self.pid, self.stall, self.done = pid, stall, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            os.kill(self.pid, signal.SIGSTOP)
            time.sleep(self.stall)
            os.kill(self.pid, signal.SIGCONT)
            self.done.wait(1.0 - self.stall)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--s3s-fs", required=True)
    parser.add_argument("--etcd", default="etcd")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--partitions", type=int, default=256)
    parser.add_argument("--nprobes", type=int, default=20)
    parser.add_argument("--refine", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--qps-queries", type=int, default=400)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=30)
    parser.add_argument("--weak-seconds", type=int, default=60)
    parser.add_argument("--stall-ms", type=int, default=300)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/lancefleet-bench/s3"))
    parser.add_argument("--prepare-only", action="store_true", help="write and index lance's table, then stop")
    parser.add_argument("--no-prewarm", dest="prewarm", action="store_false",
                        help="query executors that start cold, instead of restarting them with empty caches "
                        "once the table is ready and waiting until each has prewarmed its share")
    args = parser.parse_args()

    work = Path(args.work)
    for bucket in (BENCH_BUCKET, FLEET_BUCKET):
        (work / bucket).mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    scratch = Path(tempfile.mkdtemp(prefix="lancefleet-bench-"))
    log = open(scratch / "servers.log", "ab")
    try:
        s3_port = free_port()
        processes.append(subprocess.Popen(
            [args.s3s_fs, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", "test",
             "--secret-key", "test", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_port(s3_port)
        etcd_port = free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        processes.append(subprocess.Popen(
            [args.etcd, "--data-dir", str(scratch / "etcd"), "--listen-client-urls", etcd_url,
             "--advertise-client-urls", etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{free_port()}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        wait_port(etcd_port)

        data = Data(args.rows, args.dim)
        name = f"c{args.rows}x{args.dim}"
        build_table(data, f"s3://{BENCH_BUCKET}/{name}.lance", s3_port, args.partitions)
        if args.prepare_only:
            return
        proxy = DelayProxy(s3_port, args.latency_ms / 1000)
        env = {**os.environ, **storage_env(proxy.port), "NO_COLOR": "1"}

        ports = [(free_port(), free_port()) for _ in range(args.executors)]
        executor_metrics = [f"http://127.0.0.1:{metrics_port}/metrics" for _, metrics_port in ports]

        def start_executors() -> list[subprocess.Popen]:
            started = []
            for index, (port, metrics_port) in enumerate(ports):
                started.append(subprocess.Popen(
                    [args.bin, "plan-executor", "--data-dir", f"s3://{FLEET_BUCKET}", "--node-id", f"pe-{index}",
                     "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
                     "--cache-dir", str(scratch / f"pe-{index}"), "--etcd", etcd_url,
                     "--log-level", "warn,lancefleet_plan_executor::prewarm=info"],
                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                ))
                processes.append(started[-1])
            for port, _ in ports:
                wait_port(port)
            return started

        executors = start_executors()
        prepare_fleet_copy(args, work, name, etcd_url, s3_port, log)
        if args.prewarm:
            # A fleet restart with empty caches: each executor reads its share (segments and
            # fragments placed on it as first choice or replica) before the first query.
            for executor in executors:
                executor.terminate()
                executor.wait(timeout=60)
                processes.remove(executor)
            for index in range(args.executors):
                shutil.rmtree(scratch / f"pe-{index}", ignore_errors=True)
            logged = (scratch / "servers.log").stat().st_size
            started = time.monotonic()
            executors = start_executors()
            rounds = lambda: (scratch / "servers.log").read_bytes()[logged:].count(  # noqa: E731
                b"prewarmed this executor's share")
            while rounds() < args.executors and time.monotonic() - started < 1800:
                time.sleep(1)
            print(f"a fleet restart with empty caches prewarmed each executor's share in "
                  f"{time.monotonic() - started:.0f} s", flush=True)

        nodes = {
            "strong (etcd)": {},
            "strong (listing)": {"LANCEFLEET_REST__EXTERNAL_WRITER_CHECK": "0s"},
            "weak": {"LANCEFLEET_REST__WEAK_READ_CONSISTENCY_INTERVAL": f"{args.weak_seconds}s"},
            "strong, no hedging": {"LANCEFLEET_CLUSTER__HEDGE_AFTER": "off"},
        }
        tables, metrics, node_pids = {}, {}, {}
        for label, extra in nodes.items():
            rest = free_port()
            node_pids[label] = len(processes)
            processes.append(subprocess.Popen(
                [args.bin, "query-node", "--data-dir", f"s3://{FLEET_BUCKET}", "--rest-listen", f"127.0.0.1:{rest}",
                 "--flight-listen", "127.0.0.1:0", "--etcd", etcd_url, "--log-level", "warn"],
                env={**env, **extra}, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            ))
            wait_port(rest)
            requests.get(f"http://127.0.0.1:{rest}/health", timeout=10).raise_for_status()
            connection = lancedb.connect("db://bench", api_key="x", host_override=f"http://127.0.0.1:{rest}")
            tables[label] = connection.open_table(name)
            metrics[label] = f"http://127.0.0.1:{rest}/metrics"
            node_pids[label] = processes[node_pids[label]].pid

        on_s3 = lance.dataset(f"s3://{BENCH_BUCKET}/{name}.lance", storage_options=options(proxy.port))
        on_disk = lance.dataset(str(work / BENCH_BUCKET / f"{name}.lance"))
        queries = data.queries(args.queries)

        def cluster(label):
            return lambda q: tables[label].search(q).nprobes(args.nprobes).refine_factor(args.refine).limit(10) \
                .select(["id"]).to_arrow()["id"].to_numpy()

        def direct(dataset):
            return lambda q: dataset.to_table(
                columns=["id", "_distance"],
                nearest={"column": "vector", "q": q, "k": 10, "nprobes": args.nprobes, "refine_factor": args.refine},
            )["id"].to_numpy()

        executor_pids = [executor.pid for executor in executors]

        def cluster_cpu(label):
            """CPU seconds so far of the executors and of `label`'s query node."""
            return lambda: sum(cpu_seconds(pid) for pid in (*executor_pids, node_pids[label]))

        def run_pass(paths: dict) -> dict[str, tuple[list[float], list[np.ndarray], list[float]]]:
            """Each query on every path in turn: latencies, ids found, and the CPU seconds
            spent on it (the cluster's processes for a cluster path, this process for lance)."""
            out = {label: ([], [], []) for label in paths}
            for q in queries:  # interleaved, so machine noise hits every path alike
                for label, run in paths.items():
                    meter = cpu_meters.get(label, time.process_time)
                    cpu, started = meter(), time.perf_counter()
                    ids = run(q)
                    out[label][0].append(time.perf_counter() - started)
                    out[label][1].append(ids)
                    out[label][2].append(meter() - cpu)
            return out

        def report(title: str, results: dict) -> None:
            print(f"\n{title}")
            print(f"{'path':28} {'p50 ms':>9} {'p99 ms':>9} {'CPU ms/query':>13}")
            for label, (samples, _, cpu) in results.items():
                p50, p99 = percentiles(samples)
                print(f"{label:28} {p50:9.1f} {p99:9.1f} {np.mean(cpu) * 1000:13.1f}")

        print(f"IVF_PQ k=10 nprobes={args.nprobes} refine={args.refine} over {args.rows} x {args.dim} "
              f"({args.partitions} partitions) on S3 (s3s-fs + {args.latency_ms:.0f} ms per request), "
              f"{args.executors} executors, {args.queries} queries per pass", flush=True)
        cpu_meters = {
            "cluster, cold (strong)": cluster_cpu("strong (etcd)"),
            "cluster, strong (etcd)": cluster_cpu("strong (etcd)"),
            "cluster, strong (listing)": cluster_cpu("strong (listing)"),
            "cluster, weak": cluster_cpu("weak"),
            "hedging on (auto)": cluster_cpu("strong (etcd)"),
            "hedging off": cluster_cpu("strong, no hedging"),
        }
        cold = run_pass({"cluster, cold (strong)": cluster("strong (etcd)"), "lance on S3, 1st": direct(on_s3)})
        report("cold", cold)
        warm_paths = {
            "cluster, strong (etcd)": cluster("strong (etcd)"),
            "cluster, strong (listing)": cluster("strong (listing)"),
            "cluster, weak": cluster("weak"),
            "lance on S3, warm": direct(on_s3),
            "lance on local disk": direct(on_disk),
        }
        warm = run_pass(warm_paths)
        report("warm", warm)
        p50 = {label: percentiles(samples)[0] for label, (samples, _, _) in warm.items()}
        cpu = {label: float(np.mean(spent)) for label, (_, _, spent) in warm.items()}
        print(f"CPU per warm query, cluster (weak) / lance on local disk: "
              f"{cpu['cluster, weak'] / cpu['lance on local disk']:.2f}x")
        for index, url in enumerate(executor_metrics):
            print(f"  pe-{index}: index bytes read into its cache {counters(url, INDEX_BYTES)}")
        print(f"strong (etcd) / weak p50: {p50['cluster, strong (etcd)'] / p50['cluster, weak']:.2f}x; "
              f"strong (listing) / weak: {p50['cluster, strong (listing)'] / p50['cluster, weak']:.2f}x")
        for baseline in ("lance on S3, warm", "lance on local disk"):
            print(f"cluster strong (etcd) / {baseline}, p50: {p50['cluster, strong (etcd)'] / p50[baseline]:.2f}x")

        print(f"strong (etcd) node's lookups of latest versions: {counters(metrics['strong (etcd)'], LOOKUPS)}")

        exact = data.exact_top10(queries)
        print("\nrecall@10 against exact search:")
        for label in ("cluster, strong (etcd)", "lance on S3, warm", "lance on local disk"):
            print(f"  {label:28} {recall(warm[label][1], exact):.3f}")

        print(f"\nthroughput, {args.threads} client threads, {args.qps_queries} queries each:")
        for label in ("cluster, strong (etcd)", "lance on S3, warm", "lance on local disk"):
            run = warm_paths[label]
            stream = [queries[i % len(queries)] for i in range(args.qps_queries)]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(run, stream))
            print(f"  {label:28} {args.qps_queries / (time.perf_counter() - started):8.1f} QPS", flush=True)

        with Staller(executors[0].pid, args.stall_ms / 1000):
            slowed = run_pass({"hedging on (auto)": cluster("strong (etcd)"), "hedging off": cluster("strong, no hedging")})
        report(f"one of {args.executors} executors SIGSTOPped {args.stall_ms} ms of every second", slowed)
        for label, (samples, _, _) in slowed.items():
            slow50, slow99 = percentiles(samples)
            print(f"  {label}: p99 / p50 = {slow99 / slow50:.1f}")
        print(f"hedged calls (whole run) by winner: {counters(metrics['strong (etcd)'], HEDGES)}")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
        for cache in scratch.glob("pe-*"):
            shutil.rmtree(cache, ignore_errors=True)
        print(f"server logs: {scratch / 'servers.log'}")


if __name__ == "__main__":
    main()
