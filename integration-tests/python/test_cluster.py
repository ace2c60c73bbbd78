"""The distributed read path with real processes: a query node and three plan executors
over a table on S3 (a local moto server), checked against lance in-process.

- flat search through the cluster equals single-process lance row for row (ids and
  distances), with filters, offsets and every distance type; scans and counts equal;
- with an IVF_PQ index, recall@10 through the cluster is at least lance's own;
- after a warm-up, repeated queries read no data or index file from S3 (GETs counted
  in moto's request log), all served by the executors' foyer caches;
- an executor killed with SIGKILL while queries run fails no query and changes no result,
  and a Flight SQL scan while it is down gets its fragments from their next executors;
  restarted, it serves its fragments from its disk cache without touching S3.
"""

from __future__ import annotations

import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import requests

from conftest import BUCKET, LanceFleetServer, ObjectGets, s3_env, storage_options
from lf_helpers import connect_remote, metric, parse_metrics, write_fragments

DIM = 32
FRAGMENTS = 20
ROWS_PER_FRAGMENT = 500
QUERIES = 50
TABLE = "vectors"


@pytest.fixture(scope="module")
def table_on_s3(moto):
    """A table of FRAGMENTS fragments written by pylance straight to S3; returns its uri
    and all vectors (row i has id i)."""
    rng = np.random.default_rng(7)
    vectors = rng.random((FRAGMENTS * ROWS_PER_FRAGMENT, DIM), dtype=np.float32)
    uri = f"s3://{BUCKET}/db/{TABLE}.lance"
    write_fragments(uri, vectors, FRAGMENTS, storage_options(moto))
    dataset = lance.dataset(uri, storage_options=storage_options(moto))
    assert len(dataset.get_fragments()) == FRAGMENTS
    return uri, vectors


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto, table_on_s3):
    server = LanceFleetServer(
        tmp_path_factory.mktemp("cluster"), data_dir=f"s3://{BUCKET}/db", executors=3,
        # Hedging off: a hedged call reads its fragments on a replica whose cache is cold,
        # which the warm-pass test would count as object-store reads. Hedging has its own
        # tests (the in-process harness).
        env={**s3_env(moto), "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off"},
    ).start()
    yield server
    server.stop()


def lance_dataset(uri: str, moto: str):
    return lance.dataset(uri, storage_options=storage_options(moto))


def random_query(rng: np.random.Generator) -> dict:
    return {
        "vector": rng.random(DIM, dtype=np.float32),
        "metric": str(rng.choice(["l2", "cosine", "dot"])),
        "k": int(rng.integers(1, 30)),
        "offset": int(rng.choice([0, 0, 3, 17])),
        "filter": rng.choice([None, "category = 3", "id % 5 <> 0", "id < 4000"]),
    }


def cluster_search(table, query: dict) -> pa.Table:
    """An exact (flat) search through the cluster, whatever indexes exist."""
    builder = table.search(query["vector"]).distance_type(query["metric"]).limit(query["k"]).bypass_vector_index()
    if query["offset"]:
        builder = builder.offset(query["offset"])
    if query["filter"]:
        builder = builder.where(query["filter"], prefilter=True)
    return builder.to_arrow()


def lance_search(dataset, query: dict) -> pa.Table:
    result = dataset.to_table(
        nearest={
            "column": "vector", "q": query["vector"], "k": query["k"] + query["offset"],
            "metric": query["metric"], "use_index": False,
        },
        filter=query["filter"],
        prefilter=True,
    )
    return result.slice(query["offset"], query["k"])


def assert_same_rows(got: pa.Table, expected: pa.Table, context) -> None:
    assert got["id"].to_pylist() == expected["id"].to_pylist(), context
    np.testing.assert_allclose(
        got["_distance"].to_numpy(), expected["_distance"].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=str(context)
    )


def test_flat_search_scans_and_counts_equal_single_process_lance(cluster, moto, table_on_s3):
    uri, _ = table_on_s3
    table = connect_remote(cluster.url).open_table(TABLE)
    dataset = lance_dataset(uri, moto)
    rng = np.random.default_rng(11)
    for number in range(QUERIES):
        query = random_query(rng)
        assert_same_rows(cluster_search(table, query), lance_search(dataset, query), (number, query))

    for filter_, limit, offset in [("category = 2", 40, 0), ("id % 3 = 0", 25, 610), (None, 1200, 480)]:
        builder = table.search().limit(limit).offset(offset).select(["id", "category"])
        got = (builder.where(filter_) if filter_ else builder).to_arrow()
        expected = dataset.to_table(columns=["id", "category"], filter=filter_, limit=limit, offset=offset)
        assert got.to_pylist() == expected.to_pylist(), (filter_, limit, offset)

    for filter_ in [None, "category = 4", "id >= 9000", "id < 0"]:
        assert table.count_rows(filter_) == dataset.count_rows(filter_), filter_


def recall(found: list[int], truth: list[int]) -> float:
    return len(set(found) & set(truth)) / len(truth)


def test_ivf_pq_recall_is_at_least_single_process_lance(cluster, moto, table_on_s3):
    uri, vectors = table_on_s3
    dataset = lance_dataset(uri, moto)
    dataset.create_index("vector", index_type="IVF_PQ", num_partitions=16, num_sub_vectors=8, metric="l2")
    dataset = lance_dataset(uri, moto)
    table = connect_remote(cluster.url).open_table(TABLE)
    rng = np.random.default_rng(5)
    cluster_recalls, lance_recalls = [], []
    for _ in range(QUERIES):
        q = rng.random(DIM, dtype=np.float32)
        truth = np.argsort(((vectors - q) ** 2).sum(axis=1))[:10].tolist()
        got = table.search(q).distance_type("l2").nprobes(4).limit(10).to_arrow()["id"].to_pylist()
        expected = dataset.to_table(
            nearest={"column": "vector", "q": q, "k": 10, "nprobes": 4, "metric": "l2"}
        )["id"].to_pylist()
        cluster_recalls.append(recall(got, truth))
        lance_recalls.append(recall(expected, truth))
    assert np.mean(cluster_recalls) >= np.mean(lance_recalls), (np.mean(cluster_recalls), np.mean(lance_recalls))


def run_workload(table, queries: list[dict]) -> None:
    for query in queries:
        cluster_search(table, query)
        table.search(query["vector"]).nprobes(4).limit(10).to_arrow()  # through the IVF_PQ index
    table.search().where("category = 5").limit(300).to_arrow()
    table.count_rows("id % 2 = 0")


def test_warm_queries_read_nothing_from_object_storage(cluster, moto, table_on_s3):
    table = connect_remote(cluster.url).open_table(TABLE)
    rng = np.random.default_rng(31)
    queries = [random_query(rng) for _ in range(10)]
    run_workload(table, queries)
    ever = ObjectGets(moto)
    ever.mark = 0
    assert ever.since_mark(), "the log shows data reads at all (the counter works)"
    warm = ObjectGets(moto)
    before = [executor.metrics() for executor in cluster.executors]
    run_workload(table, queries)
    after = [executor.metrics() for executor in cluster.executors]
    gets = warm.since_mark()
    assert gets == [], f"{len(gets)} data/index GETs reached S3 on the warm pass, e.g. {gets[:3]}"

    def delta(name: str, **labels) -> float:
        return sum(metric(a, name, **labels) - metric(b, name, **labels) for a, b in zip(after, before))

    hits, misses = delta("lancefleet_cache_hits_total"), delta("lancefleet_cache_misses_total")
    assert hits > 0 and hits / (hits + misses) >= 0.99, (hits, misses)
    assert delta("lancefleet_cache_read_bytes_total", tier="object_store") == 0
    assert all(metric(m, "lancefleet_executor_fragments_total", rpc="execute") > 0 for m in after), (
        "every executor ran fragments"
    )
    node = parse_metrics(requests.get(f"{cluster.url}/metrics", timeout=10).text)
    assert metric(node, "lancefleet_query_fragments_total", choice="first") > 0
    assert metric(node, "lancefleet_rest_requests_total", route="/v1/table/{id}/query", status="200") > 0


def test_an_executor_killed_under_load_fails_no_query(cluster, moto, table_on_s3):
    uri, _ = table_on_s3
    dataset = lance_dataset(uri, moto)
    rng = np.random.default_rng(23)
    queries = [dict(random_query(rng), offset=0) for _ in range(8)]
    expected = [lance_search(dataset, query) for query in queries]
    table = connect_remote(cluster.url).open_table(TABLE)
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        while not stop.is_set():
            for query, want in zip(queries, expected):
                try:
                    got = cluster_search(table, dict(query, vector=query["vector"]))
                    assert_same_rows(got, want, query)
                    answered += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(error))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(2)
    victim = cluster.executors[1]
    victim.proc.kill()
    victim.proc.wait()
    time.sleep(4)
    stop.set()
    for worker in workers:
        worker.join(timeout=120)
    assert not failures, failures[:3]
    assert answered > 0
    # With the victim still down, a SQL scan's share of it goes to the next executors.
    with flight_sql.connect(cluster.flight_url) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT count(*) AS n, sum(id) AS total FROM {TABLE} WHERE category = 3")
        got = cursor.fetch_arrow_table().to_pylist()
        cursor.close()
    want = dataset.to_table(columns=["id"], filter="category = 3")
    assert got == [{"n": want.num_rows, "total": pc.sum(want["id"]).as_py()}]
    # Restarted on the same address, it gets its fragments back once the query node stops
    # passing it over (10 s after its last failure) and serves them from its disk cache.
    victim.start()
    time.sleep(11)
    gets = ObjectGets(moto)
    for query, want in zip(queries, expected):
        assert_same_rows(cluster_search(table, query), want, query)
    assert gets.since_mark() == [], "the restarted executor's disk cache was cold"
    restarted = victim.metrics()
    assert metric(restarted, "lancefleet_executor_fragments_total", rpc="execute") > 0, "it got its fragments back"
    assert metric(restarted, "lancefleet_cache_hits_total", tier="disk") > 0
    assert metric(restarted, "lancefleet_cache_misses_total") == 0
    node = parse_metrics(requests.get(f"{cluster.url}/metrics", timeout=10).text)
    assert metric(node, "lancefleet_query_fragment_retries_total") > 0, "in-flight fragments were retried"
