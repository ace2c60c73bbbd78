"""The etcd control plane with real processes: a real etcd, two `lancefleet control-plane`
instances, plan executors and a query node that all register there, and the real
`lancedb` client running exact flat searches the whole time.

- an executor joins under load: it takes about 1/4 of the fragments within seconds;
- an executor is SIGKILLed under load: no query fails, it leaves the cluster state when its
  lease expires, placement converges on the rest;
- an executor shuts down gracefully: no query fails and none needs a retry;
- the control-plane leader is SIGKILLed: the standby takes over, queries are unaffected;
- etcd is down for 30 s: queries keep succeeding; an executor that started meanwhile is
  picked up once etcd is back.

Times from an executor's death to the last retry are printed (run with -s to see them).
"""

from __future__ import annotations

import signal
import time

import lance
import numpy as np
import pytest

from conftest import LanceFleetServer, PlanExecutor
from lf_control import ControlPlane, Etcd, QueryLoad, RetryWatch, etcd_env, serving_executors, wait_until
from lf_helpers import connect_remote, metric, write_fragments

pytestmark = pytest.mark.lifecycle

TABLE = "vectors"
DIM = 16
LEASE_TTL = 3


class Cluster:
    """etcd, two control planes, three executors and a query node over one local table."""

    def __init__(self, root, name: str):
        self.root = root
        self.etcd = Etcd(root).start()
        self.env = etcd_env(self.etcd, name, LEASE_TTL)
        self.data = root / "data"
        self.data.mkdir()
        rng = np.random.default_rng(5)
        write_fragments(str(self.data / f"{TABLE}.lance"), rng.random((1200, DIM), dtype=np.float32), 24)
        self.control_planes = [ControlPlane(root, f"cp-{i}", self.env).start() for i in range(2)]
        self.executors = [self.executor(i).start() for i in range(3)]
        self.query_node = LanceFleetServer(root / "qn", data_dir=self.data, executors=0, env=self.env)
        (root / "qn").mkdir()
        self.query_node.start()
        wait_until(lambda: serving_executors(self.state()) == {"pe-0", "pe-1", "pe-2"}, 15, "three executors")
        dataset = lance.dataset(str(self.data / f"{TABLE}.lance"))
        self.queries = [rng.random(DIM, dtype=np.float32) for _ in range(6)]
        self.expected = [
            dataset.to_table(nearest={"column": "vector", "q": q, "k": 10, "use_index": False}, with_row_id=True)
            for q in self.queries
        ]
        self.table = connect_remote(self.query_node.url).open_table(TABLE)
        self.turn = 0

    def executor(self, index: int) -> PlanExecutor:
        return PlanExecutor(self.root, self.data, f"pe-{index}", self.env)

    def state(self) -> dict:
        for control_plane in self.control_planes:
            if control_plane.proc.poll() is None:
                return control_plane.state()
        raise AssertionError("no control plane is running")

    def search(self) -> None:
        """One exact flat search; raises unless it equals single-process lance."""
        index = self.turn % len(self.queries)
        self.turn += 1
        got = self.table.search(self.queries[index]).limit(10).with_row_id(True).to_arrow()
        want = self.expected[index]
        assert got["_rowid"].to_pylist() == want["_rowid"].to_pylist(), "different rows"
        np.testing.assert_allclose(got["_distance"].to_numpy(), want["_distance"].to_numpy(), rtol=1e-5)

    def executor_fragments(self, executor: PlanExecutor) -> float:
        return metric(executor.metrics(), "lancefleet_executor_fragments_total", rpc="execute")

    def stop(self) -> None:
        self.query_node.stop()
        for executor in self.executors:
            if executor.proc is not None and executor.proc.poll() is None:
                executor.stop()
        for control_plane in self.control_planes:
            if control_plane.proc.poll() is None:
                control_plane.stop()
        self.etcd.stop()


@pytest.fixture
def cluster(tmp_path, request):
    cluster = Cluster(tmp_path, request.node.name.replace("_", "-")[:40])
    yield cluster
    cluster.stop()


def test_an_executor_joins_while_queries_run(cluster):
    with QueryLoad(cluster.search) as load:
        time.sleep(1)
        joined_at = time.monotonic()
        newcomer = cluster.executor(3).start()
        cluster.executors.append(newcomer)
        wait_until(lambda: cluster.executor_fragments(newcomer) > 0, 10, "fragments on the new executor")
        took = time.monotonic() - joined_at
        time.sleep(1)
    assert not load.failures, load.failures[:3]
    assert load.answered > 0
    state = cluster.state()
    assert serving_executors(state) == {"pe-0", "pe-1", "pe-2", "pe-3"}
    share = state["placement"]["first_choice_share"]["pe-3"]
    assert 0.15 <= share <= 0.35, f"the new executor's share of the ring is {share}"
    print(f"\njoin: first fragments on the new executor {took:.2f} s after it started")


def test_an_executor_killed_under_load_fails_no_query(cluster):
    with RetryWatch(cluster.query_node.url) as retries, QueryLoad(cluster.search) as load:
        time.sleep(1)
        victim = cluster.executors[1]
        killed_at = time.monotonic()
        victim.proc.kill()
        victim.proc.wait()
        wait_until(
            lambda: "pe-1" not in {node["node_id"] for node in cluster.state()["nodes"]},
            LEASE_TTL + 10,
            "the killed executor's lease to expire",
        )
        gone_after = time.monotonic() - killed_at
        time.sleep(1)
    assert not load.failures, load.failures[:3]
    assert load.answered > 0
    state = cluster.state()
    assert set(state["placement"]["first_choice_share"]) == {"pe-0", "pe-2"}, "placement converged"
    last_retry = retries.last_increase_after(killed_at)
    # Restarted under the same id, it is healthy again (its old mark is gone) and serves.
    victim.start()

    def served_by_victim() -> bool:
        cluster.search()
        return cluster.executor_fragments(victim) > 0

    wait_until(served_by_victim, 15, "the restarted executor to get fragments")
    assert serving_executors(cluster.state()) == {"pe-0", "pe-1", "pe-2"}
    print(f"\nSIGKILL: 0 failed of {load.answered} queries; last retry {last_retry} s after the kill; "
          f"record gone after {gone_after:.2f} s (lease TTL {LEASE_TTL} s)")


def test_a_graceful_shutdown_needs_no_retry(cluster):
    with RetryWatch(cluster.query_node.url) as retries, QueryLoad(cluster.search) as load:
        time.sleep(1)
        before = retries.retries()
        leaving = cluster.executors[2]
        assert leaving.stop(signal.SIGTERM) == 0
        wait_until(lambda: "pe-2" not in {node["node_id"] for node in cluster.state()["nodes"]}, 5,
                   "the record to go with the revoked lease")
        time.sleep(1)
        after = retries.retries()
    assert not load.failures, load.failures[:3]
    assert load.answered > 0
    assert after == before, f"{after - before} fragment retries during a graceful shutdown"
    print(f"\ngraceful: 0 failed of {load.answered} queries, 0 retries")


def test_the_standby_control_plane_takes_over(cluster):
    leader = wait_until(lambda: cluster.state()["leader"], 10, "a leader")
    standby = next(cp for cp in cluster.control_planes if cp.node_id != leader)
    victim = next(cp for cp in cluster.control_planes if cp.node_id == leader)
    with QueryLoad(cluster.search) as load:
        killed_at = time.monotonic()
        victim.stop(signal.SIGKILL)
        wait_until(lambda: standby.state()["leader"] == standby.node_id, LEASE_TTL + 10, "the standby to lead")
        took = time.monotonic() - killed_at
        # The new leader probes: an executor killed now gets marked unhealthy by it.
        cluster.executors[0].proc.kill()
        mark = wait_until(
            lambda: next((n for n in standby.state()["nodes"] if n["node_id"] == "pe-0" and not n["healthy"]), None),
            5, "the new leader to mark the dead executor",
        )
        time.sleep(0.5)
    assert not load.failures, load.failures[:3]
    assert load.answered > 0
    assert mark["unhealthy_reason"]
    print(f"\nleader failover: the standby led {took:.2f} s after the leader's SIGKILL")


def test_queries_survive_an_etcd_outage_and_a_node_joining_meanwhile_is_picked_up(cluster):
    with QueryLoad(cluster.search) as load:
        time.sleep(1)
        cluster.etcd.stop()
        before_outage = load.answered
        newcomer = cluster.executor(3).start()  # registers in the background, etcd is down
        cluster.executors.append(newcomer)
        time.sleep(30)
        answered_during_outage = load.answered
        cluster.etcd.start()
        wait_until(lambda: cluster.executor_fragments(newcomer) > 0, 20, "the newcomer to get fragments")
        time.sleep(1)
    assert not load.failures, load.failures[:3]
    assert answered_during_outage > before_outage, "queries kept being answered while etcd was down"
    assert serving_executors(cluster.state()) == {"pe-0", "pe-1", "pe-2", "pe-3"}
