"""The Lance Namespace specification's error model (issue 20, item 1), checked two ways.

- Raw: every class of error answers `{"error": message, "code": n}` (application/json)
  with the spec's code, the HTTP status LanceDB's clients expect, and the code in the
  `x-lancefleet-error-code` header too; axum's own rejections (405, a bad query string)
  as well.
- Differential: pylance's REST namespace client (`lance.namespace.RestNamespace`) runs the
  same failing calls against LanceFleet and against lance's reference server
  (`lance.namespace.RestAdapter` over a `DirectoryNamespace`) and must raise the same error
  class from both: TableIndexAlreadyExists, TableNotFound, NamespaceNotFound,
  NamespaceAlreadyExists, TableAlreadyExists, NamespaceNotEmpty.
"""

import io

import lance.namespace as ln
import lance_namespace as lns
import pyarrow as pa
import pytest
import requests

from conftest import LanceFleetServer
from lf_helpers import connect_remote, make_data


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LanceFleetServer(tmp_path_factory.mktemp("errors-json"), executors=0)
    srv.start()
    yield srv
    assert srv.stop() == 0


def ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def error_of(response: requests.Response) -> tuple[int, int, str]:
    assert response.headers["content-type"] == "application/json", response.text
    assert response.headers["x-lancefleet-error-code"].startswith("ERROR_CODE_")
    body = response.json()
    assert set(body) == {"error", "code"} and body["error"], body
    return response.status_code, body["code"], body["error"]


def test_every_error_class_answers_the_specs_json(server):
    db = connect_remote(server.url)
    table = db.create_table("docs", make_data(20))
    table.create_scalar_index("id")
    post = lambda path, **kw: requests.post(f"{server.url}{path}", timeout=30, **kw)  # noqa: E731

    assert error_of(post("/v1/table/nope/describe/", json={}))[:2] == (404, 4)
    status, code, message = error_of(post("/v1/table/docs/create/", data=ipc(make_data(2)),
                                          headers={"content-type": "application/vnd.apache.arrow.stream"}))
    assert (status, code) == (400, 5) and "already exists" in message
    assert error_of(post("/v1/table/docs/restore/", json={"version": 99}))[:2] == (404, 11)
    assert error_of(post("/v1/table/docs/index/nope_idx/stats/", json={}))[:2] == (404, 6)
    assert error_of(post("/v1/table/docs/tags/version/", json={"tag": "nope"}))[:2] == (404, 8)
    post("/v1/table/docs/tags/create/", json={"tag": "v1", "version": 1}).raise_for_status()
    assert error_of(post("/v1/table/docs/tags/create/", json={"tag": "v1", "version": 1}))[:2] == (400, 9)
    assert error_of(post("/v1/table/docs/count_rows/", json={"predicate": "id >>> 3"}))[:2] == (400, 13)
    # An index name in use: replaced by LanceDB's default; refused when the request says not
    # to replace, LanceDB's `replace: false` or the spec's dialect (the table named in the body).
    assert post("/v1/table/docs/create_index/", json={"column": "id", "index_type": "BTREE"}).status_code == 200
    refused = {"column": "id", "index_type": "BTREE", "replace": False}
    assert error_of(post("/v1/table/docs/create_index/", json=refused))[:2] == (400, 7)
    spec_dialect = {"id": ["docs"], "column": "id", "index_type": "BTREE", "name": "id_idx"}
    assert error_of(post("/v1/table/docs/create_index/?delimiter=%24", json=spec_dialect))[:2] == (400, 7)
    assert [index.name for index in table.list_indices()] == ["id_idx"]
    assert error_of(post("/v1/namespace/nope/describe/", json={}))[:2] == (404, 1)
    post("/v1/namespace/ns1/create/", json={}).raise_for_status()
    assert error_of(post("/v1/namespace/ns1/create/", json={}))[:2][1] == 2
    # Messages say what is wrong, without the server's source paths or schema dumps; a
    # column the table lacks is the spec's column-not-found.
    for route, body, expected in [("query", {"k": 3, "filter": "text LIKE 3"}, 13),
                                  ("update", {"predicate": "id = 1", "updates": [["nope", "1"]]}, 12)]:
        status, code, message = error_of(post(f"/v1/table/docs/{route}/", json=body))
        assert (status, code) == (400, expected) and ".cargo" not in message and "Schema {" not in message, message
    # axum's own answers: a method the route does not take, an unknown route.
    assert error_of(requests.get(f"{server.url}/v1/table/docs/describe/", timeout=30))[:2] == (405, 0)
    assert error_of(post("/v1/no/such/route/", json={}))[1] == 0  # Unsupported
    # The lancedb client still reads its errors (it shows the body after the status).
    with pytest.raises(ValueError, match="already exists"):
        db.create_table("docs", make_data(2))


def failures(namespace: ln.LanceNamespace) -> dict[str, str]:
    """Failing calls, in order, after a namespace `diff` with a table `t` was made; the
    class name of the error each raised."""
    namespace.create_namespace(lns.CreateNamespaceRequest(id=["diff"]))
    namespace.create_table(lns.CreateTableRequest(id=["diff", "t"]), ipc(make_data(5)))
    index = lns.CreateTableIndexRequest(id=["diff", "t"], column="id", index_type="BTREE", name="id_idx")
    namespace.create_table_index(index)
    calls = {
        "create an index under a name in use": lambda: namespace.create_table_index(index),
        "describe a missing table": lambda: namespace.describe_table(lns.DescribeTableRequest(id=["diff", "missing"])),
        "describe a missing namespace": lambda: namespace.describe_namespace(lns.DescribeNamespaceRequest(id=["nope"])),
        "create an existing namespace": lambda: namespace.create_namespace(lns.CreateNamespaceRequest(id=["diff"])),
        "create an existing table": lambda: namespace.create_table(lns.CreateTableRequest(id=["diff", "t"]),
                                                                   ipc(make_data(5))),
        "drop a namespace with a table": lambda: namespace.drop_namespace(lns.DropNamespaceRequest(id=["diff"])),
    }
    raised = {}
    for name, call in calls.items():
        try:
            call()
            raised[name] = "no error"
        except Exception as error:  # noqa: BLE001 - the class is what is compared
            raised[name] = type(error).__name__
    return raised


def test_the_namespace_client_raises_what_the_reference_server_makes_it_raise(server, tmp_path):
    with ln.RestAdapter("dir", {"root": str(tmp_path / "reference")}, host="127.0.0.1", port=0) as reference:
        expected = failures(ln.RestNamespace(uri=f"http://{reference.host}:{reference.port}"))
    got = failures(ln.RestNamespace(uri=server.url))
    assert expected == {
        "create an index under a name in use": "TableIndexAlreadyExistsError",
        "describe a missing table": "TableNotFoundError",
        "describe a missing namespace": "NamespaceNotFoundError",
        "create an existing namespace": "NamespaceAlreadyExistsError",
        "create an existing table": "TableAlreadyExistsError",
        "drop a namespace with a table": "NamespaceNotEmptyError",
    }, expected
    assert got == expected
