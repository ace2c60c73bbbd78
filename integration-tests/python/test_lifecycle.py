"""Process lifecycle of `lancefleet standalone`: readiness, graceful SIGTERM,
persistence across restarts."""

from __future__ import annotations

import requests
import pytest

from conftest import LanceFleetServer
from lf_helpers import assert_tables_equal, connect_remote, make_data, read_all

pytestmark = pytest.mark.lifecycle


def test_start_health_and_sigterm(tmp_path):
    srv = LanceFleetServer(tmp_path).start()
    try:
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        code = srv.stop()
    assert code == 0, srv.log_tail()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.url}/health", timeout=2)


def test_data_persists_across_restart(tmp_path):
    data = make_data(700)
    srv = LanceFleetServer(tmp_path).start()
    try:
        t = connect_remote(srv.url).create_table("persist", data)
        t.add(make_data(300, seed=1, id_offset=700))
        t.delete("id < 50")
        version = t.version
    finally:
        assert srv.stop() == 0, srv.log_tail()

    srv2 = LanceFleetServer(tmp_path, data_dir=srv.data_dir).start()
    try:
        db = connect_remote(srv2.url)
        assert "persist" in db.list_tables().tables
        t = db.open_table("persist")
        assert t.version == version
        assert t.count_rows() == 950
        got = read_all(t)
        assert got["id"].to_pylist() == list(range(50, 1000))
        assert_tables_equal(got.slice(0, 650), data.slice(50))
    finally:
        assert srv2.stop() == 0, srv2.log_tail()


def test_sigterm_while_idle_connections_open(tmp_path):
    """Keep-alive connections from the client must not block shutdown."""
    srv = LanceFleetServer(tmp_path).start()
    try:
        db = connect_remote(srv.url)
        db.create_table("t", make_data(10)).count_rows()
        s = requests.Session()
        assert s.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        code = srv.stop()
    assert code == 0, srv.log_tail()
