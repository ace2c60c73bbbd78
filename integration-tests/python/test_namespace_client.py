"""The Lance REST namespace client against LanceFleet and against lance's reference server.

pylance's `lance.namespace.RestNamespace` (the client Spark, Ray, Trino and
`lance.dataset(namespace_client=...)` use) runs one scenario — namespaces, tables, writes,
searches, indexes, versions, tags, schema changes, transactions and failing calls — against
LanceFleet and against `lance.namespace.RestAdapter` over a `DirectoryNamespace` (lance's
own implementation of the spec). Every answer of the reference must come back from
LanceFleet too: the same fields with the same values (LanceFleet may add fields: its
answers are a superset that also serves the `lancedb` clients), the same error classes.
What legitimately differs is listed in `VOLATILE` and `DIFFERENCES`, each with its reason.
"""

import io
import json
import time

import lance
import lance.namespace as ln
import numpy as np
import pyarrow as pa
import pytest
import requests
from lance_namespace_urllib3_client.models import (
    AddColumnsEntry,
    AlterColumnsEntry,
    AlterTableAddColumnsRequest,
    AlterTableAlterColumnsRequest,
    AlterTableDropColumnsRequest,
    CountTableRowsRequest,
    CreateNamespaceRequest,
    CreateTableIndexRequest,
    CreateTableRequest,
    CreateTableTagRequest,
    DeleteFromTableRequest,
    DeclareTableRequest,
    DeleteTableTagRequest,
    DeregisterTableRequest,
    DescribeNamespaceRequest,
    DescribeTableIndexStatsRequest,
    DescribeTableRequest,
    DescribeTransactionRequest,
    DropNamespaceRequest,
    DropTableIndexRequest,
    DropTableRequest,
    ExplainTableQueryPlanRequest,
    GetTableStatsRequest,
    GetTableTagVersionRequest,
    InsertIntoTableRequest,
    ListNamespacesRequest,
    ListTableIndicesRequest,
    ListTablesRequest,
    ListTableTagsRequest,
    ListTableVersionsRequest,
    MergeInsertIntoTableRequest,
    NamespaceExistsRequest,
    QueryTableRequest,
    QueryTableRequestColumns,
    QueryTableRequestFullTextQuery,
    QueryTableRequestVector,
    RegisterTableRequest,
    RenameTableRequest,
    RestoreTableRequest,
    StringFtsQuery,
    TableExistsRequest,
    UpdateTableRequest,
    UpdateTableSchemaMetadataRequest,
    UpdateTableTagRequest,
)

from conftest import BUCKET, LanceFleetServer, s3_env

TABLE = ["ns", "t"]
QUERY_VECTOR = [0.1, 0.2, 0.3, 0.4]

# Values that name a particular server's files, ids or clock: each side's must be present
# (and of the same type); their values are not compared.
VOLATILE = {
    "transaction_id", "index_uuid", "uuid", "location", "table_uri", "timestamp_millis", "manifest_path",
    "manifest_size", "manifestSize", "e_tag", "size_bytes", "created_at", "total_bytes", "index_version",
    "type_url", "index_details",
}

# Optional fields of the spec the reference fills from its storage layer and LanceFleet
# does not report (yet): an index's details as JSON, manifest sizes and etags.
NOT_REPORTED = {"index_details", "manifest_size", "e_tag"}

# Where the two servers count differently, LanceFleet answers what LanceDB OSS answers for
# the same table (test_table_api.py compares them): an index's indexed rows are the rows
# of the fragments it covers, deleted ones included; `num_rows` of the table stats are the
# live rows; fragment length percentiles are LanceDB's.
LANCEDB_COUNTS = {"index stats", "list indices", "table stats"}

# Steps whose answers differ from the reference's on purpose; the value is LanceFleet's
# answer (normalised) where it is fixed, and the reason.
DIFFERENCES = {
    # The reference ignores the version asked for; the spec says it must exist too.
    "a missing version exists": ("!TableVersionNotFoundError", "the reference does not check the version"),
    # The reference answers 500 (lance's "not found" while checking the version out);
    # a missing version is the spec's TableVersionNotFound.
    "restore a missing version": ("!TableVersionNotFoundError", "the reference answers an internal error"),
    # lance's directory namespace does not implement rename; LanceFleet renames a
    # namespaced table by its manifest row (the data stays where it is).
    "rename": ({}, "the reference does not rename"),
    "count rows of the renamed table": ({"count": 60}, "the reference did not rename it"),
    "rename it back": ({}, "the reference does not rename"),
    # The spec answers NamespaceNotFound for a table declared in a missing namespace;
    # lance's manifest checks only that the id is free and declares it anyway.
    "declare in a missing namespace": (
        "!NamespaceNotFoundError",
        "the reference does not check the namespace",
    ),
}


def ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def rows(count: int, start: int = 0) -> pa.Table:
    rng = np.random.default_rng(start)
    ids = list(range(start, start + count))
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(count * 4).astype("float32")), 4)
    return pa.table({"id": pa.array(ids, pa.int64()), "text": [f"doc {i} word{i % 3}" for i in ids],
                     "vector": vectors})


def answer(value):
    """A call's answer as plain data: the model as a dict without the HTTP `context`,
    Arrow bodies as their rows."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {key: answer(item) for key, item in value.items() if key != "context"}
    if isinstance(value, bytes):
        table = pa.ipc.open_file(io.BytesIO(value)).read_all()
        table = table.drop_columns([c for c in ("vector",) if c in table.column_names])
        found = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in table.to_pylist()]
        # Rows of equal distance or score come in any order from either server.
        rank = next((column for column in ("_distance", "_score") if column in table.column_names), None)
        if rank:
            found.sort(key=lambda row: (row[rank] if rank == "_distance" else -row[rank], row.get("id")))
        return {"columns": table.column_names, "rows": found}
    if isinstance(value, list):
        return [answer(item) for item in value]
    return value


def scenario(ns: ln.LanceNamespace, root) -> dict:
    """Every call of the scenario, in order: step name -> answer, or `!ErrorClass`. `root`
    is the server's storage root, where a dataset to register is written."""
    results = {}
    lance.write_dataset(rows(3, 500), str(root / "ext" / "e.lance"))

    def step(name, call):
        assert name not in results, f"step names are unique: {name}"
        try:
            results[name] = answer(call())
        except Exception as error:  # noqa: BLE001 - the class is what is compared
            results[name] = f"!{type(error).__name__}"
        return results[name]

    vector = QueryTableRequestVector(single_vector=QUERY_VECTOR)
    step("create namespace", lambda: ns.create_namespace(CreateNamespaceRequest(id=["ns"])))
    step("namespace exists", lambda: ns.namespace_exists(NamespaceExistsRequest(id=["ns"])))
    step("a missing namespace exists", lambda: ns.namespace_exists(NamespaceExistsRequest(id=["nope"])))
    step("describe namespace", lambda: ns.describe_namespace(DescribeNamespaceRequest(id=["ns"])))
    step("list namespaces", lambda: ns.list_namespaces(ListNamespacesRequest(id=[])))
    step("create table", lambda: ns.create_table(CreateTableRequest(id=TABLE), ipc(rows(50))))
    step("create the table again", lambda: ns.create_table(CreateTableRequest(id=TABLE), ipc(rows(5))))
    step("table exists", lambda: ns.table_exists(TableExistsRequest(id=TABLE)))
    step("a missing table exists", lambda: ns.table_exists(TableExistsRequest(id=["ns", "zz"])))
    step("a missing version exists", lambda: ns.table_exists(TableExistsRequest(id=TABLE, version=99)))
    step("describe table", lambda: ns.describe_table(DescribeTableRequest(id=TABLE)))
    step("list tables", lambda: ns.list_tables(ListTablesRequest(id=["ns"])))
    step("count rows", lambda: ns.count_table_rows(CountTableRowsRequest(id=TABLE)))
    step("count with a predicate", lambda: ns.count_table_rows(CountTableRowsRequest(id=TABLE, predicate="id < 10")))
    step("insert", lambda: ns.insert_into_table(InsertIntoTableRequest(id=TABLE), ipc(rows(10, 50))))
    step("merge insert", lambda: ns.merge_insert_into_table(
        MergeInsertIntoTableRequest(id=TABLE, on=["id"], when_matched_update_all=True,
                                    when_not_matched_insert_all=True), ipc(rows(10, 55))))
    step("update", lambda: ns.update_table(
        UpdateTableRequest(id=TABLE, predicate="id = 1", updates=[["text", "'updated'"]])))
    step("delete", lambda: ns.delete_from_table(DeleteFromTableRequest(id=TABLE, predicate="id = 2")))
    step("vector search", lambda: ns.query_table(QueryTableRequest(
        id=TABLE, vector=vector, k=5, columns=QueryTableRequestColumns(column_names=["id", "text"]))))
    step("vector search with a filter", lambda: ns.query_table(QueryTableRequest(
        id=TABLE, vector=vector, k=5, filter="id > 10", columns=QueryTableRequestColumns(column_names=["id"]))))
    step("scan with a filter", lambda: ns.query_table(QueryTableRequest(
        id=TABLE, k=3, filter="id >= 60", vector=QueryTableRequestVector(single_vector=[]),
        columns=QueryTableRequestColumns(column_names=["id", "text"]))))
    step("a vector of the wrong size", lambda: ns.query_table(QueryTableRequest(
        id=TABLE, vector=QueryTableRequestVector(single_vector=[0.1]), k=5)))
    step("explain", lambda: type(ns.explain_table_query_plan(ExplainTableQueryPlanRequest(
        id=TABLE, query=QueryTableRequest(id=TABLE, vector=vector, k=5)))).__name__)
    step("create index", lambda: ns.create_table_index(
        CreateTableIndexRequest(id=TABLE, column="id", index_type="BTREE", name="id_idx")))
    step("create the index again", lambda: ns.create_table_index(
        CreateTableIndexRequest(id=TABLE, column="id", index_type="BTREE", name="id_idx")))
    step("create scalar index", lambda: ns.create_table_scalar_index(
        CreateTableIndexRequest(id=TABLE, column="text", index_type="FTS", name="text_idx")))
    step("list indices", lambda: ns.list_table_indices(ListTableIndicesRequest(id=TABLE)))
    step("index stats", lambda: ns.describe_table_index_stats(
        DescribeTableIndexStatsRequest(id=TABLE, index_name="id_idx")))
    step("stats of a missing index", lambda: ns.describe_table_index_stats(
        DescribeTableIndexStatsRequest(id=TABLE, index_name="nope")))
    step("full-text search", lambda: ns.query_table(QueryTableRequest(
        id=TABLE, k=5, vector=QueryTableRequestVector(single_vector=[]),
        full_text_query=QueryTableRequestFullTextQuery(string_query=StringFtsQuery(query="word1")),
        columns=QueryTableRequestColumns(column_names=["id"]))))
    step("drop index", lambda: ns.drop_table_index(DropTableIndexRequest(id=TABLE, index_name="id_idx")))
    step("table stats", lambda: ns.get_table_stats(GetTableStatsRequest(id=TABLE)))
    step("list versions", lambda: ns.list_table_versions(ListTableVersionsRequest(id=TABLE)))
    step("describe version", lambda: ns.describe_table_version({"id": TABLE, "version": 1}))
    step("create tag", lambda: ns.create_table_tag(CreateTableTagRequest(id=TABLE, tag="v1", version=1)))
    step("create the tag again", lambda: ns.create_table_tag(CreateTableTagRequest(id=TABLE, tag="v1", version=1)))
    step("list tags", lambda: ns.list_table_tags(ListTableTagsRequest(id=TABLE)))
    step("tag version", lambda: ns.get_table_tag_version(GetTableTagVersionRequest(id=TABLE, tag="v1")))
    step("a missing tag's version", lambda: ns.get_table_tag_version(GetTableTagVersionRequest(id=TABLE, tag="x")))
    step("update tag", lambda: ns.update_table_tag(UpdateTableTagRequest(id=TABLE, tag="v1", version=2)))
    step("delete tag", lambda: ns.delete_table_tag(DeleteTableTagRequest(id=TABLE, tag="v1")))
    step("tag a missing version", lambda: ns.create_table_tag(CreateTableTagRequest(id=TABLE, tag="v9", version=999)))
    step("restore a missing version", lambda: ns.restore_table(RestoreTableRequest(id=TABLE, version=999)))
    restored = step("restore", lambda: ns.restore_table(RestoreTableRequest(id=TABLE, version=2)))
    transaction = TABLE + [restored.get("transaction_id", "none") if isinstance(restored, dict) else "none"]
    step("describe transaction", lambda: ns.describe_transaction(DescribeTransactionRequest(id=transaction)))
    step("describe a missing transaction", lambda: ns.describe_transaction(
        DescribeTransactionRequest(id=TABLE + ["nope"])))
    step("describe a transaction without its table", lambda: ns.describe_transaction(
        DescribeTransactionRequest(id=["nope"])))
    step("count rows after restore", lambda: ns.count_table_rows(CountTableRowsRequest(id=TABLE)))
    step("add columns", lambda: ns.alter_table_add_columns(
        AlterTableAddColumnsRequest(id=TABLE, new_columns=[AddColumnsEntry(name="id2", expression="id * 2")])))
    step("alter columns", lambda: ns.alter_table_alter_columns(AlterTableAlterColumnsRequest(
        id=TABLE, alterations=[AlterColumnsEntry(path="id2", rename="id3", nullable=True)])))
    step("drop columns", lambda: ns.alter_table_drop_columns(AlterTableDropColumnsRequest(id=TABLE, columns=["id3"])))
    step("update schema metadata", lambda: ns.update_table_schema_metadata(
        UpdateTableSchemaMetadataRequest(id=TABLE, metadata={"owner": "search"})))
    step("rename", lambda: ns.rename_table(RenameTableRequest(id=TABLE, new_table_name="t2")))
    step("count rows of the renamed table", lambda: ns.count_table_rows(CountTableRowsRequest(id=["ns", "t2"])))
    step("rename it back", lambda: ns.rename_table(RenameTableRequest(id=["ns", "t2"], new_table_name="t")))
    step("declare", lambda: ns.declare_table(DeclareTableRequest(id=["ns", "d"])))
    step("declare it again", lambda: ns.declare_table(DeclareTableRequest(id=["ns", "d"])))
    step("list tables after declare", lambda: ns.list_tables(ListTablesRequest(id=["ns"])))
    step("declare in a missing namespace", lambda: ns.declare_table(DeclareTableRequest(id=["nope", "d"])))
    step("deregister the declared table", lambda: ns.deregister_table(DeregisterTableRequest(id=["ns", "d"])))
    step("register", lambda: ns.register_table(RegisterTableRequest(id=["ns", "e"], location="ext/e.lance")))
    step("register the name again", lambda: ns.register_table(
        RegisterTableRequest(id=["ns", "e"], location="ext/e.lance")))
    step("count rows of the registered table", lambda: ns.count_table_rows(CountTableRowsRequest(id=["ns", "e"])))
    step("register outside the root", lambda: ns.register_table(
        RegisterTableRequest(id=["ns", "x"], location="../x.lance")))
    step("register an absolute location", lambda: ns.register_table(
        RegisterTableRequest(id=["ns", "x"], location="/tmp/x.lance")))
    step("deregister the registered table", lambda: ns.deregister_table(DeregisterTableRequest(id=["ns", "e"])))
    step("deregister a missing table", lambda: ns.deregister_table(DeregisterTableRequest(id=["ns", "e"])))
    step("list tables after deregister", lambda: ns.list_tables(ListTablesRequest(id=["ns"])))
    step("drop a namespace with a table", lambda: ns.drop_namespace(DropNamespaceRequest(id=["ns"])))
    step("drop table", lambda: ns.drop_table(DropTableRequest(id=TABLE)))
    step("describe the dropped table", lambda: ns.describe_table(DescribeTableRequest(id=TABLE)))
    return results


def same(reference, ours, path="") -> list[str]:
    """Where `ours` fails to carry `reference`'s answer: every field of the reference with
    an equal value (volatile fields: present, same type), recursively."""
    if isinstance(reference, dict):
        if not isinstance(ours, dict):
            return [f"{path}: {ours!r} is not an object like {reference!r}"]
        problems = []
        for key, value in reference.items():
            if value is None or key in NOT_REPORTED:
                continue  # an optional field the reference's model left null, or see NOT_REPORTED
            if key not in ours:
                problems.append(f"{path}.{key}: missing (reference: {value!r})")
            elif key in VOLATILE:
                if type(ours[key]) is not type(value):
                    problems.append(f"{path}.{key}: {ours[key]!r} is not a {type(value).__name__}")
            else:
                problems += same(value, ours[key], f"{path}.{key}")
        return problems
    if isinstance(reference, list):
        if not isinstance(ours, list) or len(ours) != len(reference):
            return [f"{path}: {ours!r} != {reference!r}"]
        return [problem for index, (a, b) in enumerate(zip(reference, ours)) for problem in same(a, b, f"{path}[{index}]")]
    return [] if reference == ours else [f"{path}: {ours!r} != {reference!r}"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LanceFleetServer(tmp_path_factory.mktemp("namespace-client"))
    srv.start()
    yield srv
    assert srv.stop() == 0


def test_the_namespace_client_gets_the_reference_servers_answers(server, tmp_path):
    with ln.RestAdapter("dir", {"root": str(tmp_path / "reference")}, host="127.0.0.1", port=0) as reference:
        expected = scenario(ln.RestNamespace(uri=f"http://{reference.host}:{reference.port}"), tmp_path / "reference")
    got = scenario(ln.RestNamespace(uri=server.url), server.data_dir)
    assert list(got) == list(expected)
    problems = []
    for name, reference in expected.items():
        if name in LANCEDB_COUNTS:
            continue  # checked below
        if name in DIFFERENCES:
            wanted, _reason = DIFFERENCES[name]
            problems += [f"{name}: {p}" for p in same(wanted, got[name])]
        else:
            problems += [f"{name}: {p}" for p in same(reference, got[name])]
    assert not problems, "\n".join(problems) + "\n\nLanceFleet:\n" + json.dumps(got, indent=1, default=str)
    # LanceDB's counts: the 64 live rows, over fragments holding 71 (7 deleted or
    # rewritten by the merge, update and delete); both indexes cover every fragment.
    assert got["table stats"]["num_rows"] == 64 and got["table stats"]["num_indices"] == 1
    assert [index["num_indexed_rows"] for index in got["list indices"]["indexes"]] == [71, 71]
    assert got["index stats"] == {**expected["index stats"], "num_indexed_rows": 71}
    # Spot checks that the comparison compared something.
    assert got["count rows"] == {"count": 50} and got["update"]["updated_rows"] == 1
    assert got["describe transaction"]["status"] == "SUCCEEDED"
    assert got["describe transaction"]["properties"]["operation"] == "Restore"
    assert [row["id"] for row in got["scan with a filter"]["data"]["rows"]] == [60, 61, 62]
    assert got["list tags"]["tags"]["v1"]["version"] == 1
    assert got["list tables after declare"]["tables"] == ["d", "t"]
    assert got["count rows of the registered table"] == {"count": 3}
    assert (server.data_dir / "ext" / "e.lance").is_dir(), "deregistering keeps the data"


def test_lance_reads_a_table_through_the_namespace(server):
    namespace = ln.RestNamespace(uri=server.url)
    namespace.create_table(CreateTableRequest(id=["read_through"]), ipc(rows(30)))
    dataset = lance.dataset(namespace_client=namespace, table_id=["read_through"])
    assert dataset.count_rows() == 30
    assert dataset.to_table(columns=["id"])["id"].to_pylist() == list(range(30))


def test_lance_reads_an_s3_table_with_the_vended_storage_options(moto, tmp_path_factory):
    env = {**s3_env(moto), "LANCEFLEET_STORAGE__VEND_CREDENTIALS": "static"}
    srv = LanceFleetServer(tmp_path_factory.mktemp("vended"), data_dir=f"s3://{BUCKET}/vended", env=env)
    srv.start()
    try:
        namespace = ln.RestNamespace(uri=srv.url)
        namespace.create_table(CreateTableRequest(id=["on_s3"]), ipc(rows(40)))
        described = namespace.describe_table(DescribeTableRequest(id=["on_s3"]))
        assert described.location == f"s3://{BUCKET}/vended/on_s3.lance"
        assert described.storage_options["aws_endpoint"] == moto
        # pylance opens the table in the bucket itself, with nothing but what was vended.
        dataset = lance.dataset(namespace_client=namespace, table_id=["on_s3"])
        assert dataset.count_rows() == 40 and dataset.uri == described.location
    finally:
        assert srv.stop() == 0


def test_lance_reads_an_s3_table_with_short_lived_credentials(moto, tmp_path_factory):
    """`short_lived`: describe vends credentials from STS (moto's AssumeRole) that expire,
    scoped to the table by lance's vendor, with the node's endpoint but never its keys."""
    role = "arn:aws:iam::123456789012:role/lance-reader"
    env = {
        **s3_env(moto),
        "LANCEFLEET_STORAGE__VEND_CREDENTIALS": "short_lived",
        "LANCEFLEET_STORAGE__CREDENTIAL_VENDOR__AWS_ROLE_ARN": role,
        "LANCEFLEET_STORAGE__CREDENTIAL_VENDOR__AWS_REGION": "us-east-1",
        "LANCEFLEET_STORAGE__CREDENTIAL_VENDOR__AWS_DURATION_MILLIS": "900000",
        # The vendor's own STS client: moto's, signed with the node's keys.
        "AWS_ENDPOINT_URL_STS": moto,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    srv = LanceFleetServer(tmp_path_factory.mktemp("short_lived"), data_dir=f"s3://{BUCKET}/short", env=env)
    srv.start()
    try:
        namespace = ln.RestNamespace(uri=srv.url)
        namespace.create_table(CreateTableRequest(id=["on_s3"]), ipc(rows(40)))
        before = time.time() * 1000
        options = namespace.describe_table(DescribeTableRequest(id=["on_s3"])).storage_options
        assert options["aws_endpoint"] == moto and options["allow_http"] == "true", options
        assert options["aws_session_token"], options
        assert "test" not in (options["aws_access_key_id"], options["aws_secret_access_key"]), options
        assert before < int(options["expires_at_millis"]) <= before + 900_000 + 60_000, options
        # pylance opens the table in the bucket itself, with nothing but what was vended.
        dataset = lance.dataset(namespace_client=namespace, table_id=["on_s3"])
        assert dataset.count_rows() == 40
        assert dataset.to_table(columns=["id"])["id"].to_pylist() == list(range(40))
    finally:
        assert srv.stop() == 0


def post(server, path: str, body=None, **params):
    return requests.post(f"{server.url}{path}", json=body if body is not None else {}, params=params, timeout=60)


def test_spec_dialect_routes_and_their_bad_input(server):
    namespace = ln.RestNamespace(uri=server.url)
    namespace.create_table(CreateTableRequest(id=["dialect"]), ipc(rows(20)))
    # Without a vending policy (the default), describe hands out no storage options.
    assert "storage_options" not in post(server, "/v1/table/dialect/describe", delimiter="$").json()
    # The id delimiter: `$` only.
    refused = post(server, "/v1/table/dialect/count_rows", delimiter=".")
    assert refused.status_code == 400 and refused.json()["code"] == 13, refused.text
    assert post(server, "/v1/table/dialect/count_rows", delimiter="$").json() == 20
    # A filter without `prefilter`: after the search in the spec's dialect (one executor
    # over the whole version, as the merge line says), before it in LanceDB's; explain
    # plans what the query runs.
    searched = {"query": {"vector": QUERY_VECTOR, "k": 5, "filter": "id > 10"}}
    spec_plan = post(server, "/v1/table/dialect/explain_plan", searched, delimiter="$").json()
    lancedb_plan = post(server, "/v1/table/dialect/explain_plan/", searched).json()
    assert "as the one executor returned them" in spec_plan, spec_plan
    assert "by _distance ascending" in lancedb_plan, lancedb_plan
    # Tags: LanceDB's flat map without the delimiter, the spec's `{"tags": ...}` with it.
    assert post(server, "/v1/table/dialect/tags/create/", {"tag": "tags", "version": 1}).ok
    assert post(server, "/v1/table/dialect/tags/list/").json()["tags"]["version"] == 1
    assert post(server, "/v1/table/dialect/tags/list", delimiter="$").json()["tags"]["tags"]["version"] == 1
    # create_scalar_index refuses vector index types, before anything is written.
    before = post(server, "/v1/table/dialect/version/list/").json()["versions"]
    vector_index = post(server, "/v1/table/dialect/create_scalar_index", {"column": "vector", "index_type": "IVF_PQ"})
    assert vector_index.status_code == 400 and vector_index.json()["code"] == 13, vector_index.text
    assert post(server, "/v1/table/dialect/version/list/").json()["versions"] == before
    # Updating a column the table lacks: the spec's column-not-found code, nothing written.
    unknown = post(server, "/v1/table/dialect/update", {"updates": [["nope", "1"]]}, delimiter="$")
    assert unknown.status_code == 400 and unknown.json()["code"] == 12, unknown.text
    assert "nope" in unknown.json()["error"], unknown.text
    assert post(server, "/v1/table/dialect/version/list/").json()["versions"] == before
    # Exists of a missing table and namespace: the spec's not-found codes.
    assert post(server, "/v1/table/nope/exists").json()["code"] == 4
    assert post(server, "/v1/namespace/nope/exists").json()["code"] == 1
    # Schema metadata: merged into, a null removes a key, the whole map answered.
    assert post(server, "/v1/table/dialect/schema_metadata/update", {"a": "1", "b": "2"}).json() == {"a": "1", "b": "2"}
    assert post(server, "/v1/table/dialect/schema_metadata/update", {"a": None}).json() == {"b": "2"}
    assert post(server, "/v1/table/dialect/schema_metadata/update", {}).status_code == 400
    assert lance.dataset(str(server.data_dir / "dialect.lance")).schema.metadata == {b"b": b"2"}
    # Transactions: a write's transaction_id is described; altering a committed one is
    # refused whole unless it changes nothing.
    update = post(server, "/v1/table/dialect/update/", {"predicate": "id = 3", "updates": [["text", "'x'"]]}).json()
    assert update["rows_updated"] == update["updated_rows"] == 1
    transaction = f"dialect${update['transaction_id']}"
    described = post(server, f"/v1/transaction/{transaction}/describe").json()
    assert described["status"] == "SUCCEEDED" and described["properties"]["operation"] == "Update"
    assert described["properties"]["version"] == str(update["version"])
    # (Sent raw: pylance's client loses the actions' fields on their way to its Rust core.)
    alter = f"/v1/transaction/{transaction}/alter"
    assert post(server, alter, {"actions": [{"setStatusAction": {"status": "succeeded"}}]}).json() == described
    for actions in ([{"setStatusAction": {"status": "Failed"}}],
                    [{"setStatusAction": {"status": "SUCCEEDED"}}, {"setPropertyAction": {"key": "k", "value": "v"}}]):
        refused = post(server, alter, {"actions": actions})
        assert refused.status_code == 400 and "nothing was altered" in refused.json()["error"], refused.text
    assert post(server, f"/v1/transaction/{transaction}/describe").json() == described
    assert post(server, "/v1/transaction/dialect$nope/describe").json()["code"] == 10


def test_order_by_sorts_scans_exactly(server):
    namespace = ln.RestNamespace(uri=server.url)
    count = 500
    rng = np.random.default_rng(7)
    data = pa.table({
        "id": pa.array(range(count), pa.int64()),
        "group": pa.array(rng.integers(0, 7, count), pa.int64()),
        "score": pa.array(rng.permutation(count).astype("float64")),
        "maybe": pa.array([None if i % 5 == 0 else int(v) for i, v in enumerate(rng.integers(0, 1000, count))],
                          pa.int64()),
    })
    namespace.create_table(CreateTableRequest(id=["sorted"]), ipc(data.slice(0, 200)))
    for start in (200, 350):  # several fragments, so executors each sort a part
        namespace.insert_into_table(InsertIntoTableRequest(id=["sorted"]), ipc(data.slice(start, 150)))

    def query(order_by, **extra):
        body = {"vector": [], "k": count, "order_by": order_by, **extra}
        response = post(server, "/v1/table/sorted/query/", body)
        assert response.ok, response.text
        return pa.ipc.open_file(io.BytesIO(response.content)).read_all()

    # Two keys (group descending, score ascending; unique in total), a projection without
    # them, an offset and a limit: exactly pyarrow's sort of the whole table.
    got = query([{"column_name": "group", "ascending": False}, {"column_name": "score", "ascending": True}],
                columns=["id"], offset=17, k=100)
    expected = data.sort_by([("group", "descending"), ("score", "ascending")]).slice(17, 100)
    assert got.column_names == ["id"]
    assert got["id"].to_pylist() == expected["id"].to_pylist()
    # Nulls first and last, with ties broken in table order (ids ascending here).
    for nulls_first in (True, False):
        got = query([{"column_name": "maybe", "ascending": True, "nulls_first": nulls_first},
                     {"column_name": "id"}], filter="id < 300")
        subset = data.filter(pa.compute.less(data["id"], 300))
        placement = "at_start" if nulls_first else "at_end"
        expected = subset.sort_by([("maybe", "ascending"), ("id", "ascending")], null_placement=placement)
        assert got["id"].to_pylist() == expected["id"].to_pylist()
        assert got.column_names == data.column_names
    # Bad input: an unknown column, and order_by on a vector search.
    unknown = post(server, "/v1/table/sorted/query/", {"vector": [], "order_by": [{"column_name": "nope"}]})
    assert unknown.status_code == 400, unknown.text
    searched = post(server, "/v1/table/sorted/query/", {"vector": [0.1], "order_by": [{"column_name": "id"}]})
    assert searched.status_code == 400 and "order_by" in searched.json()["error"]
