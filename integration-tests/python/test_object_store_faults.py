"""Object-store faults (issue 19, item 6): a query node and two plan executors read and
write S3 (moto) through a proxy that injects 503 SlowDown, 500s (before and after the
store served the request), connection resets (before and after), truncated and stalled
bodies and latency spikes into every third request.

- Reads are retried: every answer equals pylance's on the same version, none is partial.
- Writes are acknowledged only when committed: every acknowledged append is in the table
  exactly once; an append that failed is wholly there or wholly absent; LanceDB OSS opens
  every table afterwards and reads the same rows. Every append succeeds under every
  kind: the store client retries 5xx answers, and a load or a commit that failed at the
  store is tried again, a commit only once it is known not to have landed.
- The other writes too — delete, update, merge_insert (upsert), a scalar index build and
  a column added — each succeed once under every kind, and the table LanceDB OSS reads
  afterwards is exactly what they made, row for row.
"""

import lancedb
import numpy as np
import pytest

import lance
from conftest import BUCKET, LanceFleetServer, s3_env, storage_options
from lf_faults import KINDS, READS, Fault, FaultProxy
from lf_helpers import connect_remote, make_data, query_vectors

ROOT = f"s3://{BUCKET}/faults"
APPENDS = 8
BATCH = 10


@pytest.fixture(scope="module")
def proxy(moto):
    proxy = FaultProxy(moto)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def fleet(proxy, tmp_path_factory):
    """A query node and two executors whose every object-store request goes through `proxy`."""
    srv = LanceFleetServer(tmp_path_factory.mktemp("faults"), data_dir=ROOT, executors=2, env=s3_env(proxy.url))
    srv.start()
    yield srv
    proxy.set(None)
    assert srv.stop() == 0, srv.log_tail()


@pytest.fixture
def faults(proxy):
    yield proxy
    proxy.set(None)


def direct(moto: str, name: str):
    """The table as pylance reads it from the store itself."""
    return lance.dataset(f"{ROOT}/{name}.lance", storage_options=storage_options(moto))


@pytest.mark.parametrize("kind", KINDS)
def test_reads_are_retried_and_never_partial_or_wrong(fleet, faults, moto, kind):
    name = f"reads_{kind}"
    db = connect_remote(fleet.url)
    table = db.create_table(name, make_data(300, seed=1))
    for part in range(1, 3):
        table.add(make_data(300, seed=part + 1, id_offset=300 * part))
    stored = direct(moto, name)
    vector = query_vectors(1)[0]
    want_scan = stored.to_table(columns=["id", "text"], filter="id % 7 = 0").to_pylist()
    want_near = stored.to_table(columns=["id"], nearest={"column": "vector", "q": vector, "k": 10, "use_index": False})

    # Every third read of a table no executor has cached yet fails in its own way.
    faults.set(Fault(kind, methods=READS))
    for _ in range(3):
        assert table.count_rows() == 900
        got = table.search().where("id % 7 = 0").select(["id", "text"]).limit(1000).to_arrow()
        assert got.to_pylist() == want_scan
        near = table.search(vector).bypass_vector_index().select(["id"]).limit(10).to_arrow()
        assert near["id"].to_pylist() == want_near["id"].to_pylist()
    assert faults.injected[kind] > 0, f"no {kind} fault was injected"


@pytest.mark.parametrize("kind", KINDS)
def test_writes_are_acknowledged_only_when_committed(fleet, faults, moto, kind):
    name = f"writes_{kind}"
    db = connect_remote(fleet.url)
    table = db.create_table(name, make_data(BATCH, seed=0))
    acknowledged, failed = [list(range(BATCH))], []

    faults.set(Fault(kind))
    for append in range(1, APPENDS + 1):
        ids = list(range(append * BATCH, (append + 1) * BATCH))
        try:
            table.add(make_data(BATCH, seed=append, id_offset=append * BATCH))
            acknowledged.append(ids)
        except Exception:  # noqa: BLE001 - any failure leaves the append unacknowledged
            failed.append(ids)
    faults.set(None)
    assert faults.injected[kind] > 0, f"no {kind} fault was injected"
    print(f"{kind}: {faults.injected[kind]} faults, {len(acknowledged) - 1} appends acknowledged, {len(failed)} failed")
    assert not failed, f"{len(failed)} of {APPENDS} appends failed under {kind} faults"

    oss = lancedb.connect(ROOT, storage_options=storage_options(moto)).open_table(name)
    stored = oss.to_arrow()["id"].to_pylist()
    counts = np.bincount(stored, minlength=(APPENDS + 1) * BATCH)
    assert counts.max() == 1, f"rows stored twice: {np.flatnonzero(counts > 1).tolist()}"
    for ids in acknowledged:
        assert all(counts[ids] == 1), f"acknowledged rows {ids} missing after {kind} faults"
    for ids in failed:
        assert counts[ids].sum() in (0, BATCH), f"an unacknowledged append is half there: {ids}"
    assert table.count_rows() == len(stored)
    assert len(direct(moto, name).to_table()) == len(stored)


@pytest.mark.parametrize("kind", KINDS)
def test_deletes_updates_upserts_and_index_builds_commit_exactly_once(fleet, faults, moto, kind):
    name = f"mutations_{kind}"
    db = connect_remote(fleet.url)
    initial = make_data(60, seed=3)
    table = db.create_table(name, initial)
    rows = {row["id"]: row["text"] for row in initial.select(["id", "text"]).to_pylist()}
    upsert = make_data(6, seed=4, id_offset=57).to_pylist()  # ids 57..59 exist, 60..62 do not
    for row in upsert:
        row["text"] = f"upserted {row['id']}"

    faults.set(Fault(kind))
    table.delete("id < 5")
    table.update(where="id >= 10 AND id < 13", values={"text": "updated"})
    table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(upsert)
    table.create_scalar_index("id", index_type="BTREE")
    table.add_columns({"double_id": "id * 2"})
    faults.set(None)
    assert faults.injected[kind] > 0, f"no {kind} fault was injected"

    for gone in range(5):
        del rows[gone]
    rows.update({i: "updated" for i in range(10, 13)})
    rows.update({row["id"]: row["text"] for row in upsert})
    oss = lancedb.connect(ROOT, storage_options=storage_options(moto)).open_table(name)
    stored = oss.to_arrow().select(["id", "text", "double_id"]).to_pylist()
    assert sorted(row["id"] for row in stored) == sorted(rows), "rows lost or stored twice"
    assert {row["id"]: row["text"] for row in stored} == rows
    assert all(row["double_id"] == 2 * row["id"] for row in stored)
    assert [index.columns for index in oss.list_indices()] == [["id"]]
    # Each write committed once: create, delete, update, merge_insert, index, add_columns.
    assert oss.version == 6, [(v["version"]) for v in oss.list_versions()]
    assert table.count_rows("id >= 57") == 6 and table.count_rows() == len(rows)
