"""Background maintenance with real processes: etcd, a moto S3 server, a query node, two
plan executors and `lancefleet indexer` processes, driven by the real `lancedb` client.

- 300 small appends plus deletes and updates stream in while queries run: afterwards every
  acknowledged row is there exactly once, the table stayed within a bound of fragments,
  the automatically created vector index covers all but the latest tail, and no query
  failed or returned a wrong result during compactions;
- an indexer SIGKILLed in the middle of a compaction loses nothing, the table stays
  readable, and another indexer finishes the job;
- two indexers never maintain one table at the same time;
- a table written by LanceDB OSS and maintained by `lancefleet indexer --once` still opens,
  searches and takes writes in LanceDB OSS;
- standalone builds `create_index` requests in-process; bad requests are 400s that change
  nothing;
- a vector index is kept as segments of `indexer.vector_segment_rows` rows, each placed
  with its fragments: every one of 3 executors opens about a third of the index, flat
  results equal exact search, ANN recall is lance's (also with one executor SIGKILLed and
  its segments searched by their replicas), and appends keep the layout;
- executors restarted with empty caches read their share (the segments and fragments
  placed on them, as first choice or replica) before any query: afterwards queries fetch
  nothing from the object store, also with an executor SIGKILLed;
- full-text and BTREE indexes are kept as segments of `indexer.index_segment_rows` rows:
  every one of 3 executors opens about a third of each, scores equal lance's in-process
  search (also with an executor SIGKILLed, and after appends), filtered scans lance's rows;
- a table written as one fragment is split into fragments sized to the fleet, so that all
  3 executors serve it (before: one), with the same rows in the same order;
- one of 3 executors stopped (SIGSTOP) for 1.5 s of every 2 s under query load: calls are
  hedged to the next replica after the automatic delay, no query fails or waits for the
  stalled executor.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest
import requests
from lancedb.index import FTS, BTree, IvfFlat, IvfPq

from conftest import BUCKET, LanceFleetServer, PlanExecutor, s3_env, storage_options
from lf_control import Etcd, Indexer, QueryLoad, etcd_env, wait_until
from lf_helpers import connect_remote, metric, parse_metrics

pytestmark = pytest.mark.lifecycle

DIM = 16
COMPACT_AT = 6
OPTIMIZE_AT = 200
MAINTENANCE = {
    "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": "1000",
    "LANCEFLEET_INDEXER__COMPACT_MIN_SMALL_FRAGMENTS": str(COMPACT_AT),
    "LANCEFLEET_INDEXER__OPTIMIZE_MIN_UNINDEXED_ROWS": str(OPTIMIZE_AT),
    "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "1000",
    "LANCEFLEET_INDEXER__AUTO_SCALAR_COLUMNS": '["id"]',
    "LANCEFLEET_INDEXER__CLEANUP_RETENTION_SECONDS": "20",
    "LANCEFLEET_INDEXER__RETRY_AFTER_MS": "300",
}


def rows(ids: np.ndarray, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(len(ids) * DIM, dtype=np.float32)), DIM),
        "text": pa.array([f"doc {i} {'even' if i % 2 == 0 else 'odd'}" for i in ids]),
    })


class Stack:
    """etcd, moto, `executors` executors and a query node over s3://{BUCKET}/{name};
    indexers on demand."""

    def __init__(self, root, moto: str, name: str, executors: int = 2, env: dict | None = None):
        self.root = root
        self.moto = moto
        self.etcd = Etcd(root).start()
        self.env = {**etcd_env(self.etcd, name), **s3_env(moto), **MAINTENANCE, **(env or {})}
        self.data = f"s3://{BUCKET}/{name}"
        self.executors = [PlanExecutor(root, self.data, f"pe-{i}", self.env).start() for i in range(executors)]
        (root / "qn").mkdir()
        self.query_node = LanceFleetServer(root / "qn", data_dir=self.data, executors=0, env=self.env).start()
        self.db = connect_remote(self.query_node.url)
        self.indexers: list[Indexer] = []

    def indexer(self, node_id: str) -> Indexer:
        indexer = Indexer(self.root, node_id, self.data, self.env).start()
        self.indexers.append(indexer)
        return indexer

    def dataset(self, table: str):
        return lance.dataset(f"{self.data}/{table}.lance", storage_options=storage_options(self.moto))

    def fragments(self, table: str) -> int:
        return len(self.dataset(table).get_fragments())

    def restart_executors_cold(self) -> None:
        """Restarts every executor with an empty cache."""
        for executor in self.executors:
            executor.stop()
            shutil.rmtree(executor.cache_dir)
            executor.start()

    def restart_executors_cold_together(self) -> None:
        """Stops every executor, empties their caches and starts them all at once (as a
        fleet restarts: they register within a moment of each other)."""
        for executor in self.executors:
            executor.stop()
            shutil.rmtree(executor.cache_dir)
        with ThreadPoolExecutor(len(self.executors)) as pool:
            list(pool.map(PlanExecutor.start, self.executors))

    def fetched(self) -> list[float]:
        """Bytes each executor has fetched from the object store so far (data and indexes)."""
        return [metric(e.metrics(), "lancefleet_cache_read_bytes_total", tier="object_store")
                for e in self.executors]

    def index_bytes_fetched(self) -> list[float]:
        """Index bytes each executor has fetched from the object store so far."""
        return [metric(e.metrics(), "lancefleet_cache_index_read_bytes_total", tier="object_store")
                for e in self.executors]

    def vector_index(self, table: str) -> dict | None:
        indexes = requests.post(f"{self.query_node.url}/v1/table/{table}/index/list/", json={}, timeout=30).json()
        return next((index for index in indexes["indexes"] if index["columns"] == ["vector"]), None)

    def stop(self) -> None:
        self.query_node.stop()
        for indexer in self.indexers:
            if indexer.proc is not None and indexer.proc.poll() is None:
                assert indexer.stop() == 0, indexer.log_path.read_text()[-3000:]
        for executor in self.executors:
            executor.stop()
        self.etcd.stop()


@pytest.fixture
def stack(tmp_path, moto, request):
    stack = Stack(tmp_path, moto, request.node.name.replace("_", "-")[:40])
    yield stack
    stack.stop()


def exact_top10(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray) -> list[int]:
    order = np.argsort(((vectors - query) ** 2).sum(axis=1), kind="stable")[:10]
    return ids[order].tolist()


def test_streaming_writes_are_compacted_and_indexed_while_queries_run(stack):
    stack.indexer("ix-0")
    base = rows(np.arange(200), seed=1)
    table = stack.db.create_table("stream", base)
    base_vectors = np.array(base["vector"].to_pylist(), dtype=np.float32)
    base_ids = base["id"].to_numpy()
    rng = np.random.default_rng(3)
    queries = [rng.random(DIM, dtype=np.float32) for _ in range(5)]
    expected = [exact_top10(base_vectors, base_ids, q) for q in queries]
    wrong: list[str] = []
    turn = [0]

    def search() -> None:
        # Rows below 200 never change: an exact search over them has one right answer,
        # whatever compaction does to the fragments holding them.
        index = turn[0] % len(queries)
        turn[0] += 1
        got = (
            table.search(queries[index]).where("id < 200", prefilter=True).bypass_vector_index().limit(10)
            .to_arrow()["id"].to_pylist()
        )
        if got != expected[index]:
            wrong.append(f"query {index}: {got} != {expected[index]}")
        assert len(table.search(queries[index]).limit(10).to_arrow()) == 10

    fragment_counts: list[int] = []
    sampling = threading.Event()

    def sample_fragments() -> None:
        while not sampling.is_set():
            fragment_counts.append(stack.fragments("stream"))
            time.sleep(0.5)  # sampling the table's layout while it changes

    sampler = threading.Thread(target=sample_fragments, daemon=True)
    alive = {int(i): f"doc {i} {'even' if i % 2 == 0 else 'odd'}" for i in base_ids}
    next_id = 200
    started = time.monotonic()
    with QueryLoad(search) as load:
        sampler.start()
        for append in range(300):
            batch = rows(np.arange(next_id, next_id + 10), seed=100 + append)
            table.add(batch)
            alive.update(zip(batch["id"].to_pylist(), batch["text"].to_pylist()))
            next_id += 10
            if append % 25 == 24:
                doomed = [next_id - 3, next_id - 12, next_id - 25]
                table.delete(f"id IN ({', '.join(map(str, doomed))})")
                for id_ in doomed:
                    alive.pop(id_)
            if append % 30 == 29:
                target = next_id - 7
                table.update(where=f"id = {target}", values={"text": f"updated {target}"})
                alive[target] = f"updated {target}"
        streamed = time.monotonic() - started

        # Lance never compacts fragments of different index coverage together, so a few
        # small fragments may stay until the index's segments are merged.
        def caught_up():
            index = stack.vector_index("stream")
            done = index is not None and index["num_unindexed_rows"] < OPTIMIZE_AT
            return done and stack.fragments("stream") <= 2 * COMPACT_AT

        wait_until(caught_up, 120, "the indexer to catch up", interval=0.5)
        caught = time.monotonic() - started - streamed
    sampling.set()
    sampler.join()

    assert not load.failures, load.failures[:3]
    assert not wrong, wrong[:3]
    assert load.answered > 0
    assert table.count_rows() == len(alive)
    scanned = table.search().select(["id", "text"]).limit(len(alive) + 100).to_arrow()
    assert dict(zip(scanned["id"].to_pylist(), scanned["text"].to_pylist())) == alive
    # Appends keep landing while a compaction runs, and a compaction's commit can lose
    # the race to them for seconds on this moto server: the table stays near the
    # trigger most of the time, and far below the 300 fragments of no compaction.
    typical, most = int(np.median(fragment_counts)), max(fragment_counts)
    assert typical <= 3 * COMPACT_AT and most <= 150, f"fragments: median {typical}, at most {most}"
    index = stack.vector_index("stream")
    assert index["index_type"] == "IVF_PQ" and index["index_name"] == "vector_idx"
    assert index["num_indexed_rows"] >= len(alive) - OPTIMIZE_AT

    # A client's index request returns at once and the indexer builds it.
    table.create_index("text", config=FTS(), wait_timeout=timedelta(seconds=120))
    indexes = {index.name: index.index_type for index in table.list_indices()}
    assert indexes == {"vector_idx": "IvfPq", "id_idx": "BTree", "text_idx": "FTS"}, "automatic, configured, requested"
    assert table.index_stats("text_idx").num_unindexed_rows == 0

    indexer = stack.indexers[0].metrics()
    for kind in ["compaction", "auto_index", "optimize_indexes", "requested_index"]:
        assert metric(indexer, "lancefleet_indexer_jobs_total", kind=kind, outcome="done") > 0, kind
    assert metric(indexer, "lancefleet_indexer_jobs_total", outcome="failed") == 0
    assert metric(indexer, "lancefleet_indexer_table_fragments", table="stream") <= 2 * COMPACT_AT
    prewarmed = sum(metric(e.metrics(), "lancefleet_executor_prewarm_total", what="fragment",
                           trigger="maintenance") for e in stack.executors)
    assert prewarmed > 0, "executors prewarmed the fragments compaction wrote"
    print(
        f"\nstream: 300 appends in {streamed:.1f} s with {load.answered} queries; caught up {caught:.1f} s later; "
        f"fragments median {typical}, at most {most}; {prewarmed:.0f} fragments prewarmed"
    )


def test_an_indexer_killed_mid_compaction_loses_nothing(stack):
    table = stack.db.create_table("killed", rows(np.arange(500), seed=1))
    for append in range(1, 40):
        table.add(rows(np.arange(append * 500, (append + 1) * 500), seed=append))
    before = stack.fragments("killed")
    query = np.random.default_rng(9).random(DIM, dtype=np.float32)
    want = table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()

    first = stack.indexer("ix-first")
    wait_until(lambda: first.logged("maintenance job started", job="compaction"), 60, "a compaction to start", 0.01)
    first.stop(9)
    if first.logged("maintenance committed", job="compaction"):
        pytest.fail("the compaction committed before the kill; the test needs a slower compaction")
    assert stack.fragments("killed") == before, "nothing was committed"
    assert table.count_rows() == 20_000
    assert table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist() == want

    second = stack.indexer("ix-second")
    # 40 fragments of 500 rows become 20 of the 1000-row target.
    wait_until(lambda: stack.fragments("killed") == 20, 120, "the second indexer to compact", 0.5)
    assert second.logged("maintenance committed", job="compaction")
    assert table.count_rows() == 20_000
    assert table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist() == want
    ids = table.search().select(["id"]).limit(30_000).to_arrow()["id"].to_pylist()
    assert sorted(ids) == list(range(20_000))


def turns(indexer: Indexer) -> list[tuple[str, str, str, str]]:
    """(table, holder, started, ended) of every finished turn, timestamps as logged."""
    open_turns, done = {}, []
    for event in indexer.events():
        key = event.get("table")
        if event.get("message") == "maintenance turn started":
            open_turns[key] = event["timestamp"]
        elif event.get("message") == "maintenance turn ended" and key in open_turns:
            done.append((key, event["holder"], open_turns.pop(key), event["timestamp"]))
    return done


def test_two_indexers_never_maintain_one_table_at_once(stack):
    a, b = stack.indexer("ix-a"), stack.indexer("ix-b")
    tables = [stack.db.create_table(f"t{i}", rows(np.arange(100), seed=i)) for i in range(3)]
    for append in range(1, 31):
        for number, table in enumerate(tables):
            table.add(rows(np.arange(append * 100, (append + 1) * 100), seed=number * 100 + append))
    wait_until(lambda: all(stack.fragments(f"t{i}") <= 2 * COMPACT_AT for i in range(3)), 120, "compaction", 0.5)
    for table in tables:
        assert table.count_rows() == 3100
    all_turns = turns(a) + turns(b)
    assert {holder for _, holder, _, _ in all_turns} == {"ix-a", "ix-b"}, "both indexers took turns"
    for name in {turn[0] for turn in all_turns}:
        mine = sorted((start, end, holder) for table, holder, start, end in all_turns if table == name)
        for (_, end, holder), (start, _, next_holder) in zip(mine, mine[1:]):
            assert end <= start or holder == next_holder, f"{name}: {holder} and {next_holder} overlapped"
    busy = a.logged("table is maintained by another indexer") + b.logged("table is maintained by another indexer")
    assert busy, "the indexers contended for tables, and the lock decided"


def test_a_lancedb_oss_table_maintained_by_the_indexer_still_opens_in_lancedb_oss(tmp_path):
    data = tmp_path / "data"
    oss = lancedb.connect(str(data))
    table = oss.create_table("oss", rows(np.arange(300), seed=1))
    for append in range(1, 12):
        table.add(rows(np.arange(append * 300, (append + 1) * 300), seed=append))
    table.create_index("vector", config=IvfPq(num_partitions=4, num_sub_vectors=4))
    for append in range(12, 20):
        table.add(rows(np.arange(append * 300, (append + 1) * 300), seed=append))
    table.delete("id % 50 = 0")
    expected_rows = table.count_rows()
    query = np.random.default_rng(4).random(DIM, dtype=np.float32)
    exact = table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()
    fragments_before = len(lance.dataset(str(data / "oss.lance")).get_fragments())

    indexer = Indexer(tmp_path, "ix-once", data, MAINTENANCE)
    finished = indexer.run_once()
    assert finished.returncode == 0, finished.stderr[-3000:]

    reopened = lancedb.connect(str(data)).open_table("oss")
    assert reopened.count_rows() == expected_rows
    assert reopened.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist() == exact
    assert len(reopened.search(query).limit(10).to_arrow()) == 10
    assert len(lance.dataset(str(data / "oss.lance")).get_fragments()) < fragments_before
    stats = reopened.index_stats("vector_idx")
    assert stats.num_unindexed_rows < OPTIMIZE_AT, stats
    assert {index.name for index in reopened.list_indices()} == {"vector_idx", "id_idx"}
    assert reopened.search().where("id = 301").limit(5).to_arrow()["id"].to_pylist() == [301]
    reopened.add(rows(np.arange(100_000, 100_010), seed=99))
    assert reopened.count_rows() == expected_rows + 10


def test_standalone_builds_requested_indexes_and_refuses_bad_ones(tmp_path):
    server = LanceFleetServer(tmp_path, executors=0, env={"LANCEFLEET_INDEXER__EMBEDDED": "true"}).start()
    try:
        table = connect_remote(server.url).create_table("docs", rows(np.arange(600), seed=2))
        version = table.version
        url = f"{server.url}/v1/table/docs/create_index/"
        for body, message in [
            ({"column": "nope", "index_type": "BTREE"}, "does not exist"),
            ({"column": "id", "index_type": "FTS"}, "FTS index on column 'id'"),
            ({"column": "vector", "index_type": "IVF_MAGIC"}, "unknown index type"),
            ({"column": "vector", "index_type": "IVF_PQ", "num_sub_vectors": 5}, "divide"),
        ]:
            response = requests.post(url, json=body, timeout=30)
            assert response.status_code == 400 and message in response.text, (body, response.text)
        assert table.version == version and table.list_indices() == []

        table.create_index("vector", config=IvfFlat(num_partitions=2), wait_timeout=timedelta(seconds=60))
        table.create_index("text", config=FTS(), wait_timeout=timedelta(seconds=60))
        indexes = {index.name: index.index_type for index in table.list_indices()}
        assert indexes == {"vector_idx": "IvfFlat", "text_idx": "FTS"}, "the client's names of IVF_FLAT and FTS"
        assert table.index_stats("vector_idx").num_indexed_rows == 600
        missing = requests.post(f"{server.url}/v1/table/docs/index/nope/stats/", json={}, timeout=30)
        assert missing.status_code == 404
    finally:
        server.stop()


SEGMENT_ROWS = 1000


def segmented_stack(tmp_path, moto, name: str, segment_rows_key: str, prewarm: bool = False) -> Stack:
    """3 executors and an indexer keeping indexes as segments of SEGMENT_ROWS rows (the
    setting `segment_rows_key`) over fragments of 500 rows, without automatic indexes or
    hedging (a hedged call opens segments on a second replica too: measured without), and
    unless `prewarm`, without prewarming at start (which reads replicas' shares too)."""
    stack = Stack(tmp_path, moto, name, executors=3, env={
        f"LANCEFLEET_INDEXER__{segment_rows_key}": str(SEGMENT_ROWS),
        "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": "500",
        "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0",
        "LANCEFLEET_INDEXER__AUTO_SCALAR_COLUMNS": "[]",
        "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off",
        **({} if prewarm else {"LANCEFLEET_EXECUTOR__PREWARM_BUDGET": "0"}),
    })
    stack.indexer("ix-0")
    return stack


def once_executors_answer(run, what: str):
    """`run()`'s answer once the (re)started executors answer."""
    def answered():
        try:
            return run()
        except (OSError, RuntimeError, ValueError):  # the executors are registering again
            return None
    return wait_until(answered, 60, what)


def assert_divided(read: list[float], total: int, what: str) -> None:
    """Each of 3 executors fetched some of an index's `total` bytes, about a third."""
    print(f"{what} bytes fetched per executor: {read} of {total}")
    assert all(0 < bytes_read <= 0.7 * total for bytes_read in read), (read, total)


def twelve_fragments(stack: Stack, make) -> lancedb.table.Table:
    """Table `docs` of 12 fragments of 500 rows made by `make(ids, seed)`."""
    table = stack.db.create_table("docs", make(np.arange(500), seed=0))
    for batch in range(1, 12):
        table.add(make(np.arange(batch * 500, (batch + 1) * 500), seed=batch))
    return table


def test_a_vector_index_kept_as_segments_divides_its_search_over_executors(tmp_path, moto):
    """12 fragments of 500 rows, an IVF_PQ index asked for by the client: the indexer builds
    it as 6 segments of 1000 rows sharing one model. Each of 3 executors
    opens about a third of the index bytes (it read all of them before segments were
    placed), ANN results are lance's in-process on the same segments, flat results equal
    exact search, and rows appended later go into new segments of the same size."""
    stack = segmented_stack(tmp_path, moto, "segmented-index", "VECTOR_SEGMENT_ROWS")
    try:
        table = twelve_fragments(stack, rows)
        table.create_index("vector", config=IvfPq(num_partitions=4, num_sub_vectors=4))

        def segments():
            found = [index for index in stack.dataset("docs").list_indices() if index["name"] == "vector_idx"]
            return found if len(found) == 6 else None

        found = wait_until(segments, 120, "the vector index built as 6 segments")
        covered = sorted(sorted(segment["fragment_ids"]) for segment in found)
        assert covered == [[2 * i, 2 * i + 1] for i in range(6)], covered
        dataset = stack.dataset("docs")
        [description] = [d for d in dataset.describe_indices() if d.name == "vector_idx"]
        index_bytes = description.total_size_bytes

        explained = table.search([0.5] * DIM).limit(10).explain_plan()
        assert explained.count("one vector index segment") == 6, explained

        # Restarted with empty caches, the executors have fetched no index yet: what they
        # fetch from the object store now is what the queries need of it, each chunk once.
        stack.restart_executors_cold()
        rng = np.random.default_rng(7)
        queries = rng.random((20, DIM), dtype=np.float32)

        fleet = once_executors_answer(
            lambda: [table.search(q).nprobes(4).limit(10).to_arrow()["id"].to_pylist() for q in queries],
            "queries answered after the restart")
        assert_divided(stack.index_bytes_fetched(), index_bytes, "vector index")

        local = [dataset.to_table(columns=["id"], nearest={
            "column": "vector", "q": q, "k": 10, "nprobes": 4, "refine_factor": 1})["id"].to_pylist()
            for q in queries]
        vectors, ids = _all(dataset)
        exact = [exact_top10(vectors, ids, q) for q in queries]
        recall = lambda results: np.mean([len(set(r) & set(e)) / 10 for r, e in zip(results, exact)])  # noqa: E731
        assert recall(fleet) >= recall(local) - 0.02, (recall(fleet), recall(local))
        flat = [table.search(q).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist() for q in queries[:5]]
        assert flat == exact[:5]

        # A SIGKILLed executor's segments are searched by their next replica. Not always the
        # same answers: a replica searching its own segments and the dead one's in one call
        # re-ranks k candidates of them all, where two calls re-rank k each; recall stays
        # at least lance's, which re-ranks k of all six segments.
        stack.executors[0].stop(signal.SIGKILL)
        replicas = [table.search(q).nprobes(4).limit(10).to_arrow()["id"].to_pylist() for q in queries]
        assert recall(replicas) >= recall(local) - 0.02, (recall(replicas), recall(local))
        stack.executors[0].start()

        for start in (6000, 6500):
            table.add(rows(np.arange(start, start + 500), seed=start))

        def appended():
            found = [i for i in stack.dataset("docs").list_indices() if i["name"] == "vector_idx"]
            covered = [fragment for segment in found for fragment in segment["fragment_ids"]]
            return found if len(set(covered)) == 14 else None

        found = wait_until(appended, 120, "the appended rows indexed")
        covered = [fragment for segment in found for fragment in segment["fragment_ids"]]
        assert len(covered) == 14, f"segments do not overlap: {found}"
        assert all(len(segment["fragment_ids"]) <= 2 for segment in found), f"at most {SEGMENT_ROWS} rows: {found}"
        assert table.search(queries[0]).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist() == \
            exact_top10(*_all(stack.dataset("docs")), queries[0])
    finally:
        stack.stop()


def test_executors_prewarm_their_share_when_they_start(tmp_path, moto):
    """The 6-segment index of the test above, executors restarted together with empty
    caches: before any query each reads the segments and fragments placed on it as first
    choice or replica, so together they fetch each segment twice (2 replicas). Afterwards
    queries fetch nothing from the object store, also once an executor is SIGKILLed and
    its replicas search its segments."""
    stack = segmented_stack(tmp_path, moto, "prewarmed-index", "VECTOR_SEGMENT_ROWS", prewarm=True)
    try:
        table = twelve_fragments(stack, rows)
        table.create_index("vector", config=IvfPq(num_partitions=4, num_sub_vectors=4))
        wait_until(lambda: len([i for i in stack.dataset("docs").list_indices() if i["name"] == "vector_idx"]) == 6,
                   120, "the vector index built as 6 segments")
        [description] = [d for d in stack.dataset("docs").describe_indices() if d.name == "vector_idx"]
        index_bytes = description.total_size_bytes

        logged = [e.log_path.stat().st_size for e in stack.executors]
        stack.restart_executors_cold_together()

        def prewarmed():
            rounds = [e.log_path.read_text(errors="replace")[start:].count("prewarmed this executor's share")
                      for e, start in zip(stack.executors, logged)]
            segments = [metric(e.metrics(), "lancefleet_executor_prewarm_total", what="index", trigger="membership")
                        for e in stack.executors]
            return all(rounds) and all(segments)

        wait_until(prewarmed, 60, "every executor prewarmed its share")
        index_read = stack.index_bytes_fetched()
        print(f"index bytes prewarmed per executor: {index_read} of {index_bytes}")
        # Each segment by its 2 replicas; how many lists hold one executor is up to the hash
        # (with 6 segments, one may be in all of them).
        assert all(read > 0 for read in index_read), (index_read, index_bytes)
        assert 1.9 * index_bytes <= sum(index_read) <= 2.1 * index_bytes, (index_read, index_bytes)

        queries = np.random.default_rng(11).random((10, DIM), dtype=np.float32)
        before = stack.fetched()
        first = [table.search(q).nprobes(4).refine_factor(2).limit(10).to_arrow()["id"].to_pylist() for q in queries]
        assert stack.fetched() == before, "the queries found everything they read warm"

        stack.executors[0].stop(signal.SIGKILL)
        survivors = stack.executors[1:]
        before = [metric(e.metrics(), "lancefleet_cache_read_bytes_total", tier="object_store") for e in survivors]
        failover = [table.search(q).nprobes(4).refine_factor(2).limit(10).to_arrow()["id"].to_pylist()
                    for q in queries]
        after = [metric(e.metrics(), "lancefleet_cache_read_bytes_total", tier="object_store") for e in survivors]
        assert after == before, "the replicas had the dead executor's segments and fragments warm"
        assert all(len(ids) == 10 for ids in first + failover)
    finally:
        stack.stop()


WORDS = ["lance", "fleet", "vector", "search", "index", "segment", "cache", "query", "shard", "replica",
         "executor", "tokenizer", "posting", "scorer", "corpus", "fragment"]


def documents(ids: np.ndarray, seed: int) -> pa.Table:
    """Rows whose `text` has 3 to 15 words drawn with Zipf-like frequencies, so BM25 scores
    vary with term frequency, document length and document frequency."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 16), p=weights)) for _ in ids]
    return pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array(texts)})


def test_full_text_and_scalar_indexes_kept_as_segments_divide_over_executors(tmp_path, moto):
    """12 fragments of 500 documents, an FTS and a BTREE index asked for by the client: the
    indexer builds them as 6 segments of 1000 rows each. Each of 3 executors
    opens about a third of each index's bytes; every score equals lance's in-process search
    of the same table (BM25 statistics of the whole corpus, gathered from the executors
    first), also with one executor SIGKILLed and after appends, which go into new segments;
    filtered scans answered by the BTREE segments return lance's rows."""
    stack = segmented_stack(tmp_path, moto, "segmented-fts", "INDEX_SEGMENT_ROWS")
    try:
        table = twelve_fragments(stack, documents)
        table.create_index("text", config=FTS())
        table.create_index("id", config=BTree())

        def text_segments(covering: int, name: str = "text_idx"):
            found = [index for index in stack.dataset("docs").list_indices() if index["name"] == name]
            covered = [fragment for segment in found for fragment in segment["fragment_ids"]]
            multi = all(len(segment["fragment_ids"]) <= 2 for segment in found)
            return found if len(set(covered)) == covering and multi and len(found) >= 6 else None

        pairs = [[2 * i, 2 * i + 1] for i in range(6)]
        for name in ("text_idx", "id_idx"):
            found = wait_until(lambda: text_segments(12, name), 120, f"{name} built as 6 segments")
            assert sorted(sorted(segment["fragment_ids"]) for segment in found) == pairs, found
        sizes = {d.name: d.total_size_bytes for d in stack.dataset("docs").describe_indices()}
        index_bytes = sizes["text_idx"]

        explained = table.search("lance", query_type="fts").limit(10).explain_plan()
        assert explained.count("one full-text index segment") == 6, explained
        assert "executors first report their segments' BM25 statistics" in explained, explained

        stack.restart_executors_cold()
        queries = ["lance", "vector search", "posting scorer corpus", "fragment replica", "cache shard executor",
                   "tokenizer", "index segment query", "fleet lance vector"]

        def fleet_answers():
            return [table.search(q, query_type="fts").limit(10).to_arrow() for q in queries]

        fleet = once_executors_answer(fleet_answers, "queries answered after the restart")
        assert_divided(stack.index_bytes_fetched(), index_bytes, "full-text index")

        def same_as_lance(answers, dataset):
            for q, answer in zip(queries, answers):
                local = dataset.to_table(columns=["id"], full_text_query=q, limit=10)
                scores, expected = answer["_score"].to_pylist(), local["_score"].to_pylist()
                assert np.allclose(scores, expected, rtol=1e-5), (q, scores, expected)
                # Ids are equal where scores are not tied at the cut.
                cut = expected[-1]
                top = lambda t: {i for i, s in zip(t["id"].to_pylist(), t["_score"].to_pylist()) if s > cut + 1e-5}  # noqa: E731
                assert top(answer) == top(local), q

        same_as_lance(fleet, stack.dataset("docs"))

        # Filtered scans: each executor opens only the BTREE segments over its fragments.
        before = stack.index_bytes_fetched()
        filters = ["id >= 250", "id < 5800 AND id > 40", "id >= 1000 AND id < 5000"]
        for where in filters:
            rows = table.search().where(where).limit(10_000).to_arrow()["id"].to_pylist()
            local = stack.dataset("docs").to_table(columns=["id"], filter=where)["id"].to_pylist()
            assert sorted(rows) == sorted(local), where
        read = [after - earlier for after, earlier in zip(stack.index_bytes_fetched(), before)]
        assert_divided(read, sizes["id_idx"], "BTREE index")

        stack.executors[0].stop(signal.SIGKILL)
        same_as_lance(fleet_answers(), stack.dataset("docs"))
        stack.executors[0].start()

        for start in (6000, 6500):
            table.add(documents(np.arange(start, start + 500), seed=start))
        wait_until(lambda: text_segments(14), 120, "the appended rows indexed as a segment")
        same_as_lance(once_executors_answer(fleet_answers, "queries answered after the appends"), stack.dataset("docs"))
    finally:
        stack.stop()


def test_a_one_fragment_table_is_split_for_every_executor_to_serve_part(tmp_path, moto):
    """12000 rows written as one fragment, served by 3 executors: one executor serves all
    of it until the indexer splits it into 6 fragments of 2000 rows (2 per executor, each
    at least `min_fragment_rows`); then every executor serves part of each query, and the
    table has the same rows in the same order."""
    env = {
        "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": "1048576",
        "LANCEFLEET_INDEXER__MIN_FRAGMENT_ROWS": "1000",
        "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "0",
        "LANCEFLEET_INDEXER__AUTO_SCALAR_COLUMNS": "[]",
        "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off",
    }
    stack = Stack(tmp_path, moto, "split-fragments", executors=3, env=env)
    try:
        table = stack.db.create_table("docs", rows(np.arange(12_000), seed=0))
        assert stack.fragments("docs") == 1
        before = stack.dataset("docs").to_table(columns=["id", "vector", "text"])
        query = np.random.default_rng(3).random(DIM, dtype=np.float32)
        exact = exact_top10(*_all(stack.dataset("docs")), query)

        def served(search) -> list[float]:
            """How many plan fragments each executor received for `search`."""
            calls = lambda: [metric(e.metrics(), "lancefleet_executor_fragments_total") for e in stack.executors]  # noqa: E731
            start = calls()
            search()
            return [after - was for after, was in zip(calls(), start)]

        flat = lambda: table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()  # noqa: E731
        assert sorted(served(flat)) == [0, 0, 1], "one fragment: one executor"

        stack.indexer("ix-0")
        wait_until(lambda: stack.fragments("docs") == 6, 120, "the table split into 6 fragments")
        dataset = stack.dataset("docs")
        assert [f.count_rows() for f in dataset.get_fragments()] == [2000] * 6
        assert dataset.to_table(columns=["id", "vector", "text"]) == before, "same rows, same order"

        assert served(flat) == [1, 1, 1], "each executor serves its 2 fragments in one call"
        assert flat() == exact
        scanned = table.search().where("id % 1000 = 7").limit(100).to_arrow()["id"].to_pylist()
        assert sorted(scanned) == list(range(7, 12_000, 1000))
        assert table.count_rows() == 12_000
    finally:
        stack.stop()


def test_queries_answer_through_a_stalled_executor_by_hedging(tmp_path, moto):
    """`cluster.hedge_after = auto` (the default), one of 3 executors stopped (SIGSTOP) for
    1.5 s of every 2 s while 2 threads search: a call it does not answer within the
    executors' recent p95 goes to the next replica of its fragments too, so no query fails,
    every answer is exact, and none, in the first stall or the later ones, waits for the
    executor to resume. (That a stalled executor cannot raise its own hedge delay is a unit
    test of `dispatch::hedge`: here the hedges win, so its late answers are never seen.)"""
    stack = Stack(tmp_path, moto, "stalled-executor", executors=3)
    try:
        table = stack.db.create_table("docs", rows(np.arange(1000), seed=0))
        for batch in range(1, 6):
            table.add(rows(np.arange(batch * 1000, (batch + 1) * 1000), seed=batch))
        query = np.random.default_rng(5).random(DIM, dtype=np.float32)
        exact = exact_top10(*_all(stack.dataset("docs")), query)
        search = lambda: table.search(query).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()  # noqa: E731
        assert search() == exact
        latencies, wrong = [], []

        def timed_search():
            started = time.monotonic()
            answer = search()
            latencies.append((started, time.monotonic() - started))
            if answer != exact:
                wrong.append(answer)

        def hedged() -> float:
            samples = parse_metrics(requests.get(f"{stack.query_node.url}/metrics", timeout=10).text)
            return metric(samples, "lancefleet_query_hedged_calls_total", winner="hedge")

        hedged_before = hedged()
        stalled = stack.executors[0].proc
        with QueryLoad(timed_search) as load:
            # `auto` hedges once executors have answered 16 calls of a kind.
            wait_until(lambda: load.answered >= 40, timeout=120, what="40 queries before the stalls")
            first_stall = time.monotonic()
            for _ in range(4):
                stalled.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(1.5)
                finally:
                    stalled.send_signal(signal.SIGCONT)
                time.sleep(0.5)
        during = [latency for started, latency in latencies if started >= first_stall]
        print(f"stalls: {len(during)} queries, 0 failed, slowest {max(during):.2f} s, "
              f"{hedged() - hedged_before:.0f} calls answered by the hedge")
        assert load.failures == [] and wrong == []
        assert len(during) >= 10
        assert max(during) < 0.75, "a query waited for half a stall or more"
        assert hedged() > hedged_before
    finally:
        stack.stop()


def _all(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The vectors and ids of `dataset`."""
    data = dataset.to_table(columns=["vector", "id"])
    return np.stack(data["vector"].to_numpy(zero_copy_only=False)), data["id"].to_numpy()
