"""The cluster over Azure Blob Storage (a local Azurite server): reads through plan
executors equal lance in-process, writes through the query node commit on Azure (lance's
conditional put), and repeated queries are served from the executors' caches."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from conftest import LanceFleetServer, free_port, wait_for_port
from lf_helpers import connect_remote, metric, write_fragments
from test_cluster import DIM, assert_same_rows, cluster_search, lance_search, random_query

# Azurite's well-known development account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "lancefleet"
AZURITE_BIN = os.environ.get(
    "LANCEFLEET_AZURITE_BIN",
    str(Path.home() / ".cache" / "lancefleet-azurite" / "node_modules" / ".bin" / "azurite-blob"),
)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    if not os.access(AZURITE_BIN, os.X_OK):
        pytest.fail(f"Azurite not found at {AZURITE_BIN}; scripts/test.sh installs it (npm)", pytrace=False)
    port = free_port()
    log_path = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [AZURITE_BIN, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    wait_for_port(port, proc, "azurite", log_path)
    endpoint = f"http://127.0.0.1:{port}"
    from azure.storage.blob import BlobServiceClient

    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};"
    )
    BlobServiceClient.from_connection_string(connection).create_container(CONTAINER)
    # object_store's emulator mode takes the endpoint from this variable only.
    previous = os.environ.get("AZURITE_BLOB_STORAGE_URL")
    os.environ["AZURITE_BLOB_STORAGE_URL"] = endpoint
    yield endpoint
    if previous is None:
        os.environ.pop("AZURITE_BLOB_STORAGE_URL", None)
    else:
        os.environ["AZURITE_BLOB_STORAGE_URL"] = previous
    proc.terminate()
    proc.wait(timeout=20)


OPTIONS = {"account_name": ACCOUNT, "account_key": KEY, "use_emulator": "true"}


def test_cluster_reads_and_writes_tables_on_azure(tmp_path, azurite):
    uri = f"az://{CONTAINER}/db/items.lance"
    rng = np.random.default_rng(3)
    vectors = rng.random((3000, DIM), dtype=np.float32)
    write_fragments(uri, vectors, 3, OPTIONS)

    env = {f"LANCEFLEET_STORAGE__OPTIONS__{key.upper()}": value for key, value in OPTIONS.items()}
    env["AZURITE_BLOB_STORAGE_URL"] = azurite
    server = LanceFleetServer(tmp_path, data_dir=f"az://{CONTAINER}/db", executors=2, env=env).start()
    try:
        table = connect_remote(server.url).open_table("items")
        queries = [random_query(rng) for _ in range(10)]
        for _ in range(2):  # the second pass is served from the caches
            dataset = lance.dataset(uri, storage_options=OPTIONS)
            for query in queries:
                assert_same_rows(cluster_search(table, query), lance_search(dataset, query), query)
            assert table.count_rows("category = 1") == dataset.count_rows("category = 1")

        extra = pa.table({
            "id": pa.array([5000, 5001], pa.int64()),
            "category": pa.array([1, 1], pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * DIM, np.float32)), DIM),
        })
        table.add(extra)
        assert lance.dataset(uri, storage_options=OPTIONS).count_rows() == 3002
        assert table.count_rows("category = 1") == lance.dataset(uri, storage_options=OPTIONS).count_rows("category = 1")

        hits = sum(metric(executor.metrics(), "lancefleet_cache_hits_total") for executor in server.executors)
        assert hits > 0, "the second pass was served by the executors' caches"
    finally:
        server.stop()
