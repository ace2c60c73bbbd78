"""API keys with roles and scopes, and the audit log (issue 19, item 2).

Keys are made with `lancefleet key new` (its `[[keys]]` entry on stdout, the key on
stderr) and given to the server in a keys file; the server holds only their digests.
Every check is against a real `lancefleet standalone`, the `lancedb` client, raw HTTP,
`pyarrow.flight` and the ADBC Flight SQL driver.
"""

import json
import subprocess
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from conftest import LanceFleetServer, lancefleet_bin
from lf_helpers import arrow_stream_bytes, connect_remote, make_data, query_body, query_vectors


def new_key(key_id: str, role: str, *scope: str) -> tuple[str, str]:
    """A key made by `lancefleet key new`: (the key, its `[[keys]]` entry)."""
    args = [lancefleet_bin(), "key", "new", "--id", key_id, "--role", role]
    for entry in scope:
        args += ["--scope", entry]
    made = subprocess.run(args, capture_output=True, text=True, check=True, timeout=30)
    key = made.stderr.strip().rsplit(" ", 1)[-1]
    assert key.startswith("lf_") and key not in made.stdout, "the key is never in the entry"
    return key, made.stdout


def call(server, method: str, path: str, key: str | None, body=None, arrow: bool = False) -> int:
    headers = {} if key is None else {"x-api-key": key}
    if arrow:
        headers["Content-Type"] = "application/vnd.apache.arrow.stream"
        data = arrow_stream_bytes(body)
    else:
        data = json.dumps(body if body is not None else {})
    return requests.request(method, f"{server.url}{path}", data=data, headers=headers, timeout=60).status_code


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server with four keys (admin, writer, reader, and a writer scoped to `sales`),
    an audit log, and tables `t`, `sales$orders` and `hr$pay`."""
    root = tmp_path_factory.mktemp("secured")
    keys, entries = {}, []
    for key_id, role, scope in [
        ("admin", "admin", ()),
        ("writer", "read-write", ()),
        ("reader", "read-only", ()),
        ("sales", "read-write", ("sales",)),
    ]:
        keys[key_id], entry = new_key(key_id, role, *scope)
        entries.append(entry)
    keys_file = root / "keys.toml"
    keys_file.write_text("\n".join(entries))
    audit = root / "audit.jsonl"
    env = {"LANCEFLEET_AUTH__KEYS_FILE": str(keys_file), "LANCEFLEET_AUTH__AUDIT_LOG": str(audit)}
    server = LanceFleetServer(root, env=env).start()
    admin = keys["admin"]
    for namespace in ["sales", "hr"]:
        assert call(server, "POST", f"/v1/namespace/{namespace}/create/", admin) == 200
    for table in ["t", "sales$orders", "hr$pay"]:
        assert call(server, "POST", f"/v1/table/{table}/create/", admin, make_data(20), arrow=True) == 200
    server.keys, server.keys_file, server.audit = keys, keys_file, audit
    yield server
    assert server.stop() == 0


# What each REST operation needs, and one request of it against table `t` (`{role}` makes
# the created and dropped tables distinct per caller).
REST_OPERATIONS = [
    ("list", "read", "GET", "/v1/table/", None, False),
    ("describe", "read", "POST", "/v1/table/t/describe/", {}, False),
    ("count_rows", "read", "POST", "/v1/table/t/count_rows/", {}, False),
    ("query", "read", "POST", "/v1/table/t/query/", query_body(query_vectors(1)[0], k=3), False),
    ("versions", "read", "POST", "/v1/table/t/version/list/", {}, False),
    ("insert", "write", "POST", "/v1/table/t/insert/", "rows", True),
    ("delete", "write", "POST", "/v1/table/t/delete/", {"predicate": "id < 0"}, False),
    ("create", "write", "POST", "/v1/table/c_{role}/create/", "rows", True),
    ("drop", "admin", "POST", "/v1/table/d_{role}/drop/", {}, False),
    ("create_namespace", "admin", "POST", "/v1/namespace/n_{role}/create/", {}, False),
    ("cluster", "admin", "GET", "/v1/cluster", None, False),
]
ALLOWED = {"reader": {"read"}, "writer": {"read", "write"}, "admin": {"read", "write", "admin"}}


@pytest.mark.parametrize("role", ["reader", "writer", "admin", "unknown", "none"])
def test_rest_answers_each_role_and_operation_as_its_rights_say(secured, role):
    key = {"unknown": "lf_" + "0" * 64, "none": None}.get(role, secured.keys.get(role))
    for operation, needs, method, path, body, arrow in REST_OPERATIONS:
        path = path.format(role=role)
        if operation == "drop":
            assert call(secured, "POST", f"/v1/table/d_{role}/create/", secured.keys["admin"], make_data(5), arrow=True) == 200
        if body == "rows":
            body = make_data(5, id_offset=10_000)
        status = call(secured, method, path, key, body, arrow)
        if role in ("unknown", "none"):
            expected = 401
        else:
            expected = 200 if needs in ALLOWED[role] else 403
        assert status == expected, f"{role} {operation}: {status}, expected {expected}"


def test_a_scoped_key_reaches_only_its_namespace_and_lists_only_what_it_reaches(secured):
    key = secured.keys["sales"]
    assert call(secured, "POST", "/v1/table/sales$orders/count_rows/", key) == 200
    assert call(secured, "POST", "/v1/table/sales$orders/insert/", key, make_data(3, id_offset=500), arrow=True) == 200
    for path in ["/v1/table/hr$pay/count_rows/", "/v1/table/t/describe/", "/v1/namespace/hr/describe/"]:
        assert call(secured, "POST", path, key) == 403, path
    assert call(secured, "POST", "/v1/table/hr$pay/insert/", key, make_data(3), arrow=True) == 403
    # A read-write key, not an admin: no namespaces of its own, no drops.
    assert call(secured, "POST", "/v1/namespace/sales$sub/create/", key) == 403
    assert call(secured, "POST", "/v1/table/sales$orders/drop/", key) == 403

    headers = {"x-api-key": key}
    assert requests.get(f"{secured.url}/v1/table/", headers=headers).json()["tables"] == []
    assert requests.get(f"{secured.url}/v1/namespace/$/list", headers=headers).json()["namespaces"] == ["sales"]
    listed = requests.get(f"{secured.url}/v1/namespace/sales/table/list", headers=headers).json()["tables"]
    assert listed == ["orders"]
    admin = {"x-api-key": secured.keys["admin"]}
    assert set(requests.get(f"{secured.url}/v1/namespace/$/list", headers=admin).json()["namespaces"]) >= {"sales", "hr"}

    db = connect_remote(secured.url, api_key=key)
    assert db.open_table("orders", namespace_path=["sales"]).count_rows() >= 20
    with pytest.raises(Exception, match="403|not allowed"):
        db.open_table("pay", namespace_path=["hr"]).count_rows()


def test_the_lancedb_client_hears_403_for_a_write_its_key_may_not_make(secured):
    reader = connect_remote(secured.url, api_key=secured.keys["reader"])
    table = reader.open_table("t")
    before = table.count_rows()
    with pytest.raises(Exception, match="403|read-only"):
        table.add(make_data(4, id_offset=20_000))
    assert table.count_rows() == before
    assert table.search(query_vectors(1)[0]).limit(3).to_arrow().num_rows == 3


def test_flight_and_flight_sql_apply_the_same_rights(secured):
    client = flight.connect(secured.flight_url)

    def options(name):
        return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {secured.keys[name]}".encode())])

    ticket = flight.Ticket(json.dumps({"table": "t"}))
    assert client.do_get(ticket, options("reader")).read_all().num_rows >= 20
    rows = make_data(3, id_offset=30_000)

    def put(name, table):
        writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), rows.schema, options(name))
        writer.write_table(rows)
        writer.done_writing()
        reader.read()
        writer.close()

    with pytest.raises(flight.FlightUnauthorizedError):
        put("reader", "t")
    put("writer", "t")
    with pytest.raises(flight.FlightUnauthorizedError):
        put("sales", "t")
    with pytest.raises(flight.FlightUnauthorizedError):
        client.do_get(flight.Ticket(json.dumps({"table": "hr$pay"})), options("sales")).read_all()
    flights = [info.descriptor.path[0].decode() for info in client.list_flights(options=options("sales"))]
    assert flights == ["sales$orders"]

    def connect(name):
        return flight_sql.connect(secured.flight_url, db_kwargs={"username": "u", "password": secured.keys[name]})

    with connect("sales") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM \"sales\".orders")
        assert cursor.fetch_arrow_table()["n"][0].as_py() >= 20
        cursor.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'")
        listed = cursor.fetch_arrow_table()
        assert list(zip(listed["table_schema"].to_pylist(), listed["table_name"].to_pylist())) == [("sales", "orders")]
        with pytest.raises(Exception, match="PERMISSION_DENIED|not allowed|Unauthorized"):
            cursor.execute("SELECT count(*) FROM hr.pay")
            cursor.fetch_arrow_table()
    with connect("reader") as conn, conn.cursor() as cursor:
        with pytest.raises(Exception, match="PERMISSION_DENIED|read-only|Unauthorized"):
            cursor.adbc_ingest("t", pa.table(rows), mode="append")


def test_every_write_and_admin_request_has_an_audit_line_and_no_key_is_logged(secured):
    # One write of each outcome, identified by the version it made.
    writer = connect_remote(secured.url, api_key=secured.keys["writer"]).open_table("t")
    writer.add(make_data(2, id_offset=40_000))
    version = writer.version
    assert call(secured, "POST", "/v1/table/t/insert/", secured.keys["reader"], make_data(2), arrow=True) == 403
    assert call(secured, "POST", "/v1/table/t/insert/", "lf_wrong", make_data(2), arrow=True) == 401
    assert call(secured, "POST", "/v1/table/t/count_rows/", secured.keys["writer"]) == 200

    lines = [json.loads(line) for line in secured.audit.read_text().splitlines()]
    assert all({"time", "request_id", "interface", "operation", "key_id", "role", "target", "version", "outcome"} <= line.keys() for line in lines)
    assert not [line for line in lines if line["operation"] in ("count_rows", "query", "describe")], "reads are not audited"
    inserts = [line for line in lines if line["interface"] == "rest" and line["operation"] == "insert" and line["target"] == "t"]
    assert {"key_id": "writer", "role": "read-write", "version": version, "outcome": "ok", "status": 200}.items() <= inserts[-3].items()
    assert {"key_id": "reader", "version": None, "outcome": "denied", "status": 403}.items() <= inserts[-2].items()
    assert {"key_id": None, "outcome": "denied", "status": 401}.items() <= inserts[-1].items()
    drops = [line for line in lines if line["operation"] == "drop"]
    assert {(line["key_id"], line["outcome"]) for line in drops} >= {("admin", "ok"), ("writer", "denied"), ("reader", "denied")}
    puts = [line for line in lines if line["interface"] == "flight" and line["key_id"] == "writer"]
    assert puts and puts[0]["operation"] == "DoPut" and puts[0]["target"] == "t" and isinstance(puts[0]["version"], int)
    refused = [line for line in lines if line["interface"] == "flight" and line["key_id"] == "reader"]
    assert refused and {"target": "t", "outcome": "denied", "error_code": "PermissionDenied", "version": None}.items() <= refused[0].items()

    log = secured.log_path.read_text(errors="replace") + secured.audit.read_text()
    for key in secured.keys.values():
        assert key not in log, "a key appears in the server log or the audit log"


def test_a_key_added_to_the_keys_file_works_without_a_restart(secured):
    key, entry = new_key("late", "read-only")
    assert call(secured, "POST", "/v1/table/t/count_rows/", key) == 401
    secured.keys_file.write_text(secured.keys_file.read_text() + "\n" + entry)
    deadline = time.monotonic() + 15
    while call(secured, "POST", "/v1/table/t/count_rows/", key) != 200:
        assert time.monotonic() < deadline, "the new key was not picked up"
        time.sleep(0.5)
    assert call(secured, "POST", "/v1/table/t/insert/", key, make_data(2), arrow=True) == 403
    secured.keys["late"] = key


def test_plain_text_keys_are_refused_at_start():
    checked = subprocess.run(
        [lancefleet_bin(), "config", "check", "--role", "standalone"],
        env={"LANCEFLEET_AUTH__API_KEYS": '["secret"]', "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2 and "lancefleet key hash" in checked.stderr, checked.stderr
    assert "secret" not in checked.stderr
