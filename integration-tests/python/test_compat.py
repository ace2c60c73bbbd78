"""Wire-level protocol checks with raw HTTP (see ../WIRE_TRACES.md and the
protocol reference): headers, body framing, freshness headers, route variants."""

from __future__ import annotations

import datetime as dt
import json
import re
from datetime import timedelta

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import requests

from lf_helpers import (
    ARROW_FILE,
    ARROW_STREAM,
    DIM,
    SEMVER_RE,
    arrow_stream_bytes,
    assert_tables_equal,
    chunked,
    connect_remote,
    json_body,
    make_data,
    query_body,
    query_vectors,
    raw_request,
    read_all,
    read_arrow_file,
)

pytestmark = pytest.mark.raw

Q = query_vectors(2, seed=21)
JSON = {"Content-Type": "application/json"}
ARROW = {"Content-Type": ARROW_STREAM}


def post(url, path, body=None, headers=None):
    return raw_request(url, "POST", path, body, headers)


@pytest.fixture
def t2(remote_db, table_name):
    """A table at version 2 (create 300 rows + append 100)."""
    t = remote_db.create_table(table_name, make_data(300))
    t.add(make_data(100, seed=1, id_offset=300))
    assert t.version == 2
    return t


def semver_tuple(v: str):
    return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)", v).groups())


# --------------------------------------------------------------------------- basics


def test_health(server):
    r = requests.get(f"{server.url}/health", timeout=10)
    assert r.status_code == 200


def test_phalanx_version_header(server, unique_name):
    name = unique_name()
    st, h, _ = post(server.url, f"/v1/table/{name}/create/?mode=create", arrow_stream_bytes(make_data(5)), ARROW)
    assert 200 <= st < 300
    seen = [("create", h)]
    st, h, _ = post(server.url, f"/v1/table/{name}/describe/")
    assert st == 200
    seen.append(("describe", h))
    r = requests.get(f"{server.url}/v1/table/", timeout=60)
    assert r.status_code == 200
    seen.append(("list", {k.lower(): v for k, v in r.headers.items()}))
    r = requests.get(f"{server.url}/v1/namespace/$/table/list", timeout=60)
    assert r.status_code == 200
    seen.append(("namespace list", {k.lower(): v for k, v in r.headers.items()}))
    for what, hdrs in seen:
        assert "phalanx-version" in hdrs, f"no phalanx-version on {what}"
        assert SEMVER_RE.match(hdrs["phalanx-version"]), f"{what}: {hdrs['phalanx-version']!r} is not semver"


def test_create_response_is_2xx_and_table_usable(server, remote_db, unique_name):
    name = unique_name()
    data = make_data(50)
    st, _, body = post(server.url, f"/v1/table/{name}/create/", arrow_stream_bytes(data), ARROW)  # default mode
    assert 200 <= st < 300, body[:300]
    t = remote_db.open_table(name)
    assert t.version == 1
    assert_tables_equal(read_all(t), data)


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_create_chunked_compressed_arrow(server, remote_db, unique_name, compression):
    """The client streams LZ4-frame IPC with Transfer-Encoding: chunked."""
    name = unique_name(str(compression))
    data = make_data(1500)
    body = arrow_stream_bytes(data, compression=compression)
    r = requests.post(
        f"{server.url}/v1/table/{name}/create/?mode=create",
        data=chunked(body, 1000),  # generator => chunked transfer encoding
        headers={**ARROW, "x-api-key": "test-key"},
        timeout=120,
    )
    assert 200 <= r.status_code < 300, r.text[:300]
    assert_tables_equal(read_all(remote_db.open_table(name)), data)


def test_create_empty_schema_only_stream(server, remote_db, unique_name):
    """The client sends a schema message and no record batch for an empty table."""
    name = unique_name()
    schema = make_data(1).schema
    st, _, body = post(server.url, f"/v1/table/{name}/create/?mode=create", arrow_stream_bytes(schema), ARROW)
    assert 200 <= st < 300, body[:300]
    t = remote_db.open_table(name)
    assert t.count_rows() == 0
    assert t.schema == schema


def test_insert_response_has_version(server, t2):
    st, h, body = post(
        server.url, f"/v1/table/{t2.name}/insert/", arrow_stream_bytes(make_data(5, id_offset=1000)), ARROW
    )
    assert st == 200, body[:300]
    assert json.loads(body)["version"] == 3
    st, h, body = post(
        server.url,
        f"/v1/table/{t2.name}/insert/?mode=overwrite",
        arrow_stream_bytes(make_data(7, id_offset=2000), compression="lz4"),
        ARROW,
    )
    assert st == 200, body[:300]
    assert json.loads(body)["version"] == 4
    assert connect_remote(server.url).open_table(t2.name).count_rows() == 7


def test_delete_response(server, t2):
    st, _, body = post(server.url, f"/v1/table/{t2.name}/delete/", json_body({"predicate": "id < 10"}), JSON)
    assert st == 200, body[:300]
    resp = json.loads(body) if body.strip() else {}
    assert resp.get("version") == 3
    if "num_deleted_rows" in resp:
        assert resp["num_deleted_rows"] == 10


# --------------------------------------------------------------------------- describe


@pytest.mark.parametrize(
    "body,ctype",
    [(None, None), (b"{}", "application/json"), (b'{"version":null}', "application/json")],
    ids=["no_body", "empty_object", "version_null"],
)
def test_describe_body_variants(server, t2, body, ctype):
    st, h, data = post(server.url, f"/v1/table/{t2.name}/describe/", body, {"Content-Type": ctype} if ctype else {})
    assert st == 200, data[:300]
    d = json.loads(data)
    assert d["version"] == 2
    assert [f["name"] for f in d["schema"]["fields"]] == ["id", "vector", "text", "score"]


def test_describe_pinned_version(server, t2):
    st, _, data = post(server.url, f"/v1/table/{t2.name}/describe/", b'{"version":1}', JSON)
    assert st == 200
    assert json.loads(data)["version"] == 1
    st, _, _ = post(server.url, f"/v1/table/{t2.name}/describe/", b'{"version":99}', JSON)
    assert st == 404


def test_describe_lance_json_schema(server, t2):
    st, _, data = post(server.url, f"/v1/table/{t2.name}/describe/", b'{"version":null}', JSON)
    fields = {f["name"]: f for f in json.loads(data)["schema"]["fields"]}
    assert fields["id"]["type"] == {"type": "int64"}
    assert fields["text"]["type"] == {"type": "string"}
    assert fields["score"]["type"] == {"type": "double"}
    vt = fields["vector"]["type"]
    assert vt["type"] == "fixed_size_list"
    assert vt["length"] == DIM
    assert vt["fields"][0]["type"] == {"type": "float"}
    assert all(isinstance(f["nullable"], bool) for f in fields.values())


# --------------------------------------------------------------------------- x-lancedb-version


@pytest.mark.parametrize("route", ["describe/", "query/", "count_rows/"])
def test_x_lancedb_version_header(server, t2, route):
    body = {"describe/": {"version": None}, "query/": query_body(Q[0]), "count_rows/": {"version": None}}[route]
    st, h, data = post(server.url, f"/v1/table/{t2.name}/{route}", json_body(body), JSON)
    assert st == 200, data[:300]
    assert h.get("x-lancedb-version") == "2", h


@pytest.mark.parametrize("route", ["query/", "count_rows/"])
def test_pinned_version_in_body(server, t2, route):
    body = query_body(None, k=100000, version=1) if route == "query/" else {"version": 1}
    st, h, data = post(server.url, f"/v1/table/{t2.name}/{route}", json_body(body), JSON)
    assert st == 200, data[:300]
    n = json.loads(data) if route == "count_rows/" else read_arrow_file(data).num_rows
    assert n == 300
    assert h["x-lancedb-version"] == "1"


# --------------------------------------------------------------------------- freshness headers


@pytest.mark.parametrize("route", ["query/", "count_rows/"])
def test_min_version_in_the_future_is_not_served_stale(server, t2, route):
    body = query_body(Q[0]) if route == "query/" else {"version": None}
    r = requests.post(
        f"{server.url}/v1/table/{t2.name}/{route}",
        data=json_body(body),
        headers={**JSON, "x-lancedb-min-version": str(t2.version + 5)},
        timeout=120,
    )
    # Not yet visible: 503 (retryable), never stale data.
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert str(t2.version + 5) in r.text


@pytest.mark.parametrize(
    "header,value",
    [
        ("x-lancedb-min-version", "2"),
        ("x-lancedb-min-version", "1"),
        ("x-lancedb-min-read-version", "2"),
        ("x-lancedb-min-timestamp", None),
    ],
)
def test_satisfiable_freshness_headers_are_served(server, t2, header, value):
    if value is None:
        value = (dt.datetime.now(dt.timezone.utc) - timedelta(seconds=1)).isoformat()
    r = requests.post(
        f"{server.url}/v1/table/{t2.name}/count_rows/",
        data=json_body({"version": None}),
        headers={**JSON, header: value},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:300]
    assert r.json() == 400  # rows in t2 (300 + 100)


@pytest.mark.parametrize("value,status", [("60000", 200), ("soon", 400), ("-1", 400)])
def test_request_timeout_header(server, t2, value, status):
    r = requests.post(
        f"{server.url}/v1/table/{t2.name}/query/",
        data=json_body(query_body(Q[0], k=3)),
        headers={**JSON, "x-request-timeout-ms": value},
        timeout=120,
    )
    assert r.status_code == status, r.text[:300]
    if status == 200:
        assert read_arrow_file(r.content).num_rows == 3


def test_read_consistency_interval_client(server, table_name):
    """read_consistency_interval makes the client send x-lancedb-min-timestamp."""
    a = connect_remote(server.url, read_consistency_interval=timedelta(seconds=0))
    b = connect_remote(server.url, read_consistency_interval=timedelta(seconds=0))
    ta = a.create_table(table_name, make_data(10))
    tb = b.open_table(table_name)
    assert tb.count_rows() == 10
    ta.add(make_data(5, seed=1, id_offset=10))
    assert tb.count_rows() == 15  # strong consistency: sees the other connection's write
    assert tb.version == ta.version == 2


def test_other_handle_sees_new_version_after_checkout_latest(server, table_name):
    a = connect_remote(server.url)
    ta = a.create_table(table_name, make_data(10))
    tb = connect_remote(server.url).open_table(table_name)
    assert tb.count_rows() == 10
    ta.add(make_data(5, seed=1, id_offset=10))
    tb.checkout_latest()
    assert tb.count_rows() == 15


# --------------------------------------------------------------------------- count_rows / query framing


def test_count_rows_is_bare_integer(server, t2):
    for body, expect in [({"version": None}, 400), ({"predicate": "id >= 350", "version": None}, 50)]:
        st, _, data = post(server.url, f"/v1/table/{t2.name}/count_rows/", json_body(body), JSON)
        assert st == 200
        assert re.fullmatch(rb"\s*\d+\s*", data), data[:100]
        assert json.loads(data) == expect


def test_query_response_is_arrow_file(server, t2):
    st, h, data = post(server.url, f"/v1/table/{t2.name}/query/", json_body(query_body(Q[0], k=7)), JSON)
    assert st == 200
    assert h.get("content-type", "").split(";")[0].strip() == ARROW_FILE
    t = ipc.open_file(pa.BufferReader(data)).read_all()
    assert t.num_rows == 7
    assert t.column_names[:4] == ["id", "vector", "text", "score"]
    assert t.schema.field("_distance").type == pa.float32()


def test_plain_scan_with_isize_max_k(server, t2):
    body = {"filter": "id >= 100", "k": 9223372036854775807, "prefilter": True, "vector": [], "version": None}
    st, _, data = post(server.url, f"/v1/table/{t2.name}/query/", json_body(body), JSON)
    assert st == 200, data[:300]
    t = read_arrow_file(data)
    assert t.num_rows == 300
    assert "_distance" not in t.column_names


def test_query_exact_client_body(server, t2):
    """Byte-for-byte the body the 0.40.0 client sends (keys sorted, nprobes always set)."""
    body = (
        '{"ef":null,"filter":"`id` > 10","k":5,"lower_bound":null,"maximum_nprobes":20,'
        '"minimum_nprobes":20,"nprobes":20,"prefilter":true,"refine_factor":null,'
        '"upper_bound":null,"vector":' + json.dumps(Q[0]) + ',"version":null,"with_row_id":true}'
    )
    st, _, data = post(server.url, f"/v1/table/{t2.name}/query/", body, JSON)
    assert st == 200, data[:300]
    t = read_arrow_file(data)
    assert t.num_rows == 5
    assert "_rowid" in t.column_names
    assert min(t["id"].to_pylist()) > 10


def test_multivector_raw_has_query_index(server, t2):
    st, h, data = post(server.url, f"/v1/table/{t2.name}/describe/")
    pv = h.get("phalanx-version", "0.1.0")
    if semver_tuple(pv) < (0, 2, 0):
        pytest.skip(f"server advertises phalanx-version {pv} < 0.2.0 (client fans out instead)")
    st, _, data = post(server.url, f"/v1/table/{t2.name}/query/", json_body(query_body(Q, k=4)), JSON)
    assert st == 200, data[:300]
    t = read_arrow_file(data)
    assert t.schema.field("query_index").type == pa.int32()
    assert t.num_rows == 8
    assert sorted(set(t["query_index"].to_pylist())) == [0, 1]


# --------------------------------------------------------------------------- route variants


@pytest.mark.parametrize("route", ["describe", "count_rows"])
def test_routes_without_trailing_slash(server, t2, route):
    st, _, data = post(server.url, f"/v1/table/{t2.name}/{route}", b'{"version":null}', JSON)
    assert st == 200, (st, data[:200])


def test_list_routes(server, t2):
    r = requests.get(f"{server.url}/v1/table/", params={"limit": 100000}, timeout=60)
    assert r.status_code == 200
    assert t2.name in r.json()["tables"]
    r = requests.get(f"{server.url}/v1/namespace/$/table/list", params={"limit": 100000}, timeout=60)
    assert r.status_code == 200
    assert t2.name in r.json()["tables"]


def test_list_limit_zero_is_not_an_error(server, t2):
    """The 0.40.0 client does send ?limit=0 for table_names(limit=0)."""
    r = requests.get(f"{server.url}/v1/table/", params={"limit": 0}, timeout=60)
    assert r.status_code == 200
    assert isinstance(r.json()["tables"], list)


def test_list_page_token_is_start_after(server, t2):
    r = requests.get(f"{server.url}/v1/table/", params={"limit": 100000, "page_token": t2.name}, timeout=60)
    assert r.status_code == 200
    names = r.json()["tables"]
    assert t2.name not in names
    assert all(n > t2.name for n in names)
