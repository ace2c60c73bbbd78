"""The official TypeScript client (@lancedb/lancedb) against LanceFleet, differentially.

integration-tests/node/differential.mjs runs one fixed scenario (tables, writes, every
search kind, indexes, schema changes, versions and tags, bad input) with the TS client and
prints one JSON document of normalised step results. It runs twice: on a local directory
(LanceDB OSS inside the same client) and against a LanceFleet server over REST; every step
must agree, except the known differences listed in KNOWN_DIFFERENCES below.

The client is installed outside the repo by scripts/lib.sh (`ensure_node_client`), which
exports LANCEFLEET_NODE_MODULES; without it the test skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SELFTEST_OSS

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "differential.mjs"
NODE_MODULES = os.environ.get("LANCEFLEET_NODE_MODULES", "")
RUN_TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    not NODE_MODULES or not (Path(NODE_MODULES) / "@lancedb" / "lancedb").is_dir(),
    reason=(
        "LANCEFLEET_NODE_MODULES is unset or has no @lancedb/lancedb: the TypeScript client is "
        "installed by scripts/lib.sh ensure_node_client (scripts/test.sh and CI set it); run "
        "`source scripts/lib.sh && ensure_node_client` and export LANCEFLEET_NODE_MODULES"
    ),
)

# Known, accepted differences: step name -> why. Each entry must still differ (a stale entry
# fails the test, so a fixed server shows up here). Every entry says why it is accepted.
KNOWN_DIFFERENCES: dict[str, str] = {
    # The client, not the server: the REST client writes a dynamic projection
    # (`select({id: "id", upper: ..., s: ...})`) as a JSON object whose keys it sorts
    # (`"columns": {"id": .., "s": .., "upper": ..}`), so the requested column order never
    # reaches the server, which answers in the order it was sent. LanceDB Cloud sees the same.
    "query.select_dynamic": "the client sends dynamic projections with their keys sorted",
    # The client, not the server: the REST client's table refuses a write at a checked-out
    # version itself (NotSupported, "Cannot mutate table reference fixed at version 2")
    # without a request; the local table says InvalidInput. Both refuse.
    "versions.write_while_checked_out": "the REST client refuses writes at a fixed version itself",
}

# ANN searches (steps "ann.*"): an IVF index's k-means is randomly initialised, so two
# builds of the same index legitimately return different neighbours. Compared by the number
# of rows and by recall against the same target's exact search (bypassVectorIndex).
MIN_ANN_RECALL = 0.6
ANN_RECALL_SLACK = 0.3

# Floats arrive rounded to 4 decimals; one unit of rounding either way is the same value.
ABS_TOL = 2e-4
REL_TOL = 1e-5


def run_scenario(args: list[str], cwd: Path) -> dict:
    node = shutil.which("node")
    assert node, "node is not on PATH (scripts/lib.sh installs nodejs with the client)"
    env = {**os.environ, "NODE_PATH": NODE_MODULES, "RUST_LOG": "error", "NO_COLOR": "1"}
    proc = subprocess.run(
        [node, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert proc.returncode == 0, f"differential.mjs {args} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"differential.mjs {args} printed no JSON document\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def close(a, b) -> bool:
    return abs(a - b) <= ABS_TOL + REL_TOL * max(abs(a), abs(b))


def differences(local, remote, path="") -> list[str]:
    """Where two normalised step results differ (floats with tolerance, errors by class and
    category only)."""
    if isinstance(local, dict) and "error" in local and "category" in local:
        if not (isinstance(remote, dict) and "error" in remote):
            return [f"{path}: local failed ({local['category']}: {local['message'][:160]}), remote returned {short(remote)}"]
        if (local["error"], local["category"]) != (remote["error"], remote["category"]):
            return [
                f"{path}: error {local['error']}/{local['category']} ({local['message'][:160]}) "
                f"!= {remote['error']}/{remote['category']} ({remote['message'][:160]})"
            ]
        return []
    if isinstance(remote, dict) and "error" in remote and "category" in remote:
        return [f"{path}: remote failed ({remote['category']}: {remote['message'][:200]}), local returned {short(local)}"]
    if isinstance(local, bool) or isinstance(remote, bool):
        return [] if local == remote else [f"{path}: {local!r} != {remote!r}"]
    if isinstance(local, (int, float)) and isinstance(remote, (int, float)):
        return [] if close(local, remote) else [f"{path}: {local!r} != {remote!r}"]
    if isinstance(local, dict) and isinstance(remote, dict):
        out = []
        for key in sorted(set(local) | set(remote)):
            if key not in remote:
                out.append(f"{path}.{key}: missing on the remote (local {short(local[key])})")
            elif key not in local:
                out.append(f"{path}.{key}: only on the remote ({short(remote[key])})")
            else:
                out += differences(local[key], remote[key], f"{path}.{key}")
        return out
    if isinstance(local, list) and isinstance(remote, list):
        if len(local) != len(remote):
            return [f"{path}: {len(local)} items != {len(remote)} items: {short(local)} != {short(remote)}"]
        out = []
        for index, (a, b) in enumerate(zip(local, remote)):
            out += differences(a, b, f"{path}[{index}]")
        return out
    return [] if local == remote else [f"{path}: {short(local)} != {short(remote)}"]


def ann_differences(local, remote, path) -> list[str]:
    if "error" in local or "error" in remote:
        return differences(local, remote, path)
    out = []
    if local["num_rows"] != remote["num_rows"]:
        out.append(f"{path}: {local['num_rows']} rows locally, {remote['num_rows']} on the remote")
    floor = max(MIN_ANN_RECALL, local["recall"] - ANN_RECALL_SLACK)
    if remote["recall"] < floor:
        out.append(f"{path}: remote recall {remote['recall']} < {floor} (local {local['recall']})")
    return out


def short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 300 else text[:300] + "..."


def test_typescript_client_matches_local(isolated_server, tmp_path):
    started = time.monotonic()
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local = run_scenario([str(local_dir)], tmp_path)
    if isolated_server.url.startswith("oss://"):  # LANCEFLEET_SELFTEST_OSS=1
        remote = run_scenario([isolated_server.url[len("oss://"):]], tmp_path)
    else:
        remote = run_scenario(["remote", isolated_server.url, "test-key"], tmp_path)
    local_steps, remote_steps = local["steps"], remote["steps"]

    # The scenario itself must have run: no fatal error, every step present, and the
    # steps that set up the rest succeeded locally.
    assert "<fatal>" not in local_steps, local_steps["<fatal>"]
    assert "<fatal>" not in remote_steps, f"the remote run stopped early: {remote_steps['<fatal>']}"
    assert len(local_steps) >= 100, f"only {len(local_steps)} steps ran locally"
    for name in ("tables.create_from_rows", "search.vector_l2", "index.create_ivf_pq", "writes.merge_upsert"):
        assert "error" not in json.dumps(local_steps[name])[:20], f"local {name} failed: {local_steps[name]}"
    assert set(local_steps) == set(remote_steps), (
        f"steps only local: {sorted(set(local_steps) - set(remote_steps))}, "
        f"only remote: {sorted(set(remote_steps) - set(local_steps))}"
    )

    unexpected, stale = [], []
    for name, local_result in local_steps.items():
        remote_result = remote_steps[name]
        if name.startswith("ann."):
            found = ann_differences(local_result, remote_result, name)
        else:
            found = differences(local_result, remote_result, name)
        if name in KNOWN_DIFFERENCES:
            if not found and not SELFTEST_OSS:
                stale.append(f"{name} ({KNOWN_DIFFERENCES[name]})")
        else:
            unexpected += found
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} differences between LanceFleet and a local directory:")
        problems += unexpected
    if stale:
        problems.append("known differences that no longer differ (remove them from KNOWN_DIFFERENCES):")
        problems += stale
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    assert time.monotonic() - started < 90, "the differential run took too long"
