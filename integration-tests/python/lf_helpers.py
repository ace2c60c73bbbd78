"""Shared helpers for the LanceFleet end-to-end suite: deterministic data,
differential comparison of results, and raw-HTTP utilities."""

from __future__ import annotations

import http.client
import io
import json
import re
import urllib.parse
from typing import Iterable

import lance
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

DIM = 32
N_ROWS = 2000
BIN_BYTES = 8

RTOL = 1e-5
ATOL = 1e-6

SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]



_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict:
    """Prometheus text format -> {(name, frozenset of label pairs): value}."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items() if sample == name and wanted <= pairs)


def write_fragments(uri, vectors: np.ndarray, fragments: int, storage_options: dict | None = None) -> None:
    """Writes `vectors` with lance as a table of `fragments` fragments, one append each:
    id int64 (row i has id i), category int32 (id % 7), vector fixed_size_list<float32>."""
    dim = vectors.shape[1]
    for index, rows in enumerate(np.array_split(np.arange(len(vectors)), fragments)):
        ids = rows.astype(np.int64)
        data = pa.table({
            "id": ids,
            "category": pa.array(ids % 7, pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), dim),
        })
        lance.write_dataset(
            data, uri, mode="create" if index == 0 else "append", storage_options=storage_options
        )


def connect_remote(url: str, **kw):
    import lancedb

    if url.startswith("oss://"):  # LANCEFLEET_SELFTEST_OSS=1: "remote" is a second OSS dir
        return lancedb.connect(url[len("oss://") :], **kw)
    return lancedb.connect("db://mydb", host_override=url, **{"api_key": "test-key", **kw})


# --------------------------------------------------------------------------- data


def vector_schema(dim: int = DIM) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("text", pa.string()),
            pa.field("score", pa.float64()),
        ]
    )


def make_data(n: int = N_ROWS, dim: int = DIM, seed: int = 0, id_offset: int = 0) -> pa.Table:
    """Deterministic table: id int64, vector fixed_size_list<float32>[dim],
    text string (every 97th row null), score float64."""
    rng = np.random.default_rng(seed)
    ids = np.arange(id_offset, id_offset + n, dtype=np.int64)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    words = rng.integers(0, len(WORDS), n)
    text = [None if i % 97 == 0 else f"doc-{i:05d} {WORDS[w]}" for i, w in zip(ids, words)]
    score = rng.random(n)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim),
            "text": pa.array(text, pa.string()),
            "score": pa.array(score, pa.float64()),
        },
        schema=vector_schema(dim),
    )


def binary_schema() -> pa.Schema:
    return pa.schema([pa.field("id", pa.int64()), pa.field("vector", pa.list_(pa.uint8(), BIN_BYTES))])


def make_binary_data(n: int = N_ROWS, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, 256, n * BIN_BYTES).astype(np.uint8)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vals, pa.uint8()), BIN_BYTES),
        },
        schema=binary_schema(),
    )


def query_vectors(count: int, dim: int = DIM, seed: int = 42) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, dim)).astype(np.float32).tolist()


def binary_queries(count: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, BIN_BYTES).astype(np.uint8) for _ in range(count)]


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a.astype(np.uint8), b.astype(np.uint8))).sum())


def wide_schema() -> pa.Schema:
    """A schema exercising many Arrow types for describe/schema round trips."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("b", pa.bool_()),
            pa.field("i32", pa.int32()),
            pa.field("u64", pa.uint64()),
            pa.field("f32", pa.float32()),
            pa.field("f64", pa.float64()),
            pa.field("s", pa.string()),
            pa.field("ls", pa.large_string()),
            pa.field("bin", pa.binary()),
            pa.field("d", pa.date32()),
            pa.field("ts", pa.timestamp("us")),
            pa.field("tstz", pa.timestamp("us", tz="UTC")),
            pa.field("l", pa.list_(pa.int64())),
            pa.field("st", pa.struct([("a", pa.int64()), ("b", pa.string())])),
            pa.field("v", pa.list_(pa.float32(), 16), nullable=False),
        ],
        metadata={"owner": "lancefleet-tests"},
    )


def make_wide_data(n: int = 50, seed: int = 3) -> pa.Table:
    import datetime as dt

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i,
                "b": bool(i % 2),
                "i32": int(rng.integers(-1000, 1000)),
                "u64": int(rng.integers(0, 2**40)),
                "f32": float(np.float32(rng.random())),
                "f64": float(rng.random()),
                "s": None if i % 5 == 0 else f"s{i}",
                "ls": f"large-{i}",
                "bin": bytes([i % 256, 1, 2]),
                "d": dt.date(2024, 1, 1) + dt.timedelta(days=i),
                "ts": dt.datetime(2024, 1, 1, 12, 0, 0) + dt.timedelta(seconds=i),
                "tstz": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i),
                "l": list(range(i % 4)),
                "st": {"a": i, "b": f"b{i}"},
                "v": rng.standard_normal(16).astype(np.float32).tolist(),
            }
        )
    return pa.Table.from_pylist(rows, schema=wide_schema())


# --------------------------------------------------------------------------- comparison


def read_all(tbl, where: str | None = None) -> pa.Table:
    """All rows of a (remote or OSS) table via a plain scan, sorted by id."""
    q = tbl.search()
    if where:
        q = q.where(where)
    return q.to_arrow().sort_by("id")


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t)


def assert_columns_equal(name: str, a: pa.ChunkedArray, b: pa.ChunkedArray, approx: bool) -> None:
    assert a.type == b.type, f"column {name}: type {a.type} != {b.type}"
    assert len(a) == len(b), f"column {name}: length {len(a)} != {len(b)}"
    if approx and _is_float(a.type):
        na = a.to_numpy(zero_copy_only=False).astype(np.float64)
        nb = b.to_numpy(zero_copy_only=False).astype(np.float64)
        np.testing.assert_allclose(na, nb, rtol=RTOL, atol=ATOL, err_msg=f"column {name}")
    else:
        la, lb = a.to_pylist(), b.to_pylist()
        if la != lb:
            bad = next(i for i, (x, y) in enumerate(zip(la, lb)) if x != y)
            raise AssertionError(f"column {name}: first difference at row {bad}: {la[bad]!r} != {lb[bad]!r}")


APPROX_COLUMNS = {"_distance", "_score", "_relevance_score"}


def assert_tables_equal(remote: pa.Table, oss: pa.Table, *, check_order_of_columns: bool = True) -> None:
    """Same column names (in order), types and values. Distance-like columns
    are compared with rtol=1e-5, atol=1e-6; everything else exactly."""
    if check_order_of_columns:
        assert remote.column_names == oss.column_names, f"{remote.column_names} != {oss.column_names}"
    else:
        assert sorted(remote.column_names) == sorted(oss.column_names), (
            f"{remote.column_names} != {oss.column_names}"
        )
    assert remote.num_rows == oss.num_rows, f"num_rows {remote.num_rows} != {oss.num_rows}"
    for name in oss.column_names:
        assert_columns_equal(name, remote[name], oss[name], approx=name in APPROX_COLUMNS)


def assert_search_equal(remote: pa.Table, oss: pa.Table) -> None:
    """Vector-search results: ids in the same order and distances close."""
    assert remote.num_rows == oss.num_rows, f"num_rows {remote.num_rows} != {oss.num_rows}"
    assert "_distance" in remote.column_names, remote.column_names
    np.testing.assert_allclose(
        remote["_distance"].to_numpy().astype(np.float64),
        oss["_distance"].to_numpy().astype(np.float64),
        rtol=RTOL,
        atol=ATOL,
    )
    if "id" in oss.column_names:
        assert remote["id"].to_pylist() == oss["id"].to_pylist()
    assert_tables_equal(remote, oss)


def split_by_query_index(t: pa.Table) -> dict[int, pa.Table]:
    qi = t["query_index"].to_numpy()
    out = {}
    for q in sorted(set(qi.tolist())):
        idx = np.nonzero(qi == q)[0]
        out[q] = t.take(pa.array(idx))
    return out


# --------------------------------------------------------------------------- raw HTTP


def arrow_stream_bytes(table: pa.Table | pa.Schema, compression: str | None = None) -> bytes:
    schema = table if isinstance(table, pa.Schema) else table.schema
    sink = io.BytesIO()
    opts = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, schema, options=opts) as w:
        if isinstance(table, pa.Table):
            for b in table.to_batches():
                w.write_batch(b)
    return sink.getvalue()


def read_arrow_file(body: bytes) -> pa.Table:
    return ipc.open_file(pa.BufferReader(body)).read_all()


def raw_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict | None = None,
    timeout: float = 120,
):
    """Send a request with the path exactly as given (no dot-segment
    normalisation, no re-encoding) using http.client. Returns
    (status, headers(dict, lower-case), body bytes)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"x-api-key": "test-key", "x-lancedb-database": "mydb"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def json_body(obj) -> bytes:
    return json.dumps(obj).encode()


def query_body(vector=None, k=10, **extra) -> dict:
    body = {"vector": [] if vector is None else vector, "k": k, "prefilter": True, "version": None}
    if vector is not None:
        body.update({"lower_bound": None, "upper_bound": None, "ef": None, "refine_factor": None})
    body.update(extra)
    return body


def chunked(data: bytes, size: int = 4096) -> Iterable[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
