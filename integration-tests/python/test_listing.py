"""table_names() / list_tables() incl. paging, against a server of its own so the
full listing is known, compared with an OSS directory holding the same tables."""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest

from lf_helpers import connect_remote

NAMES = [f"t{i:02d}" for i in range(13)] + ["alpha", "beta-1", "gamma.x", "Zed"]


@pytest.fixture(scope="module")
def dbs(isolated_server, tmp_path_factory):
    remote = connect_remote(isolated_server.url)
    oss = lancedb.connect(str(tmp_path_factory.mktemp("oss-listing")))
    data = pa.table({"x": pa.array([1, 2, 3], pa.int64())})
    for n in NAMES:
        remote.create_table(n, data)
        oss.create_table(n, data)
    return remote, oss


def test_all_tables_listed(dbs):
    remote, oss = dbs
    assert sorted(remote.list_tables(limit=1000).tables) == sorted(NAMES)
    assert remote.list_tables(limit=1000).tables == oss.list_tables(limit=1000).tables


def test_table_names_default_limit(dbs):
    remote, oss = dbs
    got = list(remote.table_names())
    assert got == list(oss.table_names())
    assert len(got) == 10


@pytest.mark.parametrize("limit", [1, 3, 10, 17, 100])
def test_table_names_limit(dbs, limit):
    remote, oss = dbs
    got = list(remote.table_names(limit=limit))
    assert got == list(oss.table_names(limit=limit))
    assert len(got) == min(limit, len(NAMES))


@pytest.mark.parametrize("start_after,limit", [("t05", 3), ("t05", 100), ("", 5), ("a", 4), ("t12", 10), ("zzz", 5)])
def test_table_names_start_after(dbs, start_after, limit):
    """The first page_token of the flat route is a table name meaning 'strictly after'."""
    remote, oss = dbs
    got = list(remote.table_names(page_token=start_after or None, limit=limit))
    assert got == list(oss.table_names(page_token=start_after or None, limit=limit))


def test_table_names_fresh_connection_matches(dbs, isolated_server):
    _, oss = dbs
    fresh = connect_remote(isolated_server.url)
    assert list(fresh.table_names(limit=100)) == list(oss.table_names(limit=100))


@pytest.mark.parametrize("page", [1, 4, 5, 16, 17])
def test_list_tables_paging(dbs, page):
    remote, oss = dbs
    seen, token, pages = [], None, 0
    while True:
        resp = remote.list_tables(limit=page, page_token=token)
        assert len(resp.tables) <= page
        seen.extend(resp.tables)
        pages += 1
        assert pages <= len(NAMES) + 2, "paging does not terminate"
        if not resp.page_token:
            break
        assert resp.page_token != token, "page token did not advance"
        token = resp.page_token
    assert len(seen) == len(set(seen)), f"duplicates across pages: {seen}"
    assert seen == oss.list_tables(limit=1000).tables
    assert pages >= -(-len(NAMES) // page)


def test_list_tables_without_limit(dbs):
    remote, oss = dbs
    # single-call listing; may be paged by the server, so follow tokens
    seen, resp = [], remote.list_tables()
    seen.extend(resp.tables)
    while resp.page_token:
        resp = remote.list_tables(page_token=resp.page_token)
        seen.extend(resp.tables)
    assert seen == oss.list_tables(limit=1000).tables


def test_listing_reflects_create_and_drop(dbs):
    remote, oss = dbs
    data = pa.table({"x": pa.array([1], pa.int64())})
    remote.create_table("tmp_listing", data)
    assert "tmp_listing" in remote.list_tables(limit=1000).tables
    assert "tmp_listing" in list(remote.table_names(limit=1000))
    remote.drop_table("tmp_listing")
    assert "tmp_listing" not in remote.list_tables(limit=1000).tables
    assert "tmp_listing" not in list(remote.table_names(limit=1000))
    assert sorted(remote.list_tables(limit=1000).tables) == sorted(NAMES)
