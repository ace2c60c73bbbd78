"""Interop with plain Lance tables in the server's data directory
(tables live at {data_dir}/{name}.lance)."""

from __future__ import annotations

import lancedb
import pytest

from lf_helpers import (
    assert_search_equal,
    assert_tables_equal,
    make_binary_data,
    make_data,
    query_vectors,
    read_all,
)

QS = query_vectors(3, seed=77)


def test_table_directory_layout(remote_db, data_dir, table_name):
    remote_db.create_table(table_name, make_data(10))
    path = data_dir / f"{table_name}.lance"
    assert path.is_dir(), f"expected {path}; data_dir has {sorted(p.name for p in data_dir.iterdir())}"
    assert (path / "_versions").is_dir() or any(path.glob("_versions*")), "not a Lance dataset"


def test_oss_reads_table_written_by_server(remote_db, data_dir, table_name):
    first, second = make_data(1200, seed=0), make_data(300, seed=1, id_offset=1200)
    r = remote_db.create_table(table_name, first)
    r.add(second)
    r.delete("id % 10 = 0")
    local = lancedb.connect(str(data_dir))
    assert table_name in local.list_tables(limit=100_000).tables
    o = local.open_table(table_name)
    assert o.version == r.version
    assert o.count_rows() == r.count_rows() == 1500 - 150
    assert o.schema == r.schema == first.schema
    assert_tables_equal(o.to_arrow().sort_by("id"), read_all(r))
    for q in QS:
        assert_search_equal(r.search(q).limit(10).to_arrow(), o.search(q).limit(10).to_arrow())


def test_server_reads_table_written_by_oss(remote_db, data_dir, table_name):
    """Written directly into the data dir while the server runs, then read remotely."""
    local = lancedb.connect(str(data_dir))
    o = local.create_table(table_name, make_data(1000, seed=3))
    o.add(make_data(500, seed=4, id_offset=1000))
    assert (data_dir / f"{table_name}.lance").is_dir()

    r = remote_db.open_table(table_name)
    assert r.schema == o.schema
    assert r.version == o.version
    assert r.count_rows() == o.count_rows() == 1500
    assert r.count_rows("score > 0.5") == o.count_rows("score > 0.5")
    assert_tables_equal(read_all(r), o.to_arrow().sort_by("id"))
    for q in QS:
        for metric in ("l2", "cosine", "dot"):
            assert_search_equal(
                r.search(q).distance_type(metric).limit(10).to_arrow(),
                o.search(q).distance_type(metric).limit(10).to_arrow(),
            )
    assert_search_equal(
        r.search(QS[0]).where("id < 700").with_row_id(True).limit(20).to_arrow(),
        o.search(QS[0]).where("id < 700").with_row_id(True).limit(20).to_arrow(),
    )
    assert table_name in remote_db.list_tables(limit=100_000).tables


def test_server_reads_binary_table_written_by_oss(remote_db, data_dir, table_name):
    import numpy as np

    data = make_binary_data(500, seed=5)
    o = lancedb.connect(str(data_dir)).create_table(table_name, data)
    r = remote_db.open_table(table_name)
    q = np.arange(8, dtype=np.uint8)
    got = r.search(q).distance_type("hamming").limit(5).to_arrow()
    exp = o.search(q).distance_type("hamming").limit(5).to_arrow()
    np.testing.assert_allclose(got["_distance"].to_numpy(), exp["_distance"].to_numpy())


def test_server_writes_on_top_of_oss_table(remote_db, data_dir, table_name):
    """OSS creates, server appends; OSS sees the server's commit."""
    o = lancedb.connect(str(data_dir)).create_table(table_name, make_data(100))
    r = remote_db.open_table(table_name)
    res = r.add(make_data(50, seed=6, id_offset=100))
    assert res.version == 2
    o2 = lancedb.connect(str(data_dir)).open_table(table_name)
    assert o2.version == 2
    assert o2.count_rows() == 150
    assert_tables_equal(o2.to_arrow().sort_by("id"), read_all(r))
    o.checkout_latest()
    assert o.count_rows() == 150


def test_drop_removes_table_for_oss(remote_db, data_dir, table_name):
    remote_db.create_table(table_name, make_data(5))
    remote_db.drop_table(table_name)
    local = lancedb.connect(str(data_dir))
    assert table_name not in local.list_tables(limit=100_000).tables
    with pytest.raises(ValueError):
        local.open_table(table_name)


def test_namespaces_are_shared_with_oss(remote_db, data_dir, table_name):
    """LanceDB OSS keeps namespaced tables in lance's directory namespace (a `__manifest`
    table under the root); each side sees, reads and appends to the other's namespace and
    table, and a drop on either side is seen by the other."""
    ours, theirs = f"{table_name}_fleet", f"{table_name}_oss"
    local = lancedb.connect(str(data_dir))

    remote_db.create_namespace([ours])
    r = remote_db.create_table("a", make_data(100), namespace_path=[ours])
    assert ours in local.list_namespaces().namespaces
    assert local.table_names(namespace_path=[ours]) == ["a"]
    o = local.open_table("a", namespace_path=[ours])
    assert o.version == r.version and o.count_rows() == 100
    o.add(make_data(50, seed=6, id_offset=100))
    ra = remote_db.open_table("a", namespace_path=[ours])
    assert ra.version == o.version and ra.count_rows() == 150
    assert_tables_equal(read_all(ra), o.to_arrow().sort_by("id"))

    local.create_namespace([theirs])
    o = local.create_table("b", make_data(80, seed=7), namespace_path=[theirs])
    assert theirs in remote_db.list_namespaces().namespaces
    assert remote_db.table_names(namespace_path=[theirs]) == ["b"]
    r = remote_db.open_table("b", namespace_path=[theirs])
    assert r.count_rows() == 80
    for q in QS:
        assert_search_equal(r.search(q).limit(10).to_arrow(), o.search(q).limit(10).to_arrow())
    r.add(make_data(20, seed=8, id_offset=80))
    assert local.open_table("b", namespace_path=[theirs]).count_rows() == 100

    # Neither side's tables are root tables of the other, and drops are seen both ways.
    assert "a" not in local.table_names() and "b" not in remote_db.table_names()
    remote_db.drop_table("b", namespace_path=[theirs])
    assert local.table_names(namespace_path=[theirs]) == []
    local.drop_table("a", namespace_path=[ours])
    assert remote_db.table_names(namespace_path=[ours]) == []
    # (The client keeps the tables it opened: ask the server through the handle.)
    with pytest.raises(ValueError, match="not found"):
        ra.count_rows()
    remote_db.drop_namespace([theirs])
    local.drop_namespace([ours])
    remaining = set(remote_db.list_namespaces().namespaces)
    assert not {ours, theirs} & remaining and not {ours, theirs} & set(local.list_namespaces().namespaces)
