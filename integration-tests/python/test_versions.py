"""Versions, list_versions, checkout (time travel) — remote vs OSS."""

from __future__ import annotations

import pytest

from lf_helpers import assert_search_equal, assert_tables_equal, make_data, query_vectors

Q = query_vectors(1, seed=5)[0]


@pytest.fixture
def history(remote_db, oss_db, table_name):
    """Both tables with 4 versions: create(300) / add(200) / delete(id<100) / overwrite(50)."""
    tables = []
    for db in (remote_db, oss_db):
        t = db.create_table(table_name, make_data(300))
        t.add(make_data(200, seed=1, id_offset=300))
        t.delete("id < 100")
        t.add(make_data(50, seed=2, id_offset=9000), mode="overwrite")
        tables.append(t)
    r, o = tables
    assert r.version == o.version
    return r, o


def test_list_versions_matches(history):
    r, o = history
    rv = [v["version"] for v in r.list_versions()]
    ov = [v["version"] for v in o.list_versions()]
    assert rv == ov
    assert rv[-1] == r.version
    for v in r.list_versions():
        assert v["timestamp"] is not None


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_checkout_reads_old_version(history, step):
    r, o = history
    version = [v["version"] for v in o.list_versions()][step]
    r.checkout(version)
    o.checkout(version)
    assert r.version == o.version == version
    assert r.count_rows() == o.count_rows()
    assert r.count_rows("id >= 300") == o.count_rows("id >= 300")
    assert_tables_equal(r.search().to_arrow().sort_by("id"), o.search().to_arrow().sort_by("id"))
    assert_search_equal(r.search(Q).limit(10).to_arrow(), o.search(Q).limit(10).to_arrow())
    assert r.schema == o.schema


def test_checkout_first_version_content(history):
    r, _ = history
    r.checkout(1)
    assert r.count_rows() == 300
    assert r.search().to_arrow().sort_by("id")["id"].to_pylist() == list(range(300))


def test_checkout_then_latest(history):
    r, o = history
    latest = r.version
    r.checkout(2)
    assert r.count_rows() == 500
    r.checkout_latest()
    assert r.version == latest
    assert r.count_rows() == o.count_rows() == 50


def test_checkout_is_read_only(history):
    r, _ = history
    r.checkout(1)
    with pytest.raises(Exception):
        r.add(make_data(1, seed=9, id_offset=123456))
    r.checkout_latest()
    assert r.count_rows() == 50  # nothing was written


def test_checkout_missing_version_raises(history):
    r, o = history
    for t in (r, o):
        with pytest.raises(ValueError):
            t.checkout(t.version + 100)


def test_old_version_survives_new_writes(remote_db, server, table_name):
    from lf_helpers import connect_remote

    t = remote_db.create_table(table_name, make_data(10))
    t.add(make_data(10, seed=1, id_offset=10))
    other = connect_remote(server.url).open_table(table_name)
    other.checkout(1)
    t.add(make_data(10, seed=2, id_offset=20))
    assert other.count_rows() == 10
    assert t.count_rows() == 30
