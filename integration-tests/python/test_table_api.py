"""The rest of the LanceDB table API through LanceFleet, each operation compared with
LanceDB OSS on the same data: merge_insert, schema evolution, restore and tags, stats,
every index type with drop_index, full-text and hybrid search, explain/analyze, and
namespaces. Runs in-process and again over 3 plan executors (scripts/test.sh)."""

from __future__ import annotations

import json
from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lancedb.index import FTS, BTree, Bitmap, HnswPq, HnswSq, IvfFlat, IvfPq, IvfSq, LabelList
from lancedb.query import BooleanQuery, BoostQuery, MatchQuery, MultiMatchQuery, Occur, PhraseQuery

from lf_helpers import (
    BIN_BYTES,
    DIM,
    arrow_stream_bytes,
    assert_tables_equal,
    connect_remote,
    hamming,
    json_body,
    make_binary_data,
    make_data,
    query_body,
    query_vectors,
    raw_request,
    read_arrow_file,
)

VOCAB = [
    "lance", "vector", "search", "river", "mountain", "forest", "engine", "cluster", "query", "index",
    "ocean", "garden", "rocket", "planet", "violin", "castle", "bridge", "market", "window", "silver",
]


def make_docs(n: int = 400, seed: int = 11) -> pa.Table:
    """Documents of 3-12 words from VOCAB (so BM25 scores rarely tie), a title, tags and a vector."""
    rng = np.random.default_rng(seed)
    texts, titles, tags = [], [], []
    for i in range(n):
        words = rng.choice(VOCAB, size=int(rng.integers(3, 13)))
        texts.append(" ".join(words))
        titles.append(" ".join(rng.choice(VOCAB, size=2)))
        tags.append([str(t) for t in rng.choice(["red", "green", "blue", "gold"], size=int(rng.integers(1, 3)), replace=False)])
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "text": pa.array(texts),
            "title": pa.array(titles),
            "tags": pa.array(tags, pa.list_(pa.string())),
            "category": pa.array([["a", "b", "c"][i % 3] for i in range(n)]),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        }
    )


def both(remote_db, oss_db, name, data):
    return remote_db.create_table(name, data), oss_db.create_table(name, data)


def scan(tbl) -> pa.Table:
    return tbl.search().to_arrow().sort_by("id")


def http(server, path, body=None, headers=None):
    return raw_request(server.url, "POST", path, json_body(body) if body is not None else None, headers)


# --------------------------------------------------------------------------- merge_insert

MERGES = {
    "upsert": lambda m: m.when_matched_update_all().when_not_matched_insert_all(),
    "insert_if_not_exists": lambda m: m.when_not_matched_insert_all(),
    "conditional_update": lambda m: m.when_matched_update_all(where="target.score < 0.5"),
    "replace_range": lambda m: m.when_matched_update_all()
    .when_not_matched_insert_all()
    .when_not_matched_by_source_delete("id < 100"),
    "delete_missing": lambda m: m.when_matched_update_all().when_not_matched_by_source_delete(),
}


@pytest.mark.parametrize("kind", sorted(MERGES))
def test_merge_insert_matches_oss(remote_db, oss_db, table_name, kind):
    remote, oss = both(remote_db, oss_db, table_name, make_data(300))
    source = make_data(100, seed=9, id_offset=250)  # ids 250..349: 50 match, 50 are new
    results = [MERGES[kind](t.merge_insert("id")).execute(source) for t in (remote, oss)]
    r, o = results
    assert (r.num_inserted_rows, r.num_updated_rows, r.num_deleted_rows) == (
        o.num_inserted_rows,
        o.num_updated_rows,
        o.num_deleted_rows,
    )
    assert r.version == remote.version == oss.version
    assert remote.count_rows() == oss.count_rows()
    assert_tables_equal(scan(remote), scan(oss))


def test_merge_insert_on_two_keys_and_bad_inputs(server, remote_db, oss_db, table_name):
    data = make_data(50).append_column("part", pa.array([i % 2 for i in range(50)], pa.int64()))
    remote, oss = both(remote_db, oss_db, table_name, data)
    source = data.slice(10, 20)
    source = source.set_column(source.schema.get_field_index("score"), "score", pa.array([9.0] * 20))
    for t in (remote, oss):
        t.merge_insert(["id", "part"]).when_matched_update_all().execute(source)
    assert_tables_equal(scan(remote), scan(oss))

    version, rows = remote.version, remote.count_rows()
    with pytest.raises(Exception, match="merge key 'nope'"):
        remote.merge_insert("nope").when_matched_update_all().execute(source)
    # A source without the key column.
    with pytest.raises(Exception, match="not a column of the new data"):
        remote.merge_insert("part").when_matched_update_all().execute(source.drop_columns(["part"]))
    # Data whose vectors have the wrong size (sent raw: the client would cast and refuse itself).
    wrong = make_data(5, dim=DIM + 1).append_column("part", pa.array([0] * 5, pa.int64()))
    status, _, text = raw_request(
        server.url,
        "POST",
        f"/v1/table/{table_name}/merge_insert/?on=id&when_matched_update_all=true&when_not_matched_insert_all=true",
        arrow_stream_bytes(wrong),
        {"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert 400 <= status < 500, (status, text)
    assert (remote.version, remote.count_rows()) == (version, rows), "refused merges change nothing"


# --------------------------------------------------------------------------- schema evolution


def test_schema_evolution_matches_oss(remote_db, oss_db, table_name):
    remote, oss = both(remote_db, oss_db, table_name, make_data(200))
    steps = [
        lambda t: t.add_columns({"double_score": "score * 2", "label": "concat('row-', cast(id as string))"}),
        lambda t: t.add_columns(pa.schema([pa.field("note", pa.string()), pa.field("weight", pa.float32())])),
        lambda t: t.alter_columns({"path": "text", "rename": "body"}),
        lambda t: t.alter_columns({"path": "double_score", "data_type": pa.float32()}),
        lambda t: t.alter_columns({"path": "note", "nullable": True}),
        lambda t: t.drop_columns(["weight", "label"]),
    ]
    for step in steps:
        step(remote)
        step(oss)
        assert remote.version == oss.version
        assert remote.schema == oss.schema
        assert_tables_equal(scan(remote), scan(oss))
    assert remote.schema.field("double_score").type == pa.float32()
    assert "body" in remote.schema.names and "text" not in remote.schema.names

    for t in (remote, oss):
        t.update_field_metadata({"path": "body", "metadata": {"origin": "test"}})
    assert remote.schema.field("body").metadata == oss.schema.field("body").metadata
    assert remote.schema.field("body").metadata[b"origin"] == b"test"

    version = remote.version
    bad = [
        lambda: remote.add_columns({"broken": "no_such_column + 1"}),
        lambda: remote.add_columns({"id": "1"}),  # exists
        lambda: remote.drop_columns(["no_such_column"]),
        lambda: remote.alter_columns({"path": "no_such_column", "rename": "x"}),
        lambda: remote.alter_columns({"path": "id", "data_type": pa.string()}),  # unsupported cast
    ]
    for call in bad:
        with pytest.raises(Exception):
            call()
    assert remote.version == version, "refused schema changes commit nothing"
    assert_tables_equal(scan(remote), scan(oss))


def test_schema_change_bad_bodies_are_400(server, remote_db, table_name):
    remote_db.create_table(table_name, make_data(10))
    cases = [
        ("add_columns", {"new_columns": []}),
        ("alter_columns", {"alterations": [{"path": "score", "data_type": {"type": "no-such-type"}}]}),
        ("drop_columns", {"columns": []}),
        ("update_field_metadata", {"updates": [{"path": "nope", "metadata": {"k": "v"}}]}),
    ]
    for route, body in cases:
        status, _, text = http(server, f"/v1/table/{table_name}/{route}/", body)
        assert 400 <= status < 500, (route, status, text)
    assert connect_remote(server.url).open_table(table_name).version == 1


# --------------------------------------------------------------------------- versions, restore, tags


def test_restore_and_tags_match_oss(remote_db, oss_db, table_name):
    remote, oss = both(remote_db, oss_db, table_name, make_data(100))
    for t in (remote, oss):
        t.add(make_data(50, seed=1, id_offset=100))
        t.delete("id < 20")
        t.tags.create("first", 1)
        t.tags.create("second", 2)
        t.tags.update("second", 3)
    assert {k: v["version"] for k, v in remote.tags.list().items()} == {"first": 1, "second": 3}
    assert remote.tags.get_version("second") == oss.tags.get_version("second") == 3

    remote.checkout("first")
    oss.checkout("first")
    assert_tables_equal(scan(remote), scan(oss))
    remote.checkout_latest()
    oss.checkout_latest()

    for t in (remote, oss):
        t.restore(2)
    assert remote.version == oss.version == 4
    assert remote.count_rows() == oss.count_rows() == 150
    assert_tables_equal(scan(remote), scan(oss))

    for t in (remote, oss):
        t.tags.delete("first")
    assert set(remote.tags.list()) == set(oss.tags.list()) == {"second"}

    version = remote.version
    bad = [
        lambda: remote.restore(99),
        lambda: remote.tags.create("missing-version", 99),
        lambda: remote.tags.create("second", 1),  # exists
        lambda: remote.tags.update("no-such-tag", 1),
        lambda: remote.tags.delete("no-such-tag"),
        lambda: remote.tags.get_version("no-such-tag"),
    ]
    for call in bad:
        with pytest.raises(Exception):
            call()
    assert remote.version == version
    assert remote.tags.get_version("second") == 3


def test_version_and_tag_errors_are_4xx(server, remote_db, table_name):
    remote_db.create_table(table_name, make_data(10))
    cases = [
        ("restore", {"version": 42}, 404),
        ("restore", {}, 400),
        ("tags/create", {"tag": "t", "version": 42}, 404),
        ("tags/create", {"tag": "bad/tag", "version": 1}, 400),
        ("tags/create", {"version": 1}, 400),
        ("tags/version", {"tag": "nope"}, 404),
        ("tags/delete", {"tag": "nope"}, 404),
    ]
    for route, body, expected in cases:
        status, _, text = http(server, f"/v1/table/{table_name}/{route}/", body)
        assert status == expected, (route, body, status, text)
    http(server, f"/v1/table/{table_name}/tags/create/", {"tag": "t", "version": 1})
    status, _, text = http(server, f"/v1/table/{table_name}/tags/create/", {"tag": "t", "version": 1})
    assert status == 400 and b"already exists" in text, "an existing tag is a 400 (a 409 would be retried)"


def test_stats_match_oss(remote_db, oss_db, table_name):
    remote, oss = both(remote_db, oss_db, table_name, make_data(300))
    for t in (remote, oss):
        t.add(make_data(100, seed=3, id_offset=300))
        t.delete("id < 10")
        t.create_index("id", config=BTree())
    r, o = remote.stats(), oss.stats()
    assert r["num_rows"] == o["num_rows"] == 390
    assert r["num_indices"] == o["num_indices"] == 1
    assert r["fragment_stats"] == o["fragment_stats"]
    assert r["total_bytes"] > 0


# --------------------------------------------------------------------------- indexes


VECTOR_INDEXES = {
    "IvfFlat": IvfFlat(num_partitions=4),
    "IvfPq": IvfPq(num_partitions=4, num_sub_vectors=8),
    "IvfSq": IvfSq(num_partitions=4),
    "IvfHnswSq": HnswSq(num_partitions=2),
}


def recall(result: pa.Table, truth: list[int]) -> float:
    return len(set(result["id"].to_pylist()) & set(truth)) / len(truth)


@pytest.mark.parametrize("kind", sorted(VECTOR_INDEXES))
def test_vector_index_recall_at_least_oss(server, remote_db, table_name, kind):
    """The same table and index, read by LanceDB OSS in-process and through LanceFleet
    with the same search parameters: LanceFleet's recall@10 is at least OSS's."""
    data = make_data(3000)
    remote = remote_db.create_table(table_name, data.slice(0, 1000))
    remote.add(data.slice(1000, 1000))
    remote.add(data.slice(2000, 1000))
    remote.create_index("vector", config=VECTOR_INDEXES[kind], wait_timeout=timedelta(seconds=120))
    index = {i.name: i for i in remote.list_indices()}["vector_idx"]
    assert index.index_type == kind
    stats = remote.index_stats("vector_idx")
    assert (stats.num_indexed_rows, stats.num_unindexed_rows) == (3000, 0)

    oss = lancedb.connect(str(server.data_dir)).open_table(table_name)
    assert stats.distance_type == oss.index_stats("vector_idx").distance_type == "l2"
    vectors = data["vector"].combine_chunks().flatten().to_numpy().reshape(-1, DIM)
    for q in query_vectors(5, seed=21):
        distances = ((vectors - np.asarray(q, np.float32)) ** 2).sum(axis=1)
        truth = data["id"].to_numpy()[np.argsort(distances)[:10]].tolist()
        params = dict(nprobes=2, ef=40) if kind == "IvfHnswSq" else dict(nprobes=2)
        r = remote.search(q).nprobes(params["nprobes"])
        o = oss.search(q).nprobes(params["nprobes"])
        if "ef" in params:
            r, o = r.ef(params["ef"]), o.ef(params["ef"])
        assert recall(r.limit(10).to_arrow(), truth) >= recall(o.limit(10).to_arrow(), truth)
        # refine_factor and an exact search.
        refined = remote.search(q).nprobes(2).refine_factor(5).limit(10).to_arrow()
        assert recall(refined, truth) >= recall(oss.search(q).nprobes(2).refine_factor(5).limit(10).to_arrow(), truth)
        exact = remote.search(q).bypass_vector_index().limit(10).to_arrow()
        assert exact["id"].to_pylist() == truth
        assert remote.search(q).fast_search().limit(10).to_arrow().num_rows == 10


def test_hnsw_pq_through_the_raw_route(server, remote_db, table_name):
    """The Python client refuses IVF_HNSW_PQ itself; the server builds it when asked."""
    remote_db.create_table(table_name, make_data(1000))
    body = {"column": "vector", "index_type": "IVF_HNSW_PQ", "metric_type": "l2", "num_partitions": 2,
            "num_sub_vectors": 8, "m": 16, "ef_construction": 100}
    status, _, text = http(server, f"/v1/table/{table_name}/create_index/", body)
    assert status == 200, text
    table = connect_remote(server.url).open_table(table_name)
    _wait_for_index(table, "vector_idx")
    assert {i.name: i.index_type for i in table.list_indices()}["vector_idx"] == "IvfHnswPq"
    assert table.search(query_vectors(1)[0]).limit(5).to_arrow().num_rows == 5


def _wait_for_index(table, name):
    table.wait_for_index([name], timeout=timedelta(seconds=120))


def test_binary_vectors_with_hamming(server, remote_db, table_name):
    data = make_binary_data(1000)
    remote = remote_db.create_table(table_name, data)
    remote.create_index("vector", config=IvfFlat(num_partitions=2, distance_type="hamming"), wait_timeout=timedelta(seconds=120))
    q = np.random.default_rng(3).integers(0, 256, BIN_BYTES).astype(np.uint8)
    exact = remote.search(q).distance_type("hamming").bypass_vector_index().limit(10).to_arrow()
    rows = data["vector"].combine_chunks().flatten().to_numpy().reshape(-1, BIN_BYTES)
    truth = sorted(hamming(row, q) for row in rows)[:10]
    assert exact["_distance"].to_pylist() == truth
    indexed = remote.search(q).distance_type("hamming").nprobes(2).limit(10).to_arrow()
    assert sorted(indexed["_distance"].to_pylist()) == truth


def test_scalar_indexes_list_stats_and_drop(remote_db, oss_db, table_name):
    docs = make_docs(300)
    remote, oss = both(remote_db, oss_db, table_name, docs)
    configs = [("id", BTree(), "BTree"), ("category", Bitmap(), "Bitmap"), ("tags", LabelList(), "LabelList")]
    for t in (remote, oss):
        for column, config, _ in configs:
            t.create_index(column, config=config, wait_timeout=timedelta(seconds=60))
    listed = {i.name: (i.index_type, i.columns) for i in remote.list_indices()}
    assert listed == {f"{c}_idx": (kind, [c]) for c, _, kind in configs}
    assert listed == {i.name: (i.index_type, i.columns) for i in oss.list_indices()}
    for name in listed:
        assert remote.index_stats(name).num_indexed_rows == 300
    for where in ["id = 17", "category = 'b'", "array_has_any(tags, ['gold'])", "array_has_all(tags, ['red', 'blue'])"]:
        assert_tables_equal(remote.search().where(where).to_arrow().sort_by("id"), oss.search().where(where).to_arrow().sort_by("id"))

    remote.drop_index("category_idx")
    oss.drop_index("category_idx")
    assert sorted(i.name for i in remote.list_indices()) == ["id_idx", "tags_idx"]
    assert remote.index_stats("category_idx") is None
    version = remote.version
    with pytest.raises(Exception):
        remote.drop_index("category_idx")
    assert remote.version == version
    assert remote.count_rows("category = 'b'") == oss.count_rows("category = 'b'")


def test_index_request_errors_are_400(server, remote_db, table_name):
    remote_db.create_table(table_name, make_docs(50))
    cases = [
        {"column": "text", "index_type": "NOT_AN_INDEX"},
        {"column": "missing", "index_type": "BTREE"},
        {"column": "id", "index_type": "FTS"},
        {"column": "text", "index_type": "IVF_PQ"},
        {"column": "vector", "index_type": "IVF_PQ", "num_sub_vectors": 7},
        {"column": "text", "index_type": "FTS", "base_tokenizer": 5},
    ]
    for body in cases:
        status, _, text = http(server, f"/v1/table/{table_name}/create_index/", body)
        assert status == 400, (body, status, text)
    status, _, _ = http(server, f"/v1/table/{table_name}/index/nope/drop/")
    assert status == 404
    assert connect_remote(server.url).open_table(table_name).version == 1


# --------------------------------------------------------------------------- full-text and hybrid search


@pytest.fixture
def docs_pair(remote_db, oss_db, table_name):
    """400 documents in 4 fragments (so the search spreads over executors), FTS-indexed."""
    docs = make_docs(400)
    remote, oss = both(remote_db, oss_db, table_name, docs.slice(0, 100))
    for t in (remote, oss):
        for start in (100, 200, 300):
            t.add(docs.slice(start, 100))
        t.create_index("text", config=FTS(with_position=True), wait_timeout=timedelta(seconds=60))
        t.create_index("title", config=FTS(), wait_timeout=timedelta(seconds=60))
    return remote, oss


def assert_fts_equal(remote: pa.Table, oss: pa.Table):
    """Same rows with the same scores; rows of equal score may come in any order."""
    assert remote.num_rows == oss.num_rows, (remote.num_rows, oss.num_rows)
    r = remote.sort_by([("_score", "descending"), ("id", "ascending")])
    o = oss.sort_by([("_score", "descending"), ("id", "ascending")])
    np.testing.assert_allclose(r["_score"].to_numpy(), o["_score"].to_numpy(), rtol=1e-5)
    # Rows above the lowest returned score are the same rows (ties at the cut may differ).
    cut = o["_score"].to_numpy().min() if o.num_rows else 0
    above = lambda t: sorted(t.filter(pc.greater(t["_score"], cut))["id"].to_pylist())  # noqa: E731
    assert above(r) == above(o)


FTS_QUERIES = {
    "match": lambda t: t.search("river mountain", query_type="fts"),
    "match_column": lambda t: t.search(MatchQuery("castle", "text")),
    "match_and": lambda t: t.search(MatchQuery("river forest", "text", operator="AND")),
    "phrase": lambda t: t.search(PhraseQuery("vector search", "text")),
    "fuzzy": lambda t: t.search(MatchQuery("rivr", "text", fuzziness=1)),
    "fuzzy_prefix": lambda t: t.search(MatchQuery("castel", "text", fuzziness=2, prefix_length=3)),
    "boost": lambda t: t.search(BoostQuery(MatchQuery("ocean", "text"), MatchQuery("garden", "text"), negative_boost=0.3)),
    "boolean": lambda t: t.search(
        BooleanQuery(
            [
                (Occur.MUST, MatchQuery("planet", "text")),
                (Occur.SHOULD, MatchQuery("rocket", "text")),
                (Occur.MUST_NOT, MatchQuery("violin", "text")),
            ]
        )
    ),
    "multi_column": lambda t: t.search(MultiMatchQuery("silver bridge", ["text", "title"])),
    "filtered": lambda t: t.search("market window", query_type="fts").where("id >= 100"),
    "postfiltered": lambda t: t.search("market window", query_type="fts").where("category = 'a'", prefilter=False),
    "projected": lambda t: t.search("engine", query_type="fts").select(["id", "title"]),
}


@pytest.mark.parametrize("kind", sorted(FTS_QUERIES))
@pytest.mark.parametrize("limit", [10, 1000])
def test_full_text_search_matches_oss(docs_pair, kind, limit):
    remote, oss = docs_pair
    r = FTS_QUERIES[kind](remote).limit(limit).to_arrow()
    o = FTS_QUERIES[kind](oss).limit(limit).to_arrow()
    assert r.num_rows > 0, "the query matches something"
    assert r.column_names == o.column_names
    assert_fts_equal(r, o)


def test_full_text_search_with_row_ids_offset_and_legacy_form(server, docs_pair):
    remote, oss = docs_pair
    r = remote.search("lance query", query_type="fts").with_row_id(True).limit(20).to_arrow()
    assert "_rowid" in r.column_names
    o = oss.search("lance query", query_type="fts").with_row_id(True).limit(20).to_arrow()
    assert_fts_equal(r.drop_columns(["_rowid"]), o.drop_columns(["_rowid"]))
    paged = remote.search("lance query", query_type="fts").offset(5).limit(5).to_arrow()
    np.testing.assert_allclose(
        paged["_score"].to_numpy(), r.sort_by([("_score", "descending")])["_score"].to_numpy()[5:10], rtol=1e-5
    )
    # The legacy wire form (servers before phalanx 0.3.0): text plus columns.
    body = query_body(k=1000, full_text_query={"columns": ["text"], "query": "lance query"})
    status, _, payload = http(server, f"/v1/table/{remote.name}/query/", body)
    assert status == 200, payload
    legacy = read_arrow_file(payload)
    full = oss.search(MatchQuery("lance query", "text")).limit(1000).to_arrow()
    assert_fts_equal(legacy, full)
    for bad in [{"query": {"nonsense": {}}}, {"columns": ["text"]}, {"query": 5}]:
        status, _, text = http(server, f"/v1/table/{remote.name}/query/", query_body(full_text_query=bad))
        assert status == 400, (bad, status, text)


def test_full_text_search_over_an_unindexed_tail(server, docs_pair):
    """Rows added after the index are searched flat (their fragments together, on one
    executor, so their statistics are the whole tail's) and merged with the indexed hits:
    every score equals OSS's."""
    remote, oss = docs_pair
    tail = make_docs(200, seed=99).set_column(0, "id", pa.array(range(1000, 1200), pa.int64()))
    for t in (remote, oss):
        for start in range(0, 200, 50):
            t.add(tail.slice(start, 50))
    for k in (10, 1000):
        r = remote.search("river mountain", query_type="fts").limit(k).to_arrow()
        o = oss.search("river mountain", query_type="fts").limit(k).to_arrow()
        assert_fts_equal(r, o)
    assert any(i >= 1000 for i in r["id"].to_pylist()), "tail rows are found"
    explained = remote.search("river mountain", query_type="fts").explain_plan()
    assert "searched together" in explained, explained
    fast = remote.search("river mountain", query_type="fts").fast_search().limit(1000).to_arrow()
    assert max(fast["id"].to_pylist()) < 1000, "fast_search skips the unindexed tail"


def test_hybrid_search_contains_the_expected_rows(docs_pair):
    remote, oss = docs_pair
    q = query_vectors(1, seed=8)[0]
    r = remote.search(query_type="hybrid").vector(q).text("river mountain").limit(10).to_arrow()
    o = oss.search(query_type="hybrid").vector(q).text("river mountain").limit(10).to_arrow()
    assert r["id"].to_pylist() == o["id"].to_pylist()
    np.testing.assert_allclose(r["_relevance_score"].to_numpy(), o["_relevance_score"].to_numpy(), rtol=1e-5)
    # Each leg's best row is in the fused answer.
    best_text = remote.search("river mountain", query_type="fts").limit(1).to_arrow()["id"][0].as_py()
    best_vector = remote.search(q).limit(1).to_arrow()["id"][0].as_py()
    assert {best_text, best_vector} <= set(r["id"].to_pylist())


@pytest.mark.parametrize(
    "options",
    [
        dict(language="French", stem=True, remove_stop_words=True),
        dict(stem=False, remove_stop_words=False, ascii_folding=False),
        dict(base_tokenizer="ngram", ngram_min_length=3, ngram_max_length=4, prefix_only=True),
        dict(custom_stop_words=["lance"], remove_stop_words=True),
    ],
)
def test_fts_tokenizer_options_match_oss(remote_db, oss_db, table_name, options):
    data = pa.table({"id": pa.array(range(6), pa.int64()), "text": [
        "Les châteaux et les rivières", "the castles by the rivers", "Café crème", "cafe creme",
        "lance vectors lancing", "lancedb search engine"]})
    remote, oss = both(remote_db, oss_db, table_name, data)
    for t in (remote, oss):
        t.create_index("text", config=FTS(**options), wait_timeout=timedelta(seconds=60))
    for text in ["rivière", "castle", "cafe", "lan", "lance", "the"]:
        r = remote.search(text, query_type="fts").limit(10).to_arrow()
        o = oss.search(text, query_type="fts").limit(10).to_arrow()
        assert_fts_equal(r, o)


# --------------------------------------------------------------------------- explain / analyze


def test_explain_and_analyze_show_the_distributed_plan(server, remote_db, table_name):
    table = remote_db.create_table(table_name, make_docs(200))
    table.add(make_docs(100, seed=2).set_column(0, "id", pa.array(range(200, 300), pa.int64())))
    q = query_vectors(1)[0]
    explained = table.search(q).where("id > 5").limit(5).explain_plan(verbose=True)
    assert "LanceFleet plan" in explained and "_distance ascending" in explained, explained
    assert "lance plan of the fragment query" in explained
    analyzed = table.search(q).limit(5).analyze_plan()
    assert "cache:" in analyzed and "metrics" in analyzed.lower(), analyzed
    if server.executors:
        assert "executor pe-" in explained and "fragments [" in explained, explained
        assert "executor pe-" in analyzed, analyzed
    else:
        assert "in this process" in explained
    table.create_index("text", config=FTS(), wait_timeout=timedelta(seconds=60))
    fts = table.search("river", query_type="fts").limit(5).explain_plan()
    assert "_score descending" in fts, fts


# --------------------------------------------------------------------------- namespaces


def test_namespaces(server, unique_name):
    db = connect_remote(server.url)
    outer, inner = unique_name("outer"), unique_name("inner")
    db.create_namespace([outer], properties={"team": "search"})
    db.create_namespace([outer, inner])
    assert outer in db.list_namespaces().namespaces
    assert db.list_namespaces([outer]).namespaces == [inner]
    assert db.describe_namespace([outer]).properties == {"team": "search"}
    with pytest.raises(Exception, match="already exists"):
        db.create_namespace([outer])
    db.create_namespace([outer], mode="exist_ok")
    with pytest.raises(Exception):
        db.create_namespace([unique_name("nowhere"), "child"])  # parent missing

    table = db.create_table("docs", make_data(100), namespace_path=[outer, inner])
    assert db.list_tables(namespace_path=[outer, inner]).tables == ["docs"]
    assert "docs" not in db.table_names()
    reopened = db.open_table("docs", namespace_path=[outer, inner])
    assert reopened.count_rows() == 100 == table.count_rows("id >= 0")
    assert reopened.search(query_vectors(1)[0]).limit(3).to_arrow().num_rows == 3
    # LanceDB OSS finds it in the same catalog (lance's directory namespace).
    oss = lancedb.connect(str(server.data_dir)).open_table("docs", namespace_path=[outer, inner])
    assert oss.count_rows() == 100

    with pytest.raises(Exception, match="not empty"):
        db.drop_namespace([outer])
    db.drop_table("docs", namespace_path=[outer, inner])
    db.drop_namespace([outer, inner])
    db.drop_namespace([outer])
    assert outer not in db.list_namespaces().namespaces
    with pytest.raises(Exception):
        db.describe_namespace([outer])
    db.drop_namespace([outer], mode="skip")
