"""Error handling (remote only). Every failing operation must leave the table
unchanged (same count_rows and version) and must never be a 5xx.

Observed client behaviour (lancedb 0.40.0, see ../WIRE_TRACES.md):
* 404 on a table route -> ValueError("Table '<name>' was not found")
* 400 on query/count_rows/insert/delete -> lancedb.remote.errors.HttpError with .status_code == 400
* 5xx -> retried, then RetryError with .status_code == 500
* bad table names, extra columns and uncastable types are rejected client-side, so
  the server side of those is exercised with raw HTTP.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pyarrow as pa
import pytest
import requests
from lancedb.remote.errors import HttpError

from lf_helpers import (
    ARROW_STREAM,
    DIM,
    arrow_stream_bytes,
    connect_remote,
    json_body,
    make_data,
    query_body,
    query_vectors,
    raw_request,
)

pytestmark = pytest.mark.raw

Q = query_vectors(1, seed=11)[0]


def state(url: str, name: str) -> tuple[int, int]:
    """(count_rows, version) through a fresh connection (no client caches)."""
    t = connect_remote(url).open_table(name)
    return t.count_rows(), t.version


def assert_http_400(excinfo, *must_mention: str) -> None:
    e = excinfo.value
    status = getattr(e, "status_code", None)
    assert status == 400, f"expected HTTP 400, got {type(e).__name__} status={status}: {e}"
    assert isinstance(e, HttpError), type(e)
    for word in must_mention:
        assert word in str(e), f"{word!r} not in error message: {e}"


@pytest.fixture
def tbl(remote_db, table_name):
    return remote_db.create_table(table_name, make_data(500))


# --------------------------------------------------------------------------- unknown table


def test_open_unknown_table(remote_db, unique_name):
    name = unique_name("missing")
    with pytest.raises(ValueError) as ei:
        remote_db.open_table(name)
    assert name in str(ei.value)
    assert "not found" in str(ei.value).lower()


def test_table_dropped_by_other_connection(remote_db, server, table_name):
    t = remote_db.create_table(table_name, make_data(20))
    connect_remote(server.url).drop_table(table_name)
    for op in (lambda: t.count_rows(), lambda: t.search(Q).limit(1).to_arrow(), lambda: t.delete("id = 1")):
        with pytest.raises(ValueError, match="not found"):
            op()


@pytest.mark.parametrize(
    "route,body,ctype",
    [
        ("describe/", None, None),
        ("describe/", b"{}", "application/json"),
        ("count_rows/", json_body({"version": None}), "application/json"),
        ("query/", json_body(query_body(Q)), "application/json"),
        ("delete/", json_body({"predicate": "id = 1"}), "application/json"),
        ("insert/", arrow_stream_bytes(make_data(3)), ARROW_STREAM),
        ("version/list/", None, None),
    ],
)
def test_unknown_table_routes_return_404(server, unique_name, route, body, ctype):
    name = unique_name("nope")
    headers = {"Content-Type": ctype} if ctype else {}
    status, _, data = raw_request(server.url, "POST", f"/v1/table/{name}/{route}", body, headers)
    assert status == 404, (status, data[:300])
    assert not (server.data_dir / f"{name}.lance").exists()


# --------------------------------------------------------------------------- bad filters


BAD_FILTERS = ["x >>> 1", "nonexistent_col = 1", "id >", "id = 'abc' AND AND", "unknown_fn(id) > 1"]


@pytest.mark.parametrize("flt", BAD_FILTERS)
@pytest.mark.parametrize("prefilter", [True, False])
def test_bad_filter_vector_search(server, tbl, flt, prefilter):
    before = state(server.url, tbl.name)
    with pytest.raises(Exception) as ei:
        tbl.search(Q).where(flt, prefilter=prefilter).limit(5).to_arrow()
    assert_http_400(ei, *(["nonexistent_col"] if "nonexistent" in flt else []))
    assert state(server.url, tbl.name) == before


@pytest.mark.parametrize("flt", BAD_FILTERS)
def test_bad_filter_scan(server, tbl, flt):
    with pytest.raises(Exception) as ei:
        tbl.search().where(flt).to_arrow()
    assert_http_400(ei)


@pytest.mark.parametrize("flt", BAD_FILTERS)
@pytest.mark.parametrize("operation", ["count_rows", "delete"])
def test_bad_filter_count_rows_and_delete(server, tbl, flt, operation):
    before = state(server.url, tbl.name)
    with pytest.raises(Exception) as ei:
        getattr(tbl, operation)(flt)
    assert_http_400(ei)
    assert state(server.url, tbl.name) == before


@pytest.mark.parametrize("route", ["query/", "count_rows/", "delete/"])
def test_bad_filter_raw_status(server, tbl, route):
    body = {
        "query/": query_body(Q, filter="nonexistent_col = 1"),
        "count_rows/": {"predicate": "x >>> 1", "version": None},
        "delete/": {"predicate": "x >>> 1"},
    }[route]
    before = state(server.url, tbl.name)
    status, _, data = raw_request(
        server.url, "POST", f"/v1/table/{tbl.name}/{route}", json_body(body), {"Content-Type": "application/json"}
    )
    assert status == 400, (status, data[:300])
    assert data.strip(), "400 without an error message"
    assert state(server.url, tbl.name) == before


# --------------------------------------------------------------------------- bad vectors / query bodies


@pytest.mark.parametrize("dim", [DIM - 1, DIM + 1, 1])
def test_wrong_vector_length(server, tbl, dim):
    with pytest.raises(Exception) as ei:
        tbl.search(np.ones(dim, dtype=np.float32).tolist()).limit(5).to_arrow()
    assert_http_400(ei)
    status, _, data = raw_request(
        server.url,
        "POST",
        f"/v1/table/{tbl.name}/query/",
        json_body(query_body([0.5] * dim)),
        {"Content-Type": "application/json"},
    )
    assert status == 400, (status, data[:300])


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json_body({"vector": "abc", "k": 5}),
        json_body(query_body(Q, vector_column="no_such_column")),
        json_body(query_body(Q, columns=["no_such_column"])),
        json_body(query_body(Q, distance_type="manhattan")),
        json_body(query_body([[0.1] * DIM, [0.2] * (DIM + 2)])),
    ],
    ids=["not_json", "vector_string", "bad_vector_column", "bad_projection", "bad_metric", "ragged_multi"],
)
def test_malformed_query_bodies(server, tbl, body):
    status, _, data = raw_request(
        server.url, "POST", f"/v1/table/{tbl.name}/query/", body, {"Content-Type": "application/json"}
    )
    assert status == 400, (status, data[:300])


def test_select_unknown_column_via_client(tbl):
    with pytest.raises(Exception) as ei:
        tbl.search(Q).select(["id", "no_such_column"]).limit(3).to_arrow()
    assert_http_400(ei)


# --------------------------------------------------------------------------- inserts with a wrong schema


def test_insert_extra_column_rejected(server, tbl):
    before = state(server.url, tbl.name)
    bad = make_data(5, id_offset=10_000).append_column("extra", pa.array(range(5), pa.int64()))
    with pytest.raises(Exception):
        tbl.add(bad)
    assert state(server.url, tbl.name) == before


def test_insert_uncastable_type_rejected(server, tbl):
    before = state(server.url, tbl.name)
    d = make_data(3, id_offset=10_000)
    bad = d.set_column(0, "id", pa.array(["a", "b", "c"]))
    with pytest.raises(Exception):
        tbl.add(bad)
    assert state(server.url, tbl.name) == before


def _raw_bad_inserts():
    base = make_data(5, id_offset=10_000)
    extra = base.append_column("extra", pa.array(range(5), pa.int64()))
    wrong_type = base.set_column(0, "id", pa.array(["a", "b", "c", "d", "e"]))
    wrong_dim = base.set_column(
        1,
        "vector",
        pa.FixedSizeListArray.from_arrays(pa.array(np.ones(5 * (DIM + 1), dtype=np.float32)), DIM + 1),
    )
    unrelated = pa.table({"foo": pa.array([1.5, 2.5])})
    good = arrow_stream_bytes(base)
    return {
        "extra_column": arrow_stream_bytes(extra),
        "uncastable_type": arrow_stream_bytes(wrong_type),
        "wrong_vector_dim": arrow_stream_bytes(wrong_dim),
        "unrelated_schema": arrow_stream_bytes(unrelated),
        "garbage": b"\x00\x01garbage\xff" * 50,
        "truncated": good[: len(good) // 2],
        "json_as_arrow": b'{"id": 1}',
    }


@pytest.mark.parametrize("case", list(_raw_bad_inserts()))
def test_raw_bad_append_is_400_and_writes_nothing(server, tbl, case):
    """Append with a schema the table cannot take. (mode=overwrite may legitimately
    replace the schema, as OSS does — see test_tables.py::test_add_overwrite_with_new_schema.)"""
    before = state(server.url, tbl.name)
    status, _, data = raw_request(
        server.url, "POST", f"/v1/table/{tbl.name}/insert/", _raw_bad_inserts()[case], {"Content-Type": ARROW_STREAM}
    )
    assert status == 400, (status, data[:300])
    assert data.strip(), "400 without an error message"
    assert state(server.url, tbl.name) == before


@pytest.mark.parametrize("case", ["garbage", "truncated", "json_as_arrow"])
def test_raw_bad_overwrite_body_is_400_and_writes_nothing(server, tbl, case):
    before = state(server.url, tbl.name)
    status, _, data = raw_request(
        server.url,
        "POST",
        f"/v1/table/{tbl.name}/insert/?mode=overwrite",
        _raw_bad_inserts()[case],
        {"Content-Type": ARROW_STREAM},
    )
    assert status == 400, (status, data[:300])
    assert state(server.url, tbl.name) == before


# --------------------------------------------------------------------------- malformed create bodies


@pytest.mark.parametrize(
    "body",
    [
        b"this is not arrow",
        b"\xff\xff\xff\xff\x10\x00\x00\x00garbage-garbage-garbage",
        arrow_stream_bytes(make_data(10))[:40],
        b'{"schema": {}}',
    ],
    ids=["text", "bad_flatbuffer", "truncated", "json"],
)
def test_create_with_malformed_arrow(server, unique_name, body):
    name = unique_name("badcreate")
    status, _, data = raw_request(
        server.url, "POST", f"/v1/table/{name}/create/?mode=create", body, {"Content-Type": ARROW_STREAM}
    )
    assert status == 400, (status, data[:300])
    assert data.strip(), "400 without an error message"
    # nothing was created
    st, _, _ = raw_request(server.url, "POST", f"/v1/table/{name}/describe/")
    assert st == 404
    assert not (server.data_dir / f"{name}.lance").exists()
    r = requests.get(f"{server.url}/v1/table/", params={"limit": 100000}, timeout=60)
    assert r.status_code == 200
    assert name not in r.json()["tables"]


def test_create_with_requests_garbage(server, unique_name):
    """Same as above through `requests` (Content-Length body instead of chunked)."""
    name = unique_name("garbage")
    r = requests.post(
        f"{server.url}/v1/table/{name}/create/",
        data=b"garbage" * 100,
        headers={"Content-Type": ARROW_STREAM, "x-api-key": "test-key"},
        timeout=60,
    )
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.text.strip()
    assert requests.get(f"{server.url}/v1/table/", timeout=60).status_code == 200


# --------------------------------------------------------------------------- invalid table names


def _name_cases(marker: str):
    # (path segment as sent, statuses accepted)
    single = {400}
    routing = {400, 404}
    return [
        ("..", single | {404}),
        (".", single | {404}),
        ("%2E%2E", single),
        ("a%2Fb", single),
        (f"..%2F..%2F{marker}", single),
        (f"%2E%2E%2F%2E%2E%2F{marker}", single),
        (f"a/../../{marker}", routing),
        ("a/b", routing),
        ("", routing),
        ("x" * 300, single),
        ("has%20space", single),
        ("a%5Cb", single),
        ("a%00b", single),
        (f"{marker}%24", single | {404}),
    ]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("idx", range(14))
def test_invalid_table_names_rejected(server, idx):
    marker = f"esc_{uuid.uuid4().hex[:10]}"
    seg, accepted = _name_cases(marker)[idx]
    data_before = sorted(p.name for p in server.data_dir.iterdir())
    root_before = sorted(p.name for p in server.root.iterdir())
    body = arrow_stream_bytes(make_data(3))
    for route, b, ctype in [
        ("create/?mode=create", body, ARROW_STREAM),
        ("create/?mode=overwrite", body, ARROW_STREAM),
        ("insert/", body, ARROW_STREAM),
        ("describe/", None, None),
        ("query/", json_body(query_body(Q)), "application/json"),
        ("drop/", None, None),
    ]:
        headers = {"Content-Type": ctype} if ctype else {}
        status, _, data = raw_request(server.url, "POST", f"/v1/table/{seg}/{route}", b, headers)
        assert status in accepted, f"{seg!r} {route}: {status} {data[:200]!r}"
        if status == 400:
            assert data.strip(), "400 without an error message"
    # the listing still works and no table / directory appeared anywhere
    r = requests.get(f"{server.url}/v1/table/", timeout=60)
    assert r.status_code == 200 and isinstance(r.json()["tables"], list)
    assert sorted(p.name for p in server.data_dir.iterdir()) == data_before
    assert sorted(p.name for p in server.root.iterdir()) == root_before
    base = server.root.parent  # pytest's basetemp (data_dir is base/<root>/data)
    escaped = list(base.rglob(f"*{marker}*")) + list(base.parent.glob(f"*{marker}*"))
    assert not escaped, f"a path escaped the data dir: {escaped}"


def test_client_rejects_invalid_names_without_request(remote_db):
    """Documented client behaviour: names are validated locally (so raw tests are needed)."""
    for bad in ("a/b", "..", "x" * 300):
        with pytest.raises(ValueError):
            remote_db.create_table(bad, make_data(1))


# --------------------------------------------------------------------------- create conflicts


def test_create_conflict_is_400_already_exists_raw(server, tbl):
    before = state(server.url, tbl.name)
    status, _, data = raw_request(
        server.url,
        "POST",
        f"/v1/table/{tbl.name}/create/?mode=create",
        arrow_stream_bytes(make_data(2)),
        {"Content-Type": ARROW_STREAM},
    )
    assert status == 400, (status, data[:300])  # not 409: the client would retry a 409
    assert b"already exists" in data
    assert state(server.url, tbl.name) == before


def test_create_conflict_via_client(server, remote_db, tbl):
    before = state(server.url, tbl.name)
    with pytest.raises(ValueError, match="already exists"):
        remote_db.create_table(tbl.name, make_data(2))
    assert state(server.url, tbl.name) == before


def test_error_body_mentions_the_problem(server, tbl):
    """An error body is plain text (or valid JSON); the client shows it verbatim."""
    status, headers, data = raw_request(
        server.url,
        "POST",
        f"/v1/table/{tbl.name}/count_rows/",
        json_body({"predicate": "nonexistent_col = 1", "version": None}),
        {"Content-Type": "application/json"},
    )
    assert status == 400
    text = data.decode("utf-8")
    if headers.get("content-type", "").startswith("application/json"):
        json.loads(text)
    assert "nonexistent_col" in text
