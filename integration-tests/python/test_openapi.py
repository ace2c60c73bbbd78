"""The REST API's OpenAPI document, fuzzed (issue 19, item 4).

- `GET /openapi.json` serves `query-node/openapi/openapi.json`, which `scripts/openapi.py`
  generates from the vendored Lance Namespace spec (checked not stale here); every operation
  it lists is routed with its method, and the other method is refused (405);
- schemathesis (PyPI) fuzzes every operation of the document, time-bounded, in three runs:
  the read operations against an existing table, every table operation against a table it
  may change, and every operation with generated ids (path tricks included). Arrow request
  bodies come from `lf_fuzz_hooks.py` (rows in the table's schema, other schemas, cut or
  flipped bytes, random bytes). Its checks: no 5xx beyond the documented 501/503/504, every
  error with its code header, documented status codes and content types;
- afterwards the server is up, the tables no run targeted (and the read run's table) keep
  their version and rows, the written one opens in pylance with the count the server gives,
  and nothing was written outside the data directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import requests

from conftest import LanceFleetServer
from lf_fuzz_hooks import DIM, SCHEMA

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "query-node" / "openapi" / "openapi.json"
HOOKS = Path(__file__).resolve().parent / "lf_fuzz_hooks.py"
# Seconds per schemathesis run (three runs), and its seed: FUZZ_SECONDS=600 FUZZ_SEED=7
# for a longer session with other cases.
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "40"))
FUZZ_SEED = os.environ.get("FUZZ_SEED", "19")
READ_OPERATIONS = [
    "DescribeTable", "GetTableStats", "QueryTable", "ExplainTableQueryPlan", "AnalyzeTableQueryPlan",
    "CountTableRows", "ListTableVersions", "ListTableTags", "GetTableTagVersion", "ListTableIndices",
    "DescribeTableIndexStats",
]
CHECKS = "no_server_fault,status_code_conformance,content_type_conformance"


def fixture_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "lance", "fleet"])
    return pa.table({
        "id": pa.array(np.arange(rows), pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(rows * DIM, dtype=np.float32)), DIM),
        "text": pa.array([" ".join(rng.choice(words, 3)) for _ in range(rows)]),
    }).cast(SCHEMA)


def snapshot(data_dir: Path, name: str) -> tuple[int, pa.Table]:
    dataset = lance.dataset(str(data_dir / f"{name}.lance"))
    return dataset.version, dataset.to_table().sort_by("id")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A server of its own (executors as configured) with the fixture tables."""
    root = tmp_path_factory.mktemp("openapi")
    data_dir = root / "data"
    for name, rows, seed in (("fuzz_read", 300, 1), ("fuzz_keep", 200, 2), ("fuzz_write", 100, 3)):
        dataset = lance.write_dataset(fixture_table(rows, seed), str(data_dir / f"{name}.lance"), max_rows_per_file=100)
        dataset.create_scalar_index("id", "BTREE")
        dataset.create_scalar_index("text", "INVERTED")
        dataset.tags.create("first", 1)
    server = LanceFleetServer(root, data_dir=data_dir).start()
    yield server
    server.stop()


def test_the_document_is_generated_from_the_spec():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "openapi.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_documented_operation_is_routed_with_its_method(fuzzed):
    served = requests.get(f"{fuzzed.url}/openapi.json", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    document = served.json()
    assert document == json.loads(DOCUMENT.read_text())
    assert document["openapi"].startswith("3.1")
    operations = [(method, path) for path, item in document["paths"].items()
                  for method in item if method in ("get", "post")]
    assert len(operations) == 49
    for method, path in operations:
        url = fuzzed.url + path.replace("{id}", "no_such_table").replace("{index_name}", "no_such_index")
        for slash in ("", "/") if path.startswith("/v1/") else ("",):
            answer = requests.request(method, url + slash, json={}, timeout=60)
            refused = answer.status_code in (404, 405, 501) and "route" in answer.text
            assert answer.status_code != 405 and not refused, (method, path, answer.status_code, answer.text)
        other = "post" if method == "get" else "get"
        assert requests.request(other, url, timeout=60).status_code == 405, (other, path)


def schemathesis(server: LanceFleetServer, root: Path, run: str, select: list[str], parameters: dict) -> str:
    """One time-bounded schemathesis run over the operations `select` (CLI filters) picks,
    with `parameters` fixed; returns its output, failing the test when it found anything."""
    work = root / "schemathesis"
    config = work / f"{run}.toml"
    lines = [f'hooks = "{HOOKS}"', "[parameters]"]
    lines += [f"{json.dumps(key)} = {json.dumps(value)}" for key, value in parameters.items()]
    config.write_text("\n".join(lines) + "\n")
    binary = Path(sys.executable).with_name("schemathesis")
    command = [
        str(binary), "--config-file", str(config), "--no-color", "run", str(DOCUMENT), *select,
        "--url", server.url, "--checks", CHECKS, "--workers", "1", "--max-time", str(FUZZ_SECONDS),
        "--request-timeout", "60", "--seed", FUZZ_SEED, "--suppress-health-check", "all",
        "--warnings", "off", "--output-truncate", "true",
    ]
    env = {**os.environ, "PYTHONPATH": str(HOOKS.parent)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work,
                            timeout=FUZZ_SECONDS * 6 + 120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis run '{run}' failed:\n{output[-20000:]}\n{server.log_tail(40)}"
    return output


def summary(output: str) -> str:
    """schemathesis' closing summary (from its SUMMARY banner on)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "SUMMARY" in line), max(len(lines) - 25, 0))
    return "\n".join(lines[start:])


def test_schemathesis_finds_no_server_fault_and_loses_no_data(fuzzed, capsys):
    data_dir = Path(fuzzed.data_dir)
    root = data_dir.parent
    before = {name: snapshot(data_dir, name) for name in ("fuzz_read", "fuzz_keep")}
    (root / "schemathesis").mkdir(exist_ok=True)
    outside = sorted(path.name for path in root.iterdir())
    assert requests.post(f"{fuzzed.url}/v1/namespace/fuzz_ns/create", json={}, timeout=30).status_code == 200
    reads = [argument for operation in READ_OPERATIONS for argument in ("--include-operation-id", operation)]
    runs = {
        # Reads of an existing table: nothing may change.
        "reads": (reads, {"path.id": "fuzz_read", "path.index_name": "id_idx"}),
        # Every table operation on one table it may write (and drop, and create again).
        "writes": (["--include-path-regex", "^/v1/table/\\{id\\}/"],
                   {"path.id": "fuzz_write", "path.index_name": "text_idx"}),
        # Every operation, ids generated (path tricks, the root, unknown tables).
        "anything": ([], {}),
    }
    outputs = {run: schemathesis(fuzzed, root, run, *arguments) for run, arguments in runs.items()}
    with capsys.disabled():
        for run, output in outputs.items():
            print(f"\n--- schemathesis '{run}' ({FUZZ_SECONDS} s) ---\n{summary(output)}")

    assert requests.get(f"{fuzzed.url}/health", timeout=10).status_code == 200
    assert fuzzed.proc.poll() is None
    for name, (version, rows) in before.items():
        after_version, after_rows = snapshot(data_dir, name)
        assert after_version == version, f"{name}: version {version} became {after_version}"
        assert after_rows.equals(rows), f"{name}: rows changed"
    if (data_dir / "fuzz_write.lance").exists():
        dataset = lance.dataset(str(data_dir / "fuzz_write.lance"))
        answer = requests.post(f"{fuzzed.url}/v1/table/fuzz_write/count_rows", json={}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert int(answer.text) == dataset.count_rows()
    assert sorted(path.name for path in root.iterdir()) == outside
