"""Metrics, dashboards, alert rules and `lancefleet status`, against a real Prometheus and a
running cluster.

One cluster for the module, on S3 (moto) so object-store metrics exist: etcd, 3 plan
executors, 2 control-plane instances, an indexer and a query node (`lancefleet
query-node`), with `cluster.slow_call` 1 ms (every executor call is a "slow take"),
`cluster.fragment_timeout` 1.5 s and `cluster.hedge_after` 250 ms. Debian's `prometheus`
scrapes every /metrics (etcd's too) each second while a short mixed load runs: REST creates
and appends through the `lancedb` client, an FTS index request the indexer builds, an
automatic vector index and compactions, vector / filtered / full-text searches, counts and
scans, Flight SQL and Flight DoGet, requests that fail (a missing table, a missing version,
a filter that fails on the executors), and one executor stopped (SIGSTOP) until the control
plane marks it unhealthy, so its calls are hedged (or time out and are retried) and its
health probes fail.

- every panel of every dashboard in helm/lancefleet/dashboards, its Grafana variables
  substituted ($__rate_interval -> 30s, `=~"$var"` -> `=~".*"`), returns series with values
  over the load through Prometheus' HTTP API (an empty answer fails, naming the panel); so
  does every dashboard variable's label_values() query;
- the dashboards are what dashboards/generate.py writes, and every panel has a description,
  the `datasource` variable, and rate windows of `$__rate_interval`;
- `promtool check rules` on alerts/*.yaml and `promtool test rules` on alerts/tests/*.yaml,
  with a test group per alert that sees it fire and sees it not fire; every metric and
  label the rules name exists in the real Prometheus;
- `promtool check metrics` on every role's /metrics finds nothing;
- docs/observability.md lists every `lancefleet_*` metric each role serves, with its type,
  labels and roles, and every metric it lists is served by some role (a `standalone`
  process is checked too);
- `lancefleet status` through a pseudo-terminal shows every node of /v1/cluster with its
  role, address and health, the leader and the tables; `--json` carries /v1/cluster;
  `--watch 1` redraws, and stops on Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import requests
import yaml
from lancedb.index import FTS

from conftest import BUCKET, lancefleet_bin, s3_env, storage_options
from lf_control import wait_until
from lf_helpers import connect_remote, json_body, metric, parse_metrics, query_body, raw_request, write_fragments
from lf_observe import (
    ALERTS, DASHBOARDS, DOC, Fleet, Prometheus, QueryNode, all_panels, dashboard_files, dashboard_queries,
    lancefleet_metric_names, substitute,
)

pytestmark = pytest.mark.lifecycle

TABLE = "observed"
SPREAD = "spread"  # written by lance directly: 12 fragments, never compacted
DIM = 16
ROLES = ("query-node", "plan-executor", "control-plane", "indexer")
PROMTOOL = "promtool"


def rows(start: int, count: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + count)
    words = ["river", "stone", "bridge", "forest"]
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(count * DIM, dtype=np.float32)), DIM),
        "text": [f"doc {i} {words[i % 4]} {words[(i // 4) % 4]}" for i in ids],
    })


class Load:
    """The mixed load; remembers when it ran and what it saw."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.url = fleet.query_node.url
        self.db = connect_remote(self.url)
        self.started = self.finished = None
        self.notes: list[str] = []

    def failing_request(self, body: dict, table: str = TABLE, expected: int = 404) -> None:
        status, headers, text = raw_request(self.url, "POST", f"/v1/table/{table}/query/", json_body(body),
                                            {"content-type": "application/json"})
        assert status == expected, (status, text[:300])
        assert headers.get("x-request-id"), headers

    def searches(self, table, rng, rounds: int) -> None:
        for _ in range(rounds):
            table.search(rng.random(DIM, dtype=np.float32)).limit(10).to_arrow()
            table.search(rng.random(DIM, dtype=np.float32)).where("id % 3 = 0", prefilter=True).limit(5).to_arrow()
            table.search("river", query_type="fts").limit(5).to_arrow()
            table.search().where("id < 100").limit(20).to_arrow()
            table.count_rows("id > 10")

    def flight(self) -> None:
        import adbc_driver_flightsql.dbapi as flight_sql
        import pyarrow.flight as flight

        with flight_sql.connect(self.fleet.query_node.flight_url) as conn:
            cursor = conn.cursor()
            cursor.execute(f'SELECT count(*) AS n FROM "{TABLE}" WHERE id > 5')
            assert cursor.fetch_arrow_table()["n"][0].as_py() > 0
            cursor.close()
        client = flight.connect(self.fleet.query_node.flight_url)
        ticket = {"table": TABLE, "vector": [0.5] * DIM, "k": 3}
        assert client.do_get(flight.Ticket(json.dumps(ticket))).read_all().num_rows == 3
        missing = {"table": "no_such_table", "vector": [0.5] * DIM, "k": 3}
        with pytest.raises(KeyError):  # pyarrow's FlightError for NOT_FOUND is an ArrowKeyError
            client.do_get(flight.Ticket(json.dumps(missing))).read_all()
        client.close()

    def failures(self) -> None:
        """Requests that fail: a missing table, a missing version (HEAD errors on the object
        store), a filter that fails on the executors' data (their fragments fail; the client's
        error, a 400)."""
        with pytest.raises(ValueError, match="not found"):
            self.db.open_table("no_such_table")
        self.failing_request(query_body([0.1] * DIM, k=3), table="no_such_table")
        self.failing_request(query_body(None, k=3, version=999))
        self.failing_request(query_body(None, k=3, filter="cast(text as int) > 3"), expected=400)

    def run(self) -> None:
        """About 20 s. Each kind of event happens at least twice, seconds apart: a labelled
        series is born with its first event, so rate() sees only the ones after it."""
        self.started = time.time()
        rng = np.random.default_rng(3)
        table = self.db.create_table(TABLE, rows(0, 400, 0))
        for batch in range(1, 9):  # small appends: the indexer compacts them and builds the vector index
            table.add(rows(batch * 400, 400, batch))
        # A client's index request: the indexer builds it (requested_index job).
        table.create_index("text", config=FTS(), wait_timeout=timedelta(seconds=60))
        self.searches(table, rng, 3)
        self.flight()
        self.failures()
        # The executor that answered a search of SPREAD is stopped (SIGSTOP) until the control
        # plane has marked it unhealthy (2 failed probes) and a scrape or two later: the next
        # searches time out on it (1.5 s) and are retried on the fragments' next executor.
        spread = self.db.open_table(SPREAD)
        before = [self.executed(e) for e in self.fleet.executors]
        spread.search(rng.random(DIM, dtype=np.float32)).limit(5).to_arrow()
        stopped = max(self.fleet.executors, key=lambda e: self.executed(e) - before[self.fleet.executors.index(e)])
        stopped.proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.unhealthy(stopped.node_id):
                spread.search(rng.random(DIM, dtype=np.float32)).limit(5).to_arrow()
            assert self.unhealthy(stopped.node_id), f"{stopped.node_id} was never marked unhealthy"
            until = time.monotonic() + 2
            while time.monotonic() < until:
                spread.search(rng.random(DIM, dtype=np.float32)).limit(5).to_arrow()
        finally:
            stopped.proc.send_signal(signal.SIGCONT)
        self.searches(table, rng, 3)
        self.flight()
        self.failures()
        wait_until(lambda: self.indexed(table), 60, "the vector and FTS indexes built")
        for batch in range(9, 15):  # more appends: compacted and added to the indexes again
            table.add(rows(batch * 400, 400, batch))
        self.searches(table, rng, 4)
        self.finished = time.time()

    @staticmethod
    def executed(executor) -> float:
        return metric(executor.metrics(), "lancefleet_executor_fragments_total", rpc="execute")

    def unhealthy(self, node_id: str) -> bool:
        return any(node["node_id"] == node_id and node.get("healthy") is False for node in self.fleet.state()["nodes"])

    def indexed(self, table) -> bool:
        kinds = {index.index_type for index in table.list_indices()}
        return {"FTS", "IvfPq"} <= kinds


@pytest.fixture(scope="module")
def observed(tmp_path_factory, moto):
    root = tmp_path_factory.mktemp("observed")
    env = {**s3_env(moto), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "LANCEFLEET_INDEXER__AUTO_INDEX_MIN_ROWS": "2000",
           "LANCEFLEET_INDEXER__COMPACT_MIN_SMALL_FRAGMENTS": "6",
           "LANCEFLEET_INDEXER__OPTIMIZE_MIN_UNINDEXED_ROWS": "100",
           "LANCEFLEET_INDEXER__RETRY_AFTER_MS": "300"}
    query_env = {"LANCEFLEET_CLUSTER__SLOW_CALL": "1ms", "LANCEFLEET_CLUSTER__FRAGMENT_TIMEOUT": "1500ms",
                 "LANCEFLEET_CLUSTER__HEDGE_AFTER": "250ms"}
    rng = np.random.default_rng(5)
    write_fragments(f"s3://{BUCKET}/observed/{SPREAD}.lance", rng.random((1200, DIM), dtype=np.float32), 12,
                    storage_options(moto))
    fleet = Fleet(root, f"s3://{BUCKET}/observed", cluster="observed", env=env, query_env=query_env,
                  lease_ttl=10).start()
    prometheus = None
    try:
        (root / "prometheus").mkdir()
        prometheus = Prometheus(root / "prometheus", fleet.metrics_targets()).start()
        prometheus.wait_all_up()
        load = Load(fleet)
        load.run()
        time.sleep(3)  # the last scrapes after the load
        yield fleet, prometheus, load
    finally:
        if prometheus is not None:
            prometheus.stop()
        fleet.stop()


# --------------------------------------------------------------------------- dashboards


def finite(values) -> bool:
    return any(math.isfinite(float(value)) for _, value in values)


def test_every_dashboard_panel_returns_series_from_prometheus(observed):
    fleet, prometheus, load = observed
    start, end = load.started, time.time()
    empty, no_values, checked = [], [], 0
    for path in dashboard_files():
        for title, ref, expr in dashboard_queries(path):
            answer = requests.get(f"{prometheus.url}/api/v1/query_range", timeout=30, params={
                "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "2s"}).json()
            assert answer["status"] == "success", f"{path.name} / {title} / {ref}: {answer.get('error')}\n{expr}"
            series = answer["data"]["result"]
            checked += 1
            if not series:
                empty.append(f"{path.name} / {title} / {ref}: {expr}")
            elif not any(finite(s["values"]) for s in series):
                no_values.append(f"{path.name} / {title} / {ref}: {expr}")
    assert checked >= 60, checked
    assert not empty, "panels with no series:\n" + "\n".join(empty)
    assert not no_values, "panels whose series are NaN throughout the load:\n" + "\n".join(no_values)
    print(f"\n{checked} panel queries answered by Prometheus over {end - start:.0f} s of load")


def test_every_dashboard_variable_has_values(observed):
    _fleet, prometheus, _load = observed
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "datasource":
                assert variable["query"] == "prometheus"
                continue
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert match, f"{path.name}: variable {variable['name']}: {variable['definition']}"
            metric, label = match.groups()
            assert prometheus.query(f"count by ({label}) ({metric})"), f"{path.name}: ${variable['name']} has no values"


def test_dashboards_are_generated_and_documented():
    generated = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
                               capture_output=True, text=True, timeout=60)
    assert generated.returncode == 0, generated.stderr
    files = dashboard_files()
    assert {p.name for p in files} >= {"lancefleet-overview.json", "lancefleet-query-nodes.json",
                                       "lancefleet-executors.json", "lancefleet-indexer.json",
                                       "lancefleet-control-plane.json"}
    uids = set()
    doc = DOC.read_text()
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids and len(dashboard["uid"]) <= 40
        uids.add(dashboard["uid"])
        assert dashboard["title"] in doc, f"{dashboard['title']} is not described in docs/observability.md"
        ids = [panel["id"] for panel in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            where = f"{path.name} / {panel['title']}"
            assert len(panel.get("description", "")) >= 30, f"{where}: no description"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], where
            assert f"**{panel['title']}**" in doc, f"{where}: not described in docs/observability.md"
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], where
                windows = re.findall(r"\[([^\]]+)\]", target["expr"])
                assert all(w == "$__rate_interval" for w in windows), f"{where}: windows {windows}"
                substitute(target["expr"], dashboard)  # only known variables, only in =~ matchers


# --------------------------------------------------------------------------- alert rules


def rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.yaml"))


def test_promtool_checks_the_alert_rules():
    for path in rule_files():
        result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    alerts = {}
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert "alert" in rule, f"{path.name}: only alerting rules here: {rule}"
                annotations = rule.get("annotations", {})
                assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
                assert annotations.get("summary") and len(annotations.get("description", "")) >= 150, rule["alert"]
                alerts[rule["alert"]] = rule
    wanted = {"LanceFleetExecutorDown", "LanceFleetNoControlPlaneLeader", "LanceFleetEtcdUnreachable",
              "LanceFleetHighErrorRate", "LanceFleetQueryLatencyHigh", "LanceFleetCacheHitRatioLow",
              "LanceFleetIndexerFallingBehind", "LanceFleetUnindexedRowsHigh"}
    assert wanted <= set(alerts), sorted(wanted - set(alerts))
    doc = DOC.read_text()
    for name in alerts:
        assert f"### {name}" in doc, f"{name} has no section in docs/observability.md"


def test_promtool_unit_tests_see_every_alert_fire_and_not_fire():
    tests = sorted((ALERTS / "tests").glob("*.yaml"))
    assert tests
    for path in tests:
        result = subprocess.run([PROMTOOL, "test", "rules", path.name], cwd=path.parent,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    fired, quiet = set(), set()
    for path in tests:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for path in rule_files()
              for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}
    assert alerts <= fired, f"alerts never seen firing: {sorted(alerts - fired)}"
    assert alerts <= quiet, f"alerts never seen quiet: {sorted(alerts - quiet)}"


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matchers text) of every vector selector in `expr` (quotes respected)."""
    found, i = [], 0
    keywords = {"sum", "max", "min", "count", "rate", "increase", "by", "and", "or", "unless", "on", "ignoring",
                "group_left", "group_right", "histogram_quantile", "vector", "bool", "avg", "without", "time",
                "absent", "le", "offset"}
    while i < len(expr):
        match = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(expr, i)
        if not match or (i and (expr[i - 1].isalnum() or expr[i - 1] in "_\"$.")):
            i += 1
            continue
        name, i = match.group(), match.end()
        matchers = ""
        if i < len(expr) and expr[i] == "{":
            depth_end, quoted = i + 1, False
            while expr[depth_end] != "}" or quoted:
                if expr[depth_end] == '"' and expr[depth_end - 1] != "\\":
                    quoted = not quoted
                depth_end += 1
            matchers, i = expr[i + 1:depth_end], depth_end + 1
        if name not in keywords and re.match(r"lancefleet_|etcd_|process_|up$", name):
            found.append((name, matchers))
    return found


def test_alert_rules_refer_to_series_prometheus_has(observed):
    """Against the real Prometheus scraping the cluster, every alert expression evaluates
    without error, and every metric it names has series there carrying the labels its
    matchers use (a typo in a metric or label name would make an alert that never fires)."""
    _fleet, prometheus, _load = observed
    problems = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                prometheus.query(rule["expr"])  # raises on a PromQL error
                for name, matchers in selectors(rule["expr"]):
                    labels = set(re.findall(r"(\w+)\s*=~?", matchers))
                    series = prometheus.query(f'count by ({", ".join(sorted(labels)) or "__name__"}) '
                                              f'({{__name__="{name}"}})')
                    if not series:
                        problems.append(f"{rule['alert']}: no series of {name}")
                    elif any(label not in s["metric"] for s in series for label in labels):
                        problems.append(f"{rule['alert']}: {name} has no label among {sorted(labels)}")
                    elif name == "up" and not prometheus.query(f"up{{{matchers}}}"):
                        problems.append(f"{rule['alert']}: up{{{matchers}}} matches no scrape job")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- /metrics


def test_promtool_check_metrics_on_every_role(observed):
    fleet, _prometheus, _load = observed
    findings = []
    for role, urls in fleet.role_metrics_urls().items():
        text = requests.get(urls[0], timeout=10).text
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            findings.append(f"{role}: {(result.stdout + result.stderr).strip()}")
    assert not findings, "promtool check metrics:\n" + "\n".join(findings)


def documented_metrics() -> dict[str, dict]:
    """{name: {type, labels, roles}} from the reference table of docs/observability.md."""
    metrics = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`(lancefleet_[a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if match:
            name, kind, labels, roles = match.groups()
            metrics[name] = {
                "type": kind.strip(),
                "labels": set(re.findall(r"`(\w+)`", labels)),
                "roles": {role.strip() for role in roles.split(",") if role.strip()},
            }
    return metrics


def served_labels(text: str, family: str) -> set[str]:
    labels = set()
    for (name, pairs) in parse_metrics(text):
        if name == family or re.fullmatch(re.escape(family) + r"_(bucket|sum|count)", name):
            labels |= {key for key, _ in pairs}
    return labels - {"le"}


@pytest.fixture(scope="module")
def standalone_metrics(tmp_path_factory):
    """/metrics of a `standalone` process over a local directory after a write and a query."""
    root = tmp_path_factory.mktemp("standalone")
    node = QueryNode(root, root / "data", {"LANCEFLEET_INDEXER__EMBEDDED": "true"}, node_id="standalone",
                     role="standalone").start()
    try:
        table = connect_remote(node.url).create_table("t", rows(0, 200, 1))
        table.search([0.5] * DIM).limit(3).to_arrow()
        wait_until(lambda: "lancefleet_indexer_table_fragments{" in node.metrics_text(), 30, "the embedded indexer")
        return node.metrics_text()
    finally:
        node.stop()


def test_metrics_reference_matches_what_every_role_serves(observed, standalone_metrics):
    fleet, _prometheus, _load = observed
    documented = documented_metrics()
    assert len(documented) >= 30, f"the reference table of {DOC.name} was not found"
    texts = {role: [requests.get(url, timeout=10).text for url in urls]
             for role, urls in fleet.role_metrics_urls().items()}
    texts["standalone"] = [standalone_metrics]
    served_anywhere, problems = set(), []
    for role, role_texts in texts.items():
        for text in role_texts:
            for name, kind in lancefleet_metric_names(text).items():
                served_anywhere.add(name)
                doc = documented.get(name)
                if doc is None:
                    problems.append(f"{name} ({role}) is served but not documented")
                    continue
                if role not in doc["roles"]:
                    problems.append(f"{name} is served by {role}, documented for {sorted(doc['roles'])}")
                if kind != doc["type"]:
                    problems.append(f"{name} is a {kind}, documented as {doc['type']}")
                labels = served_labels(text, name)
                has_samples = any(n == name or n.startswith(name + "_") for n, _ in parse_metrics(text))
                if has_samples and labels != doc["labels"]:
                    problems.append(f"{name} has labels {sorted(labels)} on {role}, documented {sorted(doc['labels'])}")
    for name in documented:
        if name not in served_anywhere:
            problems.append(f"{name} is documented but no role served it")
    assert not problems, "\n".join(sorted(set(problems)))


# --------------------------------------------------------------------------- lancefleet status


def run_in_pty(argv: list[str], seconds: float | None = None, columns: int = 160) -> tuple[int | None, str]:
    """Runs `argv` with a pseudo-terminal as its stdin, stdout and stderr; returns its exit
    code and everything it wrote. With `seconds`, SIGINT (Ctrl-C) after that long; a
    process still running 10 s after it (or 60 s after its start) is killed: code None."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    output = b""
    started = time.monotonic()
    interrupted_at = None
    hung = False
    while True:
        now = time.monotonic()
        if seconds is not None and interrupted_at is None and now - started > seconds:
            proc.send_signal(signal.SIGINT)
            interrupted_at = now
        if (interrupted_at is not None and now - interrupted_at > 10) or now - started > 60:
            proc.kill()
            hung = True
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=20)
    return (None if hung else code), output.decode(errors="replace")


def status_line(text: str, node_id: str) -> str:
    lines = [line for line in text.splitlines() if line.split()[:1] == [node_id]]
    assert len(lines) == 1, f"{node_id}: {lines}\n{text}"
    return lines[0]


def test_status_shows_every_node_and_the_leader(observed):
    fleet, _prometheus, _load = observed
    control_plane = fleet.control_planes[1].url  # the standby answers as well as the leader
    wait_until(lambda: all(n["healthy"] for n in requests.get(f"{control_plane}/v1/cluster", timeout=10).json()["nodes"]
                           if n["role"] == "plan-executor"), 30, "every executor healthy again")
    argv = [lancefleet_bin(), "status", "--url", control_plane, "--query-node", fleet.query_node.url]
    code, text = run_in_pty(argv)
    state = requests.get(f"{control_plane}/v1/cluster", timeout=10).json()
    assert code == 0, text
    text = text.replace("\r\n", "\n")
    assert state["leader"] and f"leader {state['leader']}" in text.splitlines()[0], text
    roles = {node["role"] for node in state["nodes"]}
    assert {"plan-executor", "control-plane", "query-node", "indexer"} <= roles, roles
    assert len(state["nodes"]) == 7, [n["node_id"] for n in state["nodes"]]
    for node in state["nodes"]:
        line = status_line(text, node["node_id"])
        assert node["role"] in line and node["address"] in line, (line, node)
        health = "stopping" if node.get("stopping") else ("ok" if node.get("healthy", True) else "unhealthy")
        assert health in line, (line, node)
        share = state["placement"]["first_choice_share"].get(node["node_id"])
        if share is not None:
            assert f"{share * 100:.1f}%" in line, (line, share)
        if node["role"] == "plan-executor":
            assert re.search(r"\d+\.\d%\s*$", line), f"no cache hit ratio: {line}"
    db = connect_remote(fleet.query_node.url)
    for name in (TABLE, SPREAD):
        line = status_line(text, name)
        assert str(db.open_table(name).count_rows()) in line.split(), line


def test_status_json_and_watch(observed):
    fleet, _prometheus, _load = observed
    control_plane = fleet.control_planes[0].url
    argv = [lancefleet_bin(), "status", "--url", control_plane, "--query-node", fleet.query_node.url]
    code, text = run_in_pty(argv + ["--json"])
    assert code == 0, text
    view = json.loads(text)
    state = requests.get(f"{control_plane}/v1/cluster", timeout=10).json()
    assert view["cluster"]["leader"] == state["leader"]
    assert {n["node_id"] for n in view["cluster"]["nodes"]} == {n["node_id"] for n in state["nodes"]}
    executors = {n["node_id"] for n in state["nodes"] if n["role"] == "plan-executor"}
    ratios = view["cache_hit_ratio"]
    assert executors <= set(ratios) and all(0 <= ratios[e] <= 1 for e in executors), ratios
    db = connect_remote(fleet.query_node.url)
    assert {t["table"]: t["rows"] for t in view["tables"]} == {
        name: db.open_table(name).count_rows() for name in (TABLE, SPREAD)}

    code, text = run_in_pty(argv + ["--watch", "1"], seconds=2.6)
    assert code is not None, f"--watch did not stop within 10 s of Ctrl-C:\n{text}"
    assert code == 0, text
    frames = [frame for frame in text.split("\x1b[2J\x1b[H") if frame.strip()]
    assert len(frames) >= 2, f"--watch 1 drew {len(frames)} frame(s) in 2.6 s:\n{text}"
    for frame in frames:
        assert f"leader {state['leader']}" in frame and all(e in frame for e in executors), frame
