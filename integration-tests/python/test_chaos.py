"""Chaos soak (issue 19): mixed load on a whole cluster while its processes are killed.

etcd, two control planes, three plan executors (R=2), a query node and an indexer over one
table. For CHAOS_SECONDS (75 in CI; `scripts/chaos-soak.sh` runs longer):

- one writer sends appends, upserts (`merge_insert` on `id`) and deletes through the
  `lancedb` client, and records which were acknowledged;
- readers run exact vector searches and full-text searches over the rows no write touches
  (REST) and SQL aggregates over them (Flight SQL, ADBC): every answer is checked;
- chaos: an executor, the indexer or the control-plane leader SIGKILLed and restarted,
  every few seconds at random, and etcd restarted once.

Afterwards: every acknowledged write is in the table exactly once, every unacknowledged
one wholly or not at all, no id twice; the cluster's answers (scan, vector, full-text, SQL)
equal single-process lance on the final version; LanceDB OSS opens the table. Failed and
wrong reads are counted and must be 0. The numbers are printed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import adbc_driver_flightsql.dbapi as flight_sql
import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from conftest import LanceFleetServer, PlanExecutor
from lf_control import ControlPlane, Etcd, Indexer, etcd_env, serving_executors, wait_until
from lf_helpers import connect_remote

pytestmark = pytest.mark.lifecycle

CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "75"))
TABLE = "chaos"
DIM = 8
BASE = 600  # rows 0..599: never written to, so reads over them have one right answer
LEASE_TTL = 3
MAINTENANCE = {
    "LANCEFLEET_INDEXER__TARGET_ROWS_PER_FRAGMENT": "500",
    "LANCEFLEET_INDEXER__COMPACT_MIN_SMALL_FRAGMENTS": "4",
    "LANCEFLEET_INDEXER__OPTIMIZE_MIN_UNINDEXED_ROWS": "50",
    "LANCEFLEET_INDEXER__CLEANUP_RETENTION_SECONDS": "30",
    "LANCEFLEET_INDEXER__RETRY_AFTER_MS": "300",
}


def rows(ids, texts, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(len(ids) * DIM, dtype=np.float32)), DIM),
        "text": pa.array(texts),
    })


def base_text(i: int) -> str:
    return f"doc {i} tok{i % 50}"


@dataclass
class Write:
    """One write the writer sent: what it changes, and whether it was acknowledged."""

    kind: str
    added: dict[int, str] = field(default_factory=dict)  # id -> text, new rows
    updated: dict[int, str] = field(default_factory=dict)  # id -> new text, existing rows
    deleted: list[int] = field(default_factory=list)
    acknowledged: bool = False
    error: str = ""


class Cluster:
    def __init__(self, root, name: str):
        self.root = root
        self.etcd = Etcd(root).start()
        self.env = {**etcd_env(self.etcd, name, LEASE_TTL), **MAINTENANCE}
        self.data = root / "data"
        dataset = lance.write_dataset(
            rows(np.arange(BASE), [base_text(i) for i in range(BASE)], seed=1),
            str(self.data / f"{TABLE}.lance"), max_rows_per_file=100,
        )
        dataset.create_scalar_index("text", "INVERTED")
        dataset.create_scalar_index("id", "BTREE")
        self.base = dataset.to_table()
        self.control_planes = [ControlPlane(root, f"cp-{i}", self.env).start() for i in range(2)]
        self.executors = [PlanExecutor(root, self.data, f"pe-{i}", self.env).start() for i in range(3)]
        (root / "qn").mkdir()
        self.query_node = LanceFleetServer(root / "qn", data_dir=self.data, executors=0, env=self.env).start()
        self.indexer = Indexer(root, "ix-0", self.data, self.env).start()
        wait_until(lambda: serving_executors(self.state()) == {"pe-0", "pe-1", "pe-2"}, 20, "three executors")

    def state(self) -> dict:
        for control_plane in self.control_planes:
            if control_plane.proc.poll() is None:
                try:
                    return control_plane.state()
                except Exception:  # noqa: BLE001 - the other one may answer
                    continue
        return {"nodes": [], "leader": None}

    def stop(self) -> None:
        self.query_node.stop()
        for process in [self.indexer, *self.executors, *self.control_planes]:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        self.etcd.stop()


@pytest.fixture
def cluster(tmp_path, request):
    cluster = Cluster(tmp_path, "chaos-" + request.node.name[-20:].replace("_", "-"))
    yield cluster
    cluster.stop()


class Chaos(threading.Thread):
    """Kills and restarts one process every few seconds; restarts etcd once, halfway."""

    def __init__(self, cluster: Cluster, seconds: float, rng: random.Random):
        super().__init__(daemon=True)
        self.cluster, self.seconds, self.rng = cluster, seconds, rng
        self.events: list[str] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def pause(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    def run(self) -> None:
        started = time.monotonic()
        etcd_done = False
        try:
            while not self.stopped.is_set() and time.monotonic() - started < self.seconds:
                self.pause(self.rng.uniform(2, 5))
                at = time.monotonic() - started
                if not etcd_done and at > self.seconds / 2:
                    etcd_done = True
                    self.cluster.etcd.proc.kill()
                    self.cluster.etcd.proc.wait()
                    self.pause(3)
                    self.cluster.etcd.start()
                    self.events.append(f"{at:5.1f}s etcd killed, restarted after 3 s")
                    continue
                victim = self.rng.choice(["executor", "executor", "indexer", "leader"])
                if victim == "executor":
                    process = self.rng.choice(self.cluster.executors)
                    name = process.node_id
                elif victim == "indexer":
                    process, name = self.cluster.indexer, "indexer"
                else:
                    leader = self.cluster.state().get("leader")
                    process = next((cp for cp in self.cluster.control_planes if cp.node_id == leader), None)
                    if process is None:
                        continue
                    name = f"leader {leader}"
                process.stop(signal.SIGKILL)
                down = self.rng.uniform(0.5, 3)
                self.pause(down)
                process.start()
                self.events.append(f"{at:5.1f}s {name} SIGKILLed, restarted after {down:.1f} s")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(error))


class Readers:
    """Threads reading the rows below BASE, which never change, and checking each answer."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.table = connect_remote(cluster.query_node.url).open_table(TABLE)
        vectors = np.array(cluster.base["vector"].to_pylist(), dtype=np.float32)
        rng = np.random.default_rng(9)
        self.queries = [rng.random(DIM, dtype=np.float32) for _ in range(5)]
        self.nearest = [np.argsort(((vectors - q) ** 2).sum(axis=1), kind="stable")[:10].tolist() for q in self.queries]
        self.answered = {"vector": 0, "fts": 0, "sql": 0}
        self.failed: list[str] = []
        self.wrong: list[str] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(kind,), daemon=True) for kind in self.answered]

    def vector(self, turn: int) -> None:
        index = turn % len(self.queries)
        got = (self.table.search(self.queries[index]).where(f"id < {BASE}", prefilter=True)
               .bypass_vector_index().limit(10).to_arrow()["id"].to_pylist())
        if got != self.nearest[index]:
            self.wrong.append(f"vector query {index}: {got} != {self.nearest[index]}")

    def fts(self, turn: int) -> None:
        token = turn % 50
        got = self.table.search(f"tok{token}", query_type="fts").limit(100).to_arrow()["id"].to_pylist()
        want = list(range(token, BASE, 50))
        if sorted(got) != want:
            self.wrong.append(f"full-text tok{token}: {sorted(got)} != {want}")

    def sql(self, connection) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute(f"SELECT count(*) AS n, sum(id) AS s FROM {TABLE} WHERE id < {BASE}")
            got = cursor.fetch_arrow_table().to_pylist()[0]
        finally:
            cursor.close()
        if (got["n"], got["s"]) != (BASE, BASE * (BASE - 1) // 2):
            self.wrong.append(f"sql: {got}")

    def loop(self, kind: str) -> None:
        turn = 0
        connection = flight_sql.connect(self.cluster.query_node.flight_url) if kind == "sql" else None
        try:
            while not self.stopped.is_set():
                turn += 1
                try:
                    if kind == "sql":
                        self.sql(connection)
                    else:
                        getattr(self, kind)(turn)
                    self.answered[kind] += 1
                except Exception as error:  # noqa: BLE001 - every failure is counted
                    self.failed.append(f"{kind}: {error!r}"[:500])
        finally:
            if connection is not None:
                connection.close()

    def __enter__(self) -> "Readers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=120)


class Writer:
    """Appends, upserts and deletes, one at a time, never touching the rows below BASE nor
    a row an unacknowledged write touched (so its outcome stays readable at the end)."""

    def __init__(self, cluster: Cluster, rng: random.Random):
        self.table = connect_remote(cluster.query_node.url).open_table(TABLE)
        self.rng = rng
        self.next_id = BASE
        self.writable: list[int] = []  # acknowledged rows above BASE, untouched by unknown writes
        self.writes: list[Write] = []

    def new_rows(self, count: int, label: str) -> dict[int, str]:
        ids = range(self.next_id, self.next_id + count)
        self.next_id += count
        return {i: f"doc {i} {label}" for i in ids}

    def step(self, turn: int) -> None:
        kind = self.rng.choices(["append", "upsert", "delete"], weights=[6, 2, 2])[0]
        if kind != "append" and len(self.writable) < 10:
            kind = "append"
        write = Write(kind)
        if kind == "append":
            write.added = self.new_rows(self.rng.randint(1, 20), "new")
            action = lambda: self.table.add(rows(list(write.added), list(write.added.values()), seed=turn))  # noqa: E731
        elif kind == "upsert":
            targets = self.rng.sample(self.writable, 3)
            write.updated = {i: f"doc {i} upsert{turn}" for i in targets}
            write.added = self.new_rows(2, f"upsert{turn}")
            changed = {**write.updated, **write.added}
            data = rows(list(changed), list(changed.values()), seed=turn)
            action = lambda: (self.table.merge_insert("id").when_matched_update_all()  # noqa: E731
                              .when_not_matched_insert_all().execute(data))
        else:
            write.deleted = self.rng.sample(self.writable, 3)
            action = lambda: self.table.delete(f"id IN ({', '.join(map(str, write.deleted))})")  # noqa: E731
        try:
            action()
            write.acknowledged = True
        except Exception as error:  # noqa: BLE001 - an unacknowledged write, checked at the end
            write.error = repr(error)[:300]
        self.writes.append(write)
        touched = set(write.updated) | set(write.deleted)
        self.writable = [i for i in self.writable if i not in touched]
        if write.acknowledged:
            self.writable += [i for i in write.updated if kind == "upsert"] + list(write.added)


def resolve(writes: list[Write], final: dict[int, str]) -> tuple[dict[int, str], list[str]]:
    """The table the writes make, taking each unacknowledged write as applied when the final
    table shows it; and every write found half applied."""
    expected = {i: base_text(i) for i in range(BASE)}
    halves = []
    for number, write in enumerate(writes):
        applied = write.acknowledged
        if not applied:
            signs = [i in final for i in write.added] + [final.get(i) == t for i, t in write.updated.items()]
            signs += [i not in final for i in write.deleted]
            applied = all(signs)
            if any(signs) and not applied:
                halves.append(f"write {number} ({write.kind}) half applied: {write}")
        if applied:
            expected.update(write.added)
            expected.update(write.updated)
            for i in write.deleted:
                expected.pop(i, None)
    return expected, halves


def test_mixed_load_survives_killed_processes_with_nothing_lost(cluster, capsys):
    seed = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    writer = Writer(cluster, rng)
    chaos = Chaos(cluster, CHAOS_SECONDS, random.Random(seed + 1))
    started = time.monotonic()
    with Readers(cluster) as readers:
        chaos.start()
        turn = 0
        while chaos.is_alive():
            turn += 1
            writer.step(turn)
        chaos.join()
    elapsed = time.monotonic() - started
    assert not chaos.errors, chaos.errors

    # Every process back; the cluster serves from all three executors again. The indexer is
    # stopped, so that the version compared below stays the latest one.
    wait_until(lambda: serving_executors(cluster.state()) == {"pe-0", "pe-1", "pe-2"}, 30, "three executors")
    assert cluster.indexer.stop() == 0, cluster.indexer.log_path.read_text()[-3000:]
    dataset = lance.dataset(str(cluster.data / f"{TABLE}.lance"))
    final_table = dataset.to_table(columns=["id", "text"])
    ids = final_table["id"].to_pylist()
    final = dict(zip(ids, final_table["text"].to_pylist()))
    expected, halves = resolve(writer.writes, final)
    acknowledged = sum(write.acknowledged for write in writer.writes)
    unacknowledged = [write for write in writer.writes if not write.acknowledged]

    report = [
        f"chaos soak: {elapsed:.0f} s, seed {seed}, {len(chaos.events)} events:",
        *(f"  {event}" for event in chaos.events),
        f"writes: {len(writer.writes)} sent, {acknowledged} acknowledged, {len(unacknowledged)} not "
        f"({sum(1 for w in unacknowledged if all(i in final for i in w.added) and w.added)} of them applied)",
        *(f"  unacknowledged {w.kind}: {w.error}" for w in unacknowledged[:5]),
        f"reads: {readers.answered} answered, {len(readers.failed)} failed, {len(readers.wrong)} wrong",
        *(f"  failed {failure}" for failure in readers.failed[:5]),
        f"final table: {len(ids)} rows at version {dataset.version}, {len(dataset.get_fragments())} fragments",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(report))

    assert len(ids) == len(set(ids)), "an id is in the table twice"
    assert not halves, halves[:3]
    assert final == expected, (
        f"{len(set(final) ^ set(expected))} ids differ, "
        f"{sum(final.get(i) != t for i, t in expected.items())} rows differ")
    assert not readers.wrong, readers.wrong[:3]
    assert not readers.failed, readers.failed[:3]
    assert all(readers.answered.values()), readers.answered
    assert acknowledged > 0

    # The cluster answers as single-process lance does on the final version.
    table = connect_remote(cluster.query_node.url).open_table(TABLE)
    assert table.count_rows() == dataset.count_rows()
    scanned = table.search().select(["id", "text"]).limit(len(ids) + 10).to_arrow().sort_by("id")
    assert scanned.select(["id", "text"]).equals(final_table.sort_by("id"))
    for q in np.random.default_rng(11).random((3, DIM), dtype=np.float32):
        got = table.search(q).bypass_vector_index().limit(10).to_arrow()["id"].to_pylist()
        want = dataset.to_table(columns=["id"], nearest={"column": "vector", "q": q, "k": 10, "use_index": False})
        assert got == want["id"].to_pylist()
    got = table.search("tok7", query_type="fts").limit(100).to_arrow()
    want = dataset.to_table(columns=["id"], full_text_query="tok7", limit=100)
    assert sorted(got["id"].to_pylist()) == sorted(want["id"].to_pylist())
    assert np.allclose(sorted(got["_score"].to_pylist()), sorted(want["_score"].to_pylist()), rtol=1e-5)
    with flight_sql.connect(cluster.query_node.flight_url) as connection:
        cursor = connection.cursor()
        cursor.execute(f"SELECT count(*) AS n, sum(id) AS s FROM {TABLE}")
        assert cursor.fetch_arrow_table().to_pylist()[0] == {"n": len(ids), "s": sum(ids)}
        cursor.close()
    oss = lancedb.connect(str(cluster.data)).open_table(TABLE)
    assert oss.count_rows() == len(ids)
