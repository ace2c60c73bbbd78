"""Encryption at rest of the executors' disk cache (issue 19, item 3).

A plan executor with `cache.encryption_key_file` keeps its disk tier sealed: no table name
and no run of table bytes is found in its cache files (while an unencrypted executor's
files hold both: the check can fail). Restarted with the same key it serves from disk;
with another key, or none, it starts from an empty disk tier and answers stay exact.
"""

from __future__ import annotations

import signal
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from conftest import BUCKET, LanceFleetServer, s3_env, storage_options
from lf_helpers import connect_remote, metric

TABLE = "secret_customer_table"
KEY_SETTING = "LANCEFLEET_CACHE__ENCRYPTION_KEY_FILE"
DIM = 32


def cache_bytes(executor) -> bytes:
    return b"".join(path.read_bytes() for path in Path(executor.cache_dir).iterdir() if path.is_file())


def table_bytes(vectors: np.ndarray) -> bytes:
    """A run of the table's bytes (vectors are stored as they are)."""
    return vectors[len(vectors) // 2: len(vectors) // 2 + 2].tobytes()


def search_all(server) -> list:
    table = connect_remote(server.url).open_table(TABLE)
    rng = np.random.default_rng(4)
    return [table.search(rng.random(DIM, dtype=np.float32)).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()
            for _ in range(4)]


def cache_reads(executor) -> tuple[float, float]:
    samples = executor.metrics()
    return metric(samples, "lancefleet_cache_hits_total", tier="disk"), metric(samples, "lancefleet_cache_misses_total")


@pytest.fixture
def layout(tmp_path, moto):
    """The table on S3 (lance reads local files directly, past any object-store cache)."""
    data = f"s3://{BUCKET}/cache-encryption"
    rng = np.random.default_rng(1)
    vectors = rng.random((20_000, DIM), dtype=np.float32)
    lance.write_dataset(pa.table({
        "id": pa.array(np.arange(len(vectors)), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
    }), f"{data}/{TABLE}.lance", max_rows_per_file=5000, storage_options=storage_options(moto))
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "a").write_text("a1" * 32 + "\n")
    (keys / "b").write_text("b2" * 32 + "\n")
    return tmp_path, data, keys, vectors, s3_env(moto)


def test_an_encrypted_disk_cache_holds_no_plaintext_and_opens_only_with_its_key(layout):
    root, data_dir, keys, vectors, store = layout
    expected = None
    (root / "plain").mkdir()
    plain = LanceFleetServer(root / "plain", data_dir=data_dir, executors=1, env=store).start()
    try:
        expected = search_all(plain)
        plain.executors[0].stop(signal.SIGTERM)
        stored = cache_bytes(plain.executors[0])
        # The checks below can fail: an unencrypted disk tier holds both.
        assert TABLE.encode() in stored and table_bytes(vectors) in stored
    finally:
        plain.stop()

    env = {**store, KEY_SETTING: str(keys / "a")}
    (root / "sealed").mkdir()
    server = LanceFleetServer(root / "sealed", data_dir=data_dir, executors=1, env=env).start()
    try:
        executor = server.executors[0]
        assert search_all(server) == expected
        _, fetched = cache_reads(executor)
        assert fetched > 0
        executor.stop(signal.SIGTERM)
        stored = cache_bytes(executor)
        assert len(stored) > 1 << 20
        assert TABLE.encode() not in stored, "a table name on disk"
        assert table_bytes(vectors) not in stored, "table bytes on disk"

        # The same key: served from the disk tier.
        executor.start()
        assert search_all(server) == expected
        disk_hits, fetched = cache_reads(executor)
        assert disk_hits > 0 and fetched == 0, (disk_hits, fetched)

        # Another key, then none: an empty disk tier, exact answers from the store.
        for key in [keys / "b", None]:
            executor.stop(signal.SIGTERM)
            executor.env.pop(KEY_SETTING, None)
            if key is not None:
                executor.env[KEY_SETTING] = str(key)
            executor.start()
            assert search_all(server) == expected
            disk_hits, fetched = cache_reads(executor)
            assert disk_hits == 0 and fetched > 0, (key, disk_hits, fetched)
        assert "emptied" in executor.log_path.read_text()

        # A key file that is not a key: the executor refuses to start, naming the setting.
        (keys / "bad").write_text("not a key")
        executor.stop(signal.SIGTERM)
        executor.env[KEY_SETTING] = str(keys / "bad")
        with pytest.raises(BaseException, match="64 hex digits"):
            executor.start()
    finally:
        executor.env.pop(KEY_SETTING, None)
        if executor.proc is None or executor.proc.poll() is not None:
            executor.start()
        server.stop()
