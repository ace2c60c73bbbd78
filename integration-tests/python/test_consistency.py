"""Read consistency: strong by default, weak with `weak_read_consistency_interval_seconds`,
and the client's freshness headers honoured in both modes.

Two query nodes share one data directory, as two nodes of a cluster would: one strong
(the default), one weak. Writes go through either; what each reads is checked with the real
`lancedb` client.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pyarrow as pa
import pytest

from conftest import LanceFleetServer
from lf_helpers import connect_remote, read_all

pytestmark = pytest.mark.lifecycle

WEAK_ENV = "LANCEFLEET_REST__WEAK_READ_CONSISTENCY_INTERVAL_SECONDS"


def rows(*ids: int) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64())})


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    data = root / "data"
    for name in ("strong", "weak", "brief"):
        (root / name).mkdir()
    strong = LanceFleetServer(root / "strong", data_dir=data).start()
    weak = LanceFleetServer(root / "weak", data_dir=data, env={WEAK_ENV: "1800"}).start()
    brief = LanceFleetServer(root / "brief", data_dir=data, env={WEAK_ENV: "1"}).start()
    yield strong, weak, brief
    for node in (strong, weak, brief):
        assert node.stop() == 0, node.log_tail()


def test_strong_reads_see_every_committed_write(nodes, table_name):
    strong, weak, _ = nodes
    connect_remote(weak.url).create_table(table_name, rows(1, 2))
    table = connect_remote(strong.url).open_table(table_name)
    assert table.count_rows() == 2
    connect_remote(weak.url).open_table(table_name).add(rows(3))
    assert table.count_rows() == 3, "a strong node never serves an older version"


def test_weak_reads_reuse_a_snapshot_until_asked_for_newer(nodes, table_name):
    strong, weak, _ = nodes
    connect_remote(strong.url).create_table(table_name, rows(1, 2))
    assert connect_remote(weak.url).open_table(table_name).count_rows() == 2  # the weak node's snapshot

    connect_remote(strong.url).open_table(table_name).add(rows(3))
    # A client without a consistency interval accepts the weak node's snapshot...
    assert connect_remote(weak.url).open_table(table_name).count_rows() == 2
    # ...one with an interval sends x-lancedb-min-timestamp, and gets the newer version.
    fresh = connect_remote(weak.url, read_consistency_interval=timedelta(0)).open_table(table_name)
    assert fresh.count_rows() == 3
    # The refreshed snapshot now serves everyone.
    assert connect_remote(weak.url).open_table(table_name).count_rows() == 3


def test_weak_node_reads_its_own_writes(nodes, table_name):
    strong, weak, _ = nodes
    connect_remote(strong.url).create_table(table_name, rows(1))
    table = connect_remote(weak.url).open_table(table_name)
    assert table.count_rows() == 1
    connect_remote(strong.url).open_table(table_name).add(rows(2))
    table.add(rows(3))  # writes start from the latest version: nothing is lost
    assert table.count_rows() == 3
    assert read_all(table)["id"].to_pylist() == [1, 2, 3]


def test_weak_snapshots_expire_after_the_interval(nodes, table_name):
    strong, _, brief = nodes
    connect_remote(strong.url).create_table(table_name, rows(1))
    assert connect_remote(brief.url).open_table(table_name).count_rows() == 1
    connect_remote(strong.url).open_table(table_name).add(rows(2))
    time.sleep(1.5)  # the node's interval is 1 s: its snapshot must be gone
    assert connect_remote(brief.url).open_table(table_name).count_rows() == 2
