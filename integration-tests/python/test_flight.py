"""Arrow Flight and Flight SQL through real clients from PyPI: `adbc-driver-flightsql`
(DBAPI) for SQL, `pyarrow.flight` for the data plane. Every answer is checked against
lance run in-process on the same table (pylance's DataFusion SQL, its scanner), or
against the REST API's answer for searches. Runs in-process and again over 3 plan
executors (scripts/test.sh), where SQL scans are spread over the executors."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
import requests
from lancedb.index import FTS

from conftest import E2E_EXECUTORS, LanceFleetServer
from lf_helpers import DIM, connect_remote, make_data, metric, parse_metrics, query_vectors

def sql_connect(server, **kwargs):
    return flight_sql.connect(server.flight_url, **kwargs)


def sql(conn, statement: str, parameters=None) -> pa.Table:
    cursor = conn.cursor()
    try:
        cursor.execute(statement, parameters)
        return cursor.fetch_arrow_table()
    finally:
        cursor.close()


def lance_sql(server, table: str, statement: str) -> pa.Table:
    """The same statement through DataFusion inside pylance (the table is `dataset`)."""
    dataset = lance.dataset(str(server.data_dir / f"{table}.lance"))
    return pa.Table.from_batches(dataset.sql(statement).build().to_batch_records())


def sorted_rows(table: pa.Table, *keys: str) -> list[dict]:
    rows = table.to_pylist()
    return sorted(rows, key=lambda row: tuple(row[key] for key in keys))


def assert_rows_close(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys()
        for key in want:
            if isinstance(want[key], float):
                assert got[key] == pytest.approx(want[key], rel=1e-9), key
            else:
                assert got[key] == want[key], key


def with_groups(table: pa.Table) -> pa.Table:
    ids = table["id"].to_numpy()
    table = table.append_column("g", pa.array(ids % 7, pa.int64()))
    return table.append_column("label", pa.array([f"L{i % 5}" for i in ids]))


@pytest.fixture
def items(server, unique_name):
    """A 4-fragment table (1200 rows) made through the REST API."""
    db = connect_remote(server.url)
    name = unique_name("items")
    table = db.create_table(name, with_groups(make_data(300, seed=1)))
    for part in range(1, 4):
        table.add(with_groups(make_data(300, seed=part + 1, id_offset=300 * part)))
    return name


def test_select_where_order_limit_match_lance(server, items):
    with sql_connect(server) as conn:
        statements = [
            f'SELECT id, score FROM "{items}" WHERE score > 0.5 AND id % 3 = 0 ORDER BY id',
            f'SELECT id, text FROM "{items}" WHERE text LIKE \'doc-00%\' AND id BETWEEN 10 AND 900 ORDER BY id',
            f'SELECT id FROM "{items}" WHERE text IS NULL ORDER BY id',
            f'SELECT id, round(score * 100) AS pct FROM "{items}" WHERE upper(label) = \'L3\' ORDER BY id',
            f'SELECT id FROM "{items}" WHERE g IN (1, 4) AND NOT (score < 0.2) ORDER BY id DESC LIMIT 17',
            f'SELECT count(*) AS n, min(id) AS lo, max(id) AS hi FROM "{items}"',
            f'SELECT * FROM "{items}" WHERE id < 4 OR id > 1196 ORDER BY id',
        ]
        for statement in statements:
            got = sql(conn, statement)
            want = lance_sql(server, items, statement.replace(f'"{items}"', "dataset"))
            assert got.column_names == want.column_names, statement
            assert_rows_close(got.to_pylist(), want.to_pylist())
        # Constants folded by the optimizer keep the schema the flight announced.
        assert sql(conn, "SELECT abs(-2) AS a, 'x' || 'y' AS b").to_pylist() == [{"a": 2, "b": "xy"}]
        # LIMIT without ORDER BY: that many rows, each a row of the table.
        some = sql(conn, f'SELECT id, score FROM "{items}" LIMIT 5')
        assert some.num_rows == 5
        every = {row["id"]: row["score"] for row in lance_sql(server, items, "SELECT id, score FROM dataset").to_pylist()}
        assert all(every[row["id"]] == row["score"] for row in some.to_pylist())


def test_scans_run_where_the_fragments_are_placed(server, items):
    """EXPLAIN shows the scan: lance's own in-process, one partition per executor in a cluster,
    with the filter sent to the executors and the function filter kept on the query node."""
    statement = f'EXPLAIN SELECT g, count(*) FROM "{items}" WHERE score > 0.5 AND upper(label) = \'L1\' GROUP BY g'
    with sql_connect(server) as conn:
        plan = "\n".join(sql(conn, statement)["plan"].to_pylist())
    if E2E_EXECUTORS:
        scan = next(line for line in plan.splitlines() if "LanceFleetExecutorScan" in line)
        assert "filter=((`score` > 0.5))" in scan, scan
        placed = [int(f) for f in re.findall(r"pe-\d+: \[([\d, ]+)\]", scan) for f in f.split(",")]
        assert sorted(placed) == [0, 1, 2, 3], scan
        assert "upper" in plan.split("LanceFleetExecutorScan")[0], "the function filter stays on the query node"
    else:
        assert "LanceFleetExecutorScan" not in plan and "Lance" in plan, plan


def test_group_by_matches_lance(server, items):
    statement = (
        'SELECT g, count(*) AS n, avg(score) AS mean, sum(id) AS total, max(text) AS last '
        'FROM {t} WHERE id >= 100 GROUP BY g ORDER BY g'
    )
    with sql_connect(server) as conn:
        got = sql(conn, statement.format(t=f'"{items}"'))
    want = lance_sql(server, items, statement.format(t="dataset"))
    assert got.num_rows == 7
    assert_rows_close(got.to_pylist(), want.to_pylist())


def test_join_between_two_lance_tables(server, items, unique_name):
    db = connect_remote(server.url)
    labels = unique_name("labels")
    db.create_table(labels, pa.table({"g": pa.array(range(7), pa.int64()), "color": [f"c{i}" for i in range(7)]}))
    statement = (
        f'SELECT i.id, i.score, l.color FROM "{items}" i JOIN "{labels}" l ON i.g = l.g '
        "WHERE i.score > 0.9 ORDER BY i.id"
    )
    with sql_connect(server) as conn:
        got = sql(conn, statement)
        per_color = sql(
            conn,
            f'SELECT l.color, count(*) AS n FROM "{items}" i JOIN "{labels}" l ON i.g = l.g GROUP BY l.color ORDER BY l.color',
        )
    left = lance.dataset(str(server.data_dir / f"{items}.lance")).to_table(columns=["id", "score", "g"])
    right = lance.dataset(str(server.data_dir / f"{labels}.lance")).to_table()
    joined = left.filter(pc.greater(left["score"], 0.9)).join(right, "g").select(["id", "score", "color"])
    assert got.to_pylist() == joined.sort_by("id").to_pylist()
    counts = left.join(right, "g").group_by("color").aggregate([("id", "count")]).sort_by("color")
    assert per_color["n"].to_pylist() == counts["id_count"].to_pylist()
    assert per_color["color"].to_pylist() == [f"c{i}" for i in range(7)]


def test_prepared_statements_bind_parameters(server, items):
    every = lance_sql(server, items, "SELECT id, score FROM dataset ORDER BY id").to_pylist()
    with sql_connect(server) as conn:
        cursor = conn.cursor()
        statement = f'SELECT id, score FROM "{items}" WHERE id BETWEEN ? AND ? ORDER BY id'
        for low, high in [(10, 20), (500, 503), (1190, 5000)]:
            cursor.execute(statement, (low, high))
            got = cursor.fetch_arrow_table().to_pylist()
            assert got == [row for row in every if low <= row["id"] <= high]
        cursor.execute(f'SELECT count(*) AS n FROM "{items}" WHERE label = $1 AND score > $2', ("L2", 0.5))
        want = sum(1 for row in lance_sql(server, items, "SELECT label, score FROM dataset").to_pylist()
                   if row["label"] == "L2" and row["score"] > 0.5)
        assert cursor.fetch_arrow_table()["n"].to_pylist() == [want]
        cursor.close()


def test_catalog_listing_and_sql_info(server, items, unique_name):
    db = connect_remote(server.url)
    namespace = unique_name("ns")
    db.create_namespace([namespace])
    db.create_table("inside", make_data(10), namespace_path=[namespace])
    with sql_connect(server) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        assert [catalog["catalog_name"] for catalog in objects] == ["lancefleet"]
        schemas = {schema["db_schema_name"]: schema for schema in objects[0]["catalog_db_schemas"]}
        assert {"default", namespace} <= schemas.keys()
        assert items in [table["table_name"] for table in schemas["default"]["db_schema_tables"]]
        assert [table["table_name"] for table in schemas[namespace]["db_schema_tables"]] == ["inside"]
        schema = conn.adbc_get_table_schema(items)
        assert schema.names == ["id", "vector", "text", "score", "g", "label"]
        assert schema.field("vector").type == pa.list_(pa.float32(), DIM)
        assert conn.adbc_get_table_types() == ["TABLE"]
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "LanceFleet"
        assert sql(conn, f'SELECT count(*) AS n FROM "{namespace}".inside')["n"].to_pylist() == [10]
        shown = sql(conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'default'")
        assert items in shown["table_name"].to_pylist()


def test_vector_search_and_fts_from_sql(server, items, unique_name):
    db = connect_remote(server.url)
    table = db.open_table(items)
    query = query_vectors(1)[0]
    rest = table.search(query).limit(8).select(["id"]).to_arrow()
    vector = "[" + ", ".join(repr(value) for value in query) + "]"
    with sql_connect(server) as conn:
        got = sql(conn, f"SELECT id, _distance FROM vector_search('{items}', {vector}, 8) ORDER BY _distance")
        assert got["id"].to_pylist() == rest["id"].to_pylist()
        assert got["_distance"].to_pylist() == pytest.approx(rest["_distance"].to_pylist(), rel=1e-5)
        # Prefiltered, and joined back onto the table.
        filtered = sql(
            conn,
            f"SELECT v.id, t.label FROM vector_search('{items}', {vector}, 5, 'g = 2') v "
            f'JOIN "{items}" t ON v.id = t.id ORDER BY v._distance',
        )
        rest_filtered = table.search(query).where("g = 2", prefilter=True).limit(5).select(["id", "label"]).to_arrow()
        assert filtered.to_pylist() == rest_filtered.select(["id", "label"]).to_pylist()

        docs = unique_name("docs")
        words = ["river stone", "stone bridge", "silver river river", "quiet forest", "river forest bridge"]
        text_table = db.create_table(docs, pa.table({"id": pa.array(range(5), pa.int64()), "body": words}))
        text_table.create_index("body", config=FTS())
        rest_text = text_table.search("river", query_type="fts").limit(10).select(["id"]).to_arrow()
        got_text = sql(conn, f"SELECT id, _score FROM fts('{docs}', 'river', 10) ORDER BY _score DESC, id")
        assert got_text["id"].to_pylist() == rest_text["id"].to_pylist()
        assert got_text["_score"].to_pylist() == pytest.approx(rest_text["_score"].to_pylist(), rel=1e-5)
        structured = json.dumps({"match": {"column": "body", "terms": "bridge"}})
        assert sorted(sql(conn, f"SELECT id FROM fts('{docs}', '{structured}')")["id"].to_pylist()) == [1, 4]


def test_sql_errors_are_flight_errors(server, items):
    with sql_connect(server) as conn:
        cases = [
            ("SELEC 1", adbc_driver_manager.ProgrammingError, "INVALID_ARGUMENT"),
            ('SELECT * FROM "no_such_table"', adbc_driver_manager.ProgrammingError, "NOT_FOUND"),
            (f'SELECT no_such_column FROM "{items}"', adbc_driver_manager.ProgrammingError, "INVALID_ARGUMENT"),
            (f"SELECT * FROM vector_search('{items}', [1.0, 2.0], 3)", adbc_driver_manager.ProgrammingError, "INVALID_ARGUMENT"),
            ("SELECT * FROM vector_search('no_such_table', [1.0], 3)", adbc_driver_manager.ProgrammingError, "NOT_FOUND"),
            (f"SELECT * FROM fts('{items}')", adbc_driver_manager.ProgrammingError, "INVALID_ARGUMENT"),
            (f'DELETE FROM "{items}" WHERE id < 10', adbc_driver_manager.Error, ""),
            (f'CREATE TABLE "{items}_copy" AS SELECT * FROM "{items}"', adbc_driver_manager.Error, ""),
        ]
        for statement, error, code in cases:
            with pytest.raises(error) as raised:
                sql(conn, statement)
            assert code in str(raised.value), (statement, str(raised.value))
        assert sql(conn, f'SELECT count(*) AS n FROM "{items}"')["n"].to_pylist() == [1200]
    assert f"{items}_copy" not in connect_remote(server.url).table_names()
    samples = parse_metrics(requests.get(f"{server.url}/metrics").text)
    assert metric(samples, "lancefleet_flight_requests_total", code="NotFound") >= 2
    assert metric(samples, "lancefleet_flight_requests_total", code="InvalidArgument") >= 4
    assert metric(samples, "lancefleet_flight_requests_total", method="DoGet", code="Ok") >= 1


def test_adbc_bulk_ingest(server, unique_name):
    name = unique_name("ingest")
    data = with_groups(make_data(250, seed=9))
    with sql_connect(server) as conn:
        cursor = conn.cursor()
        assert cursor.adbc_ingest(name, data, mode="create") == 250
        assert cursor.adbc_ingest(name, data, mode="append") == 250
        with pytest.raises(adbc_driver_manager.Error, match="ALREADY_EXISTS|already exists"):
            cursor.adbc_ingest(name, data, mode="create")
        cursor.close()
        assert sql(conn, f'SELECT count(*) AS n FROM "{name}"')["n"].to_pylist() == [500]
    stored = lance.dataset(str(server.data_dir / f"{name}.lance"))
    assert stored.count_rows() == 500 and stored.version == 2
    assert stored.to_table(columns=["id"])["id"].to_pylist() == data["id"].to_pylist() * 2


def big_batches(rows: int, batch: int, dim: int = 8):
    rng = np.random.default_rng(5)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        yield pa.record_batch(
            {
                "id": pa.array(ids),
                "g": pa.array(ids % 10),
                "x": pa.array(rng.random(n)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            }
        )


def do_put(client, path, batches, schema) -> dict:
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.done_writing()
    ack = reader.read()
    writer.close()
    return json.loads(ack.to_pybytes())


def test_do_put_a_million_rows_then_query(server, unique_name):
    name = unique_name("big")
    client = flight.connect(server.flight_url)
    batches = list(big_batches(1_000_000, 50_000))
    schema = batches[0].schema
    assert do_put(client, [name, "create"], batches[:1], schema) == {"version": 1, "rows": 50_000}
    assert do_put(client, [name], batches[1:], schema) == {"version": 2, "rows": 950_000}
    stored = lance.dataset(str(server.data_dir / f"{name}.lance"))
    assert stored.count_rows() == 1_000_000

    info = client.get_flight_info(flight.FlightDescriptor.for_path(name))
    assert info.total_records == 1_000_000 and info.schema.equals(schema)
    assert name in [f.descriptor.path[0].decode() for f in client.list_flights()]

    for query in np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32):
        ticket = {"table": name, "vector": query.tolist(), "k": 10, "columns": ["id", "g"]}
        got = client.do_get(flight.Ticket(json.dumps(ticket))).read_all()
        want = stored.to_table(columns=["id", "g"], nearest={"column": "vector", "q": query, "k": 10})
        assert got["id"].to_pylist() == want["id"].to_pylist()
        assert got["_distance"].to_pylist() == pytest.approx(want["_distance"].to_pylist(), rel=1e-5)
    filtered = {"table": name, "filter": "id < 25 AND g = 3", "columns": ["id", "x"]}
    got = client.do_get(flight.Ticket(json.dumps(filtered))).read_all()
    assert got.sort_by("id").to_pylist() == stored.to_table(columns=["id", "x"], filter="id < 25 AND g = 3").to_pylist()

    statement = "SELECT g, count(*) AS n, avg(x) AS mean FROM {t} GROUP BY g ORDER BY g"
    with sql_connect(server) as conn:
        got = sql(conn, statement.format(t=f'"{name}"'))
    want = lance_sql(server, name, statement.format(t="dataset"))
    assert got["n"].to_pylist() == [100_000] * 10
    assert_rows_close(got.to_pylist(), want.to_pylist())


def test_bad_do_put_and_do_get_write_nothing(server, items):
    client = flight.connect(server.flight_url)
    stored = lance.dataset(str(server.data_dir / f"{items}.lance"))
    version, rows = stored.version, stored.count_rows()
    wrong = pa.record_batch({"id": pa.array([1], pa.int64()), "other": pa.array(["x"])})
    with pytest.raises(pa.ArrowInvalid) as raised:
        do_put(client, [items], [wrong], wrong.schema)
    assert "schema" in str(raised.value).lower()
    short = with_groups(make_data(3, dim=DIM - 1))
    with pytest.raises(pa.ArrowInvalid):
        do_put(client, [items], short.to_batches(), short.schema)
    with pytest.raises(pa.ArrowInvalid, match="mode"):
        do_put(client, [items, "upsert"], [wrong], wrong.schema)
    with pytest.raises(pa.ArrowKeyError, match="not found|does not exist"):
        do_put(client, ["no_such_table"], [wrong], wrong.schema)
    with pytest.raises(pa.ArrowException, match="already exists"):
        do_put(client, [items, "create"], [wrong], wrong.schema)
    with pytest.raises(pa.ArrowInvalid, match="invalid table name"):
        do_put(client, ["../escape"], [wrong], wrong.schema)
    stored = lance.dataset(str(server.data_dir / f"{items}.lance"))
    assert (stored.version, stored.count_rows()) == (version, rows)

    for ticket, match in [
        ({"vector": [1.0]}, "names its table"),
        ({"table": "no_such_table"}, "not found|does not exist"),
        ({"table": items, "vector": [1.0, 2.0]}, "dimension|dim"),
        ({"table": items, "filter": "no_such_column > 1"}, "no_such_column"),
        ({"table": items, "k": "ten"}, "invalid query"),
    ]:
        with pytest.raises(pa.ArrowException, match=match):
            client.do_get(flight.Ticket(json.dumps(ticket))).read_all()
    with pytest.raises(pa.ArrowInvalid, match="not valid JSON"):
        client.do_get(flight.Ticket(b"{not json")).read_all()


def test_client_dying_mid_put_commits_nothing(server, items):
    stored = lance.dataset(str(server.data_dir / f"{items}.lance"))
    version, rows = stored.version, stored.count_rows()
    script = f"""
import os, sys, pyarrow as pa, pyarrow.flight as flight
rows = pa.ipc.open_stream(sys.stdin.buffer).read_all()
writer, _ = flight.connect({server.flight_url!r}).do_put(flight.FlightDescriptor.for_path({items!r}), rows.schema)
for batch in rows.to_batches(max_chunksize=300)[:3]:
    writer.write_batch(batch)
os._exit(3)
"""
    rows_to_send = with_groups(make_data(1200, seed=4))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows_to_send.schema) as stream:
        stream.write_table(rows_to_send)
    dying = subprocess.run([sys.executable, "-c", script], input=sink.getvalue().to_pybytes(), timeout=120)
    assert dying.returncode == 3
    time.sleep(1)  # the server notices the reset stream and drops the write
    stored = lance.dataset(str(server.data_dir / f"{items}.lance"))
    assert (stored.version, stored.count_rows()) == (version, rows)
    with sql_connect(server) as conn:
        assert sql(conn, f'SELECT count(*) AS n FROM "{items}"')["n"].to_pylist() == [rows]


def test_api_keys_guard_rest_and_flight(tmp_path):
    digest = hashlib.sha256(b"secret").hexdigest()
    keys = f'[{{id="ci",sha256="{digest}",role="admin"}}]'
    server = LanceFleetServer(tmp_path, env={"LANCEFLEET_AUTH__KEYS": keys}).start()
    try:
        assert requests.get(f"{server.url}/health").status_code == 200
        assert requests.get(f"{server.url}/v1/table/").status_code == 401
        assert requests.get(f"{server.url}/v1/table/", headers={"x-api-key": "wrong"}).status_code == 401
        connect_remote(server.url, api_key="secret").create_table("t", make_data(20))
        with pytest.raises(Exception, match="401|API key"):
            connect_remote(server.url, api_key="wrong").table_names()

        client = flight.connect(server.flight_url)
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_flights())
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(json.dumps({"table": "t"}))).read_all()
        bearer = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer secret")])
        assert client.do_get(flight.Ticket(json.dumps({"table": "t"})), bearer).read_all().num_rows == 20
        token = client.authenticate_basic_token("anyone", "secret")
        assert client.do_get(flight.Ticket(json.dumps({"table": "t"})), flight.FlightCallOptions(headers=[token])).read_all().num_rows == 20

        with flight_sql.connect(server.flight_url, db_kwargs={"username": "u", "password": "secret"}) as conn:
            assert sql(conn, "SELECT count(*) AS n FROM t")["n"].to_pylist() == [20]
        with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED|Unauthenticated"):
            with flight_sql.connect(server.flight_url, db_kwargs={"username": "u", "password": "wrong"}) as conn:
                sql(conn, "SELECT 1")
    finally:
        assert server.stop() == 0
