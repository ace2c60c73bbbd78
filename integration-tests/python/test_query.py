"""Vector search and filtered scans, remote (LanceFleet) vs OSS, flat search (no index).

Read-only tests share one pair of tables per module (created once, two fragments:
1500 rows at create + 500 rows appended)."""

from __future__ import annotations

import uuid

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from lf_helpers import (
    assert_search_equal,
    assert_tables_equal,
    binary_queries,
    connect_remote,
    hamming,
    make_binary_data,
    make_data,
    query_vectors,
    split_by_query_index,
)

QUERIES = query_vectors(4, seed=42)
Q = QUERIES[0]


@pytest.fixture(scope="module")
def pair(server, tmp_path_factory):
    """(remote_table, oss_table) with identical contents and write history."""
    name = f"query_{uuid.uuid4().hex[:8]}"
    remote_db = connect_remote(server.url)
    oss_db = lancedb.connect(str(tmp_path_factory.mktemp("oss-query")))
    first, second = make_data(1500, seed=0), make_data(500, seed=1, id_offset=1500)
    r = remote_db.create_table(name, first)
    o = oss_db.create_table(name, first)
    r.add(second)
    o.add(second)
    assert r.count_rows() == o.count_rows() == 2000
    return r, o


@pytest.fixture(scope="module")
def bin_pair(server, tmp_path_factory):
    name = f"query_bin_{uuid.uuid4().hex[:8]}"
    data = make_binary_data()
    r = connect_remote(server.url).create_table(name, data)
    o = lancedb.connect(str(tmp_path_factory.mktemp("oss-bin"))).create_table(name, data)
    return r, o, data


# --------------------------------------------------------------------------- basic vector search


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_vector_search_metrics(pair, metric, k):
    r, o = pair
    for q in QUERIES[:2]:
        got = r.search(q).distance_type(metric).limit(k).to_arrow()
        exp = o.search(q).distance_type(metric).limit(k).to_arrow()
        assert got.num_rows == k
        assert_search_equal(got, exp)


def test_vector_search_default_limit_is_10(pair):
    r, o = pair
    got = r.search(Q).to_arrow()
    assert got.num_rows == 10
    assert_search_equal(got, o.search(Q).to_arrow())


def test_vector_search_result_schema(pair):
    r, o = pair
    got = r.search(Q).limit(3).to_arrow()
    exp = o.search(Q).limit(3).to_arrow()
    assert got.column_names == exp.column_names == ["id", "vector", "text", "score", "_distance"]
    assert got.schema.field("_distance").type == pa.float32()


def test_vector_search_explicit_column(pair):
    r, o = pair
    got = r.search(Q, vector_column_name="vector").limit(5).to_arrow()
    assert_search_equal(got, o.search(Q, vector_column_name="vector").limit(5).to_arrow())


def test_vector_search_numpy_query(pair):
    r, o = pair
    q = np.asarray(Q, dtype=np.float32)
    assert_search_equal(r.search(q).limit(7).to_arrow(), o.search(q).limit(7).to_arrow())


def test_distances_are_correct_l2(pair):
    """Independent of OSS: `_distance` is the squared L2 distance to the stored vector."""
    r, _ = pair
    got = r.search(Q).limit(20).to_arrow()
    vecs = np.asarray(got["vector"].to_pylist(), dtype=np.float32)
    expect = ((vecs - np.asarray(Q, dtype=np.float32)) ** 2).sum(axis=1)
    np.testing.assert_allclose(got["_distance"].to_numpy(), expect, rtol=1e-4, atol=1e-4)
    d = got["_distance"].to_numpy()
    assert np.all(np.diff(d) >= 0), "results not sorted by distance"


# --------------------------------------------------------------------------- hamming


@pytest.mark.parametrize("k", [1, 10, 50])
def test_hamming_binary_vectors(bin_pair, k):
    r, o, data = bin_pair
    stored = np.asarray(data["vector"].to_pylist(), dtype=np.uint8)
    for q in binary_queries(3):
        got = r.search(q).distance_type("hamming").limit(k).to_arrow()
        exp = o.search(q).distance_type("hamming").limit(k).to_arrow()
        assert got.column_names == exp.column_names
        assert got.num_rows == exp.num_rows == k
        gd = got["_distance"].to_numpy()
        np.testing.assert_allclose(gd, exp["_distance"].to_numpy(), rtol=1e-5, atol=1e-6)
        # each returned row really is at the reported distance
        for rid, dist in zip(got["id"].to_pylist(), gd):
            assert hamming(stored[rid], q) == int(dist), f"id {rid}"
        # ids strictly inside the cut-off distance must match OSS exactly (ties may reorder)
        cutoff = gd.max()
        gi = sorted(i for i, d in zip(got["id"].to_pylist(), gd) if d < cutoff)
        ei = sorted(i for i, d in zip(exp["id"].to_pylist(), exp["_distance"].to_numpy()) if d < cutoff)
        assert gi == ei


# --------------------------------------------------------------------------- k / offset


@pytest.mark.parametrize("offset,k", [(0, 5), (5, 10), (95, 10), (1990, 20)])
def test_vector_search_offset(pair, offset, k):
    r, o = pair
    got = r.search(Q).offset(offset).limit(k).to_arrow()
    exp = o.search(Q).offset(offset).limit(k).to_arrow()
    assert_search_equal(got, exp)
    # consistent with the un-offset result
    full = o.search(Q).limit(offset + k).to_arrow()
    assert got["id"].to_pylist() == full["id"].to_pylist()[offset:]


# --------------------------------------------------------------------------- filters


FILTERS = [
    "id > 1000",
    "score < 0.3",
    "text IS NULL",
    "text LIKE 'doc-01%'",
    "id % 7 = 0 AND score > 0.5",
    "id IN (1, 2, 3, 1999, 1500)",
    '"score" >= 0.9',
]


@pytest.mark.parametrize("flt", FILTERS)
def test_search_prefilter(pair, flt):
    r, o = pair
    got = r.search(Q).where(flt, prefilter=True).limit(15).to_arrow()
    exp = o.search(Q).where(flt, prefilter=True).limit(15).to_arrow()
    assert got.num_rows == exp.num_rows > 0
    assert_search_equal(got, exp)


@pytest.mark.parametrize("flt", FILTERS)
def test_search_postfilter(pair, flt):
    r, o = pair
    got = r.search(Q).where(flt, prefilter=False).limit(50).to_arrow()
    exp = o.search(Q).where(flt, prefilter=False).limit(50).to_arrow()
    assert_search_equal(got, exp)


def test_postfilter_differs_from_prefilter(pair):
    """A selective filter: postfilter may return fewer rows than k, prefilter returns k."""
    r, o = pair
    flt = "id IN (1, 2, 3, 1999, 1500)"
    pre = r.search(Q).where(flt, prefilter=True).limit(5).to_arrow()
    post = r.search(Q).where(flt, prefilter=False).limit(5).to_arrow()
    assert pre.num_rows == 5
    assert post.num_rows == o.search(Q).where(flt, prefilter=False).limit(5).to_arrow().num_rows
    assert post.num_rows < 5


# --------------------------------------------------------------------------- projection / row id


@pytest.mark.parametrize("cols", [["id"], ["id", "text"], ["score", "id"], ["vector"]])
def test_search_select(pair, cols):
    r, o = pair
    got = r.search(Q).select(cols).limit(8).to_arrow()
    exp = o.search(Q).select(cols).limit(8).to_arrow()
    assert got.column_names == exp.column_names
    assert_tables_equal(got, exp)


def test_scan_select(pair):
    r, o = pair
    got = r.search().where("id < 100").select(["id", "score"]).to_arrow()
    exp = o.search().where("id < 100").select(["id", "score"]).to_arrow()
    assert got.column_names == exp.column_names == ["id", "score"]
    assert_tables_equal(got.sort_by("id"), exp.sort_by("id"))


def test_with_row_id(pair):
    r, o = pair
    got = r.search(Q).with_row_id(True).limit(30).to_arrow()
    exp = o.search(Q).with_row_id(True).limit(30).to_arrow()
    assert "_rowid" in got.column_names
    assert got.schema.field("_rowid").type == pa.uint64()
    assert got["_rowid"].to_pylist() == exp["_rowid"].to_pylist()
    assert_search_equal(got, exp)


def test_scan_with_row_id(pair):
    r, o = pair
    got = r.search().where("id >= 1490 AND id < 1510").with_row_id(True).to_arrow().sort_by("id")
    exp = o.search().where("id >= 1490 AND id < 1510").with_row_id(True).to_arrow().sort_by("id")
    # rows from both fragments
    assert got["_rowid"].to_pylist() == exp["_rowid"].to_pylist()
    assert len(set(v >> 32 for v in got["_rowid"].to_pylist())) == 2


# --------------------------------------------------------------------------- distance range


def _quantiles(o, metric="l2"):
    d = o.search(Q).distance_type(metric).limit(200).to_arrow()["_distance"].to_numpy()
    return float(d[20]), float(d[120])


@pytest.mark.parametrize("which", ["both", "lower", "upper"])
def test_distance_range(pair, which):
    r, o = pair
    lo, hi = _quantiles(o)
    lower = lo if which in ("both", "lower") else None
    upper = hi if which in ("both", "upper") else None
    got = r.search(Q).distance_range(lower, upper).limit(500).to_arrow()
    exp = o.search(Q).distance_range(lower, upper).limit(500).to_arrow()
    assert exp.num_rows > 0
    assert_search_equal(got, exp)
    d = got["_distance"].to_numpy()
    if lower is not None:
        assert d.min() >= lower - 1e-6
    if upper is not None:
        assert d.max() <= upper + 1e-6


def test_distance_range_cosine(pair):
    r, o = pair
    lo, hi = _quantiles(o, "cosine")
    got = r.search(Q).distance_type("cosine").distance_range(lo, hi).limit(500).to_arrow()
    exp = o.search(Q).distance_type("cosine").distance_range(lo, hi).limit(500).to_arrow()
    assert exp.num_rows > 0
    assert_search_equal(got, exp)


# --------------------------------------------------------------------------- ANN knobs without an index


@pytest.mark.parametrize(
    "tweak",
    [
        lambda q: q.nprobes(4).refine_factor(2),
        lambda q: q.nprobes(1),
        lambda q: q.refine_factor(10),
        lambda q: q.minimum_nprobes(2).maximum_nprobes(8),
        lambda q: q.ef(64),
        lambda q: q.bypass_vector_index(),
    ],
    ids=["nprobes4_refine2", "nprobes1", "refine10", "min_max_nprobes", "ef", "bypass_index"],
)
def test_ann_parameters_accepted_and_flat(pair, tweak):
    r, o = pair
    flat = o.search(Q).limit(10).to_arrow()
    got = tweak(r.search(Q)).limit(10).to_arrow()
    assert_search_equal(got, tweak(o.search(Q)).limit(10).to_arrow())
    assert_search_equal(got, flat)


# --------------------------------------------------------------------------- multiple query vectors


@pytest.mark.parametrize("nq,k", [(2, 5), (4, 10)])
def test_multi_vector_search(pair, nq, k):
    r, o = pair
    qs = QUERIES[:nq]
    got = r.search(qs).limit(k).to_arrow()
    exp = o.search(qs).limit(k).to_arrow()
    assert "query_index" in got.column_names
    assert got.schema.field("query_index").type == pa.int32()
    assert sorted(got.column_names) == sorted(exp.column_names)
    assert got.num_rows == exp.num_rows == nq * k
    g, e = split_by_query_index(got), split_by_query_index(exp)
    assert sorted(g) == sorted(e) == list(range(nq))
    for qi in range(nq):
        assert_search_equal(g[qi].select(exp.column_names), e[qi])
        # and each group equals the single-vector search
        single = o.search(qs[qi]).limit(k).to_arrow()
        assert g[qi]["id"].to_pylist() == single["id"].to_pylist()


def test_multi_vector_column_order_matches_oss(pair):
    r, o = pair
    got = r.search(QUERIES[:2]).limit(3).to_arrow()
    exp = o.search(QUERIES[:2]).limit(3).to_arrow()
    assert got.column_names == exp.column_names


def test_multi_vector_with_filter_and_select(pair):
    r, o = pair
    qs = QUERIES[:3]
    got = r.search(qs).where("score > 0.5").select(["id", "score"]).limit(6).to_arrow()
    exp = o.search(qs).where("score > 0.5").select(["id", "score"]).limit(6).to_arrow()
    g, e = split_by_query_index(got), split_by_query_index(exp)
    assert sorted(g) == sorted(e)
    for qi in e:
        assert_search_equal(g[qi].select(e[qi].column_names), e[qi])
        assert all(s > 0.5 for s in g[qi]["score"].to_pylist())


# --------------------------------------------------------------------------- plain (non-vector) scans


@pytest.mark.parametrize("flt", ["id > 1234", "score < 0.05", "text IS NULL", "text LIKE '%gamma'"])
def test_scan_where_without_limit(pair, flt):
    r, o = pair
    got = r.search().where(flt).to_arrow()
    exp = o.search().where(flt).to_arrow()
    assert got.num_rows == o.count_rows(flt) > 0
    assert "_distance" not in got.column_names
    assert_tables_equal(got.sort_by("id"), exp.sort_by("id"))


def test_scan_without_filter_or_limit_returns_everything(pair):
    r, o = pair
    got = r.search().to_arrow()
    assert got.num_rows == 2000
    assert_tables_equal(got.sort_by("id"), o.search().to_arrow().sort_by("id"))


@pytest.mark.parametrize("flt,k", [("id > 1234", 7), ("score < 0.5", 100), (None, 3)])
def test_scan_where_with_limit(pair, flt, k):
    r, o = pair
    qr, qo = r.search(), o.search()
    if flt:
        qr, qo = qr.where(flt), qo.where(flt)
    got, exp = qr.limit(k).to_arrow(), qo.limit(k).to_arrow()
    assert got.num_rows == k
    # Lance scans are in row order, so the first k matching rows are deterministic
    assert_tables_equal(got, exp)


@pytest.mark.parametrize("offset,k", [(0, 10), (10, 10), (1495, 10), (1995, 10)])
def test_scan_offset(pair, offset, k):
    r, o = pair
    got = r.search().offset(offset).limit(k).to_arrow()
    exp = o.search().offset(offset).limit(k).to_arrow()
    assert_tables_equal(got, exp)


def test_head(pair):
    r, o = pair
    assert_tables_equal(r.head(5), o.head(5))
