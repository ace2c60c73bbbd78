#!/usr/bin/env python3
"""Writes the chart's Grafana dashboards (lancefleet-*.json beside this file) from the
definitions below: `python3 helm/lancefleet/dashboards/generate.py`. Edit this file, not
the JSON; integration-tests/python/test_observability.py fails when the JSON is not what
this file writes, and runs every panel's PromQL against a real Prometheus scraping a
running cluster.

Conventions: every panel has a description; every query names the `datasource` variable;
rates use `$__rate_interval`; process panels get the LanceFleet role from
`lancefleet_build_info{role}` (job names depend on how Prometheus scrapes, roles do not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"

# The role of each target, joined onto process_* and other shared metrics.
ROLE = "on(instance, job) group_left(role) lancefleet_build_info"
# REST requests of the LanceDB API (not /health or /metrics).
API = 'route=~"/v1/.*"'
# REST statuses and Flight codes that are the server's fault (used by the error panels and
# the LanceFleetHighErrorRate alert).
REST_SERVER_ERRORS = 'status=~"5.."'
FLIGHT_SERVER_ERRORS = 'code=~"Internal|Unavailable|DeadlineExceeded|Unknown|DataLoss"'


# --------------------------------------------------------------------------- builders


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    out = {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend or "__auto",
           "range": not instant, "instant": instant, "refId": ref}
    return out


def timeseries(title: str, description: str, targets: list[dict], unit: str = "short", *, stack: bool = False,
               min_zero: bool = True, max_value: float | None = None, width: int = 12) -> dict:
    defaults = {
        "unit": unit,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
                   "showPoints": "never", "spanNulls": True,
                   "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
        "color": {"mode": "palette-classic"},
    }
    if min_zero:
        defaults["min"] = 0
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": targets, "_width": width,
    }


def stat(title: str, description: str, targets: list[dict], unit: str = "short", *, thresholds=None,
         width: int = 6, decimals: int | None = None, text_mode: str = "auto") -> dict:
    steps = thresholds or [{"color": "green", "value": None}]
    defaults = {"unit": unit, "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": steps}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                    "orientation": "auto", "textMode": text_mode, "showPercentChange": False},
        "targets": targets, "_width": width,
    }


def table(title: str, description: str, targets: list[dict], *, width: int = 24, rename: dict | None = None) -> dict:
    transformations = [{"id": "merge", "options": {}}]
    if rename:
        transformations.append({"id": "organize", "options": {"excludeByName": {"Time": True},
                                                              "renameByName": rename}})
    return {
        "type": "table", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": transformations,
        "targets": targets, "_width": width,
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def ratio_thresholds(bad: float, ok: float) -> list[dict]:
    return [{"color": "red", "value": None}, {"color": "orange", "value": bad}, {"color": "green", "value": ok}]


def datasource_variable() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_variable(name: str, label: str, metric: str, label_name: str) -> dict:
    definition = f"label_values({metric}, {label_name})"
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": definition,
            "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "includeAll": True, "allValue": ".*", "multi": True, "hide": 0, "options": [], "refresh": 2,
            "regex": "", "sort": 1, "skipUrlSync": False}


def layout(items: list[dict]) -> list[dict]:
    """Grid positions, left to right, top to bottom; panel ids in order."""
    panels, x, y, row_height, next_id = [], 0, 0, 0, 1
    for item in items:
        panel = dict(item)
        if panel["type"] == "row":
            if x:
                y += row_height
            x, row_height = 0, 0
            panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            width = panel.pop("_width")
            height = 5 if panel["type"] == "stat" else 8
            if x + width > 24:
                x, y, row_height = 0, y + row_height, 0
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
            x += width
            row_height = max(row_height, height)
        panel["id"] = next_id
        next_id += 1
        panels.append(panel)
    return panels


def dashboard(uid: str, title: str, description: str, items: list[dict], variables=()) -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": True, "includeVars": True, "keepTime": True, "tags": ["lancefleet"],
                   "targetBlank": False, "title": "LanceFleet", "type": "dashboards"}],
        "panels": layout(items),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["lancefleet"],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
    }


def quantiles(metric: str, by: str, matchers: str = "", qs=(0.5, 0.99)) -> list[dict]:
    sel = f"{{{matchers}}}" if matchers else ""
    grouping = f"le, {by}" if by else "le"
    return [
        target(f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket{sel}[{RI}])))",
               f"p{int(q * 100)}" + (" {{" + by + "}}" if by else ""), ref=chr(ord("A") + i))
        for i, q in enumerate(qs)
    ]


# --------------------------------------------------------------------------- dashboards


def overview() -> dict:
    requests_total = (f"sum(rate(lancefleet_rest_requests_total{{{API}}}[{RI}])) + "
                      f"(sum(rate(lancefleet_flight_requests_total[{RI}])) or vector(0))")
    server_errors = (f"sum(rate(lancefleet_rest_requests_total{{{API}, {REST_SERVER_ERRORS}}}[{RI}]) or vector(0)) + "
                     f"(sum(rate(lancefleet_flight_requests_total{{{FLIGHT_SERVER_ERRORS}}}[{RI}])) or vector(0))")
    items = [
        row("Fleet"),
        stat("Processes by role", "LanceFleet processes Prometheus scrapes, by role (from lancefleet_build_info). "
             "A role that drops below its replica count has lost a process.",
             [target("count by (role) (lancefleet_build_info)", "{{role}}", instant=True)], width=8),
        stat("Scrape targets down", "Scrape targets whose last scrape failed (up == 0), by job: a process that is "
             "down or whose /metrics is unreachable. 0 is healthy.",
             [target("sum by (job) (1 - up)", "{{job}}", instant=True)],
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}], width=8),
        stat("Versions", "Processes by LanceFleet version and role: during a rolling upgrade two versions show; "
             "upgrade executors before query nodes.",
             [target("count by (version, role) (lancefleet_build_info)", "{{version}} {{role}}", instant=True)],
             width=8),
        stat("Control-plane leader", "Control-plane instances that hold the leader election (sum of "
             "lancefleet_control_leader). 1 is healthy; 0 means executor health is not probed.",
             [target("sum(lancefleet_control_leader)", "leaders", instant=True)],
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1},
                         {"color": "orange", "value": 2}]),
        stat("Unhealthy executors", "Plan executors the control-plane leader has marked unhealthy (failed probes); "
             "query nodes send them no fragments.",
             [target("max(lancefleet_control_unhealthy_executors)", "unhealthy", instant=True)],
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        stat("etcd has a leader", "Whether every etcd member sees a raft leader (min of etcd_server_has_leader). "
             "0: etcd cannot commit, so registrations, leases, events and the leader election stall.",
             [target("min(etcd_server_has_leader)", "has leader", instant=True)],
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        stat("Indexer queue lag", "Age of the oldest table change no indexer has handled yet (max over indexers). "
             "Minutes mean maintenance is falling behind the writes.",
             [target("max(lancefleet_indexer_queue_lag_seconds)", "lag", instant=True)], unit="s",
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300},
                         {"color": "red", "value": 900}]),
        row("Traffic"),
        timeseries("Requests per second", "LanceDB REST API requests (routes under /v1) and Arrow Flight / Flight SQL "
                   "calls answered per second by all query nodes.",
                   [target(f"sum(rate(lancefleet_rest_requests_total{{{API}}}[{RI}]))", "REST", "A"),
                    target(f"sum(rate(lancefleet_flight_requests_total[{RI}]))", "Flight", "B")], "reqps", width=8),
        timeseries("Server error ratio", "Share of requests that failed through the server's fault: REST 5xx and "
                   "Flight Internal/Unavailable/DeadlineExceeded/Unknown/DataLoss, over all REST /v1 requests and "
                   "Flight calls. Client errors (4xx, NotFound, InvalidArgument) are not counted here.",
                   [target(f"({server_errors}) / ({requests_total})", "server errors")], "percentunit", width=8),
        timeseries("Query latency p99", "99th percentile of REST query latency (POST /v1/table/{id}/query) over all "
                   "query nodes, from the lancefleet_rest_request_duration_seconds histogram.",
                   [target("histogram_quantile(0.99, sum by (le) (rate(lancefleet_rest_request_duration_seconds_bucket"
                           f"{{route=\"/v1/table/{{id}}/query\"}}[{RI}])))", "p99")], "s", width=8),
        timeseries("Cache hit ratio", "Share of the plan executors' object-cache chunk reads answered by memory or "
                   "disk rather than the object store, over all executors.",
                   [target(f"sum(rate(lancefleet_cache_hits_total[{RI}])) / "
                           f"(sum(rate(lancefleet_cache_hits_total[{RI}])) + "
                           f"sum(rate(lancefleet_cache_misses_total[{RI}])))", "hit ratio")],
                   "percentunit", max_value=1, width=8),
        timeseries("Object-store requests by role", "Requests to S3/GCS/Azure per second, by LanceFleet role: "
                   "executors read, query nodes list versions and write, indexers rewrite.",
                   [target(f"sum by (role) (rate(lancefleet_object_store_requests_total[{RI}]) * {ROLE})",
                           "{{role}}")], "reqps", width=8),
        timeseries("Fragments answered per second", "Plan fragments the query nodes got answered, by whether the "
                   "executor was the fragment's first placement choice (cache affinity) or another one.",
                   [target(f"sum by (choice) (rate(lancefleet_query_fragments_total[{RI}]))", "{{choice}}")],
                   "ops", stack=True, width=8),
        row("Processes"),
        timeseries("CPU by role", "CPU seconds used per second (cores) by all processes of each role "
                   "(process_cpu_seconds_total).",
                   [target(f"sum by (role) (rate(process_cpu_seconds_total[{RI}]) * {ROLE})", "{{role}}")],
                   "short", width=8),
        timeseries("Resident memory by process", "Resident memory of each LanceFleet process "
                   "(process_resident_memory_bytes), labelled by role and scrape instance. Executors hold the "
                   "memory tier of the object cache (cache.memory) on top of their working set.",
                   [target(f"process_resident_memory_bytes * {ROLE}", "{{role}} {{instance}}")], "bytes", width=8),
        timeseries("Open file descriptors", "Open file descriptors as a share of the process limit "
                   "(process_open_fds / process_max_fds), per process. Near 1, the process cannot open "
                   "sockets or files.",
                   [target(f"process_open_fds / process_max_fds * {ROLE}", "{{role}} {{instance}}")],
                   "percentunit", max_value=1, width=8),
        timeseries("Threads", "OS threads of each LanceFleet process (process_threads).",
                   [target(f"process_threads * {ROLE}", "{{role}} {{instance}}")], "short", width=8),
        timeseries("Uptime", "Seconds since each process started (from process_start_time_seconds); a drop to "
                   "zero is a restart.",
                   [target(f"(time() - process_start_time_seconds) * {ROLE}", "{{role}} {{instance}}")], "s", width=8),
        timeseries("Virtual memory", "Virtual memory of each LanceFleet process (process_virtual_memory_bytes).",
                   [target(f"process_virtual_memory_bytes * {ROLE}", "{{role}} {{instance}}")], "bytes", width=8),
    ]
    return dashboard("lancefleet-overview", "LanceFleet / Fleet overview",
                     "Every LanceFleet role at a glance: processes and versions, the control plane and etcd, "
                     "traffic, errors, latency, cache and the processes' CPU, memory and file descriptors.", items)


def query_nodes() -> dict:
    items = [
        row("REST API"),
        timeseries("Requests by route", "REST requests answered per second by route template "
                   "(/v1/table/{id}/query, /insert, ...), all query nodes.",
                   [target(f"sum by (route) (rate(lancefleet_rest_requests_total{{{API}}}[{RI}]))", "{{route}}")],
                   "reqps"),
        timeseries("Requests by status", "REST requests per second by HTTP status: 4xx are the clients' errors, 5xx "
                   "the server's.",
                   [target(f"sum by (status) (rate(lancefleet_rest_requests_total{{{API}}}[{RI}]))", "{{status}}")],
                   "reqps"),
        timeseries("Latency p50 by route", "Median REST latency per route, from the "
                   "lancefleet_rest_request_duration_seconds histogram (buckets 1 ms to 60 s).",
                   quantiles("lancefleet_rest_request_duration_seconds", "route", API, qs=(0.5,)), "s"),
        timeseries("Latency p99 by route", "99th percentile REST latency per route. Queries fan out to executors: "
                   "compare with the executor-call panels below when it rises.",
                   quantiles("lancefleet_rest_request_duration_seconds", "route", API, qs=(0.99,)), "s"),
        timeseries("Errors by code", "Failed REST requests and Flight calls per second by interface and error code "
                   "(ERROR_CODE_* for REST, the gRPC code for Flight). NOT_FOUND / INVALID_ARGUMENT are clients' "
                   "mistakes; INTERNAL, UNAVAILABLE, TIMEOUT are the cluster's.",
                   [target(f"sum by (interface, code) (rate(lancefleet_request_errors_total[{RI}]))",
                           "{{interface}} {{code}}")], "reqps"),
        timeseries("Requests in flight", "REST requests and Flight calls being served right now, by interface, all "
                   "query nodes.",
                   [target("sum by (interface) (lancefleet_requests_in_flight)", "{{interface}}")], "short"),
        row("Arrow Flight and Flight SQL"),
        timeseries("Flight calls by method and code", "Arrow Flight and Flight SQL calls per second by gRPC method "
                   "and the code they were answered with (Ok once a stream starts).",
                   [target(f"sum by (method, code) (rate(lancefleet_flight_requests_total[{RI}]))",
                           "{{method}} {{code}}")], "reqps"),
        timeseries("Flight latency by method", "p50 and p99 time until a Flight call's answer starts (planning for "
                   "SQL, the whole write for DoPut), by method.",
                   quantiles("lancefleet_flight_request_duration_seconds", "method"), "s"),
        row("Scatter over plan executors"),
        timeseries("Fan-out", "Executors one fragment query was sent to: p50 and p99 of "
                   "lancefleet_query_fanout_executors, and the mean. With few fragments per table the fan-out is "
                   "small; it grows with fragments and executors.",
                   [*quantiles("lancefleet_query_fanout_executors", "", qs=(0.5, 0.99)),
                    target(f"sum(rate(lancefleet_query_fanout_executors_sum[{RI}])) / "
                           f"sum(rate(lancefleet_query_fanout_executors_count[{RI}]))", "mean", ref="C")], "short"),
        timeseries("Fragment retries", "Fragments sent again to the next executor of their preference list per second "
                   "(the first one failed, timed out or is stopping). Bursts follow executor deaths and restarts.",
                   [target(f"sum(rate(lancefleet_query_fragment_retries_total[{RI}]))", "retries")], "ops"),
        timeseries("Hedged executor calls", "Executor calls that went to the next replica too, per second, by which "
                   "answered first (the primary or the hedge) and why: delay (unanswered after cluster.hedge_after; auto: "
                   "the lower median of the executors' recent p95s) or straggler (auto: far behind the other calls of its "
                   "query). Hedges winning often point at a slow executor.",
                   [target(f"sum by (winner, reason) (rate(lancefleet_query_hedged_calls_total[{RI}]))",
                           "{{winner}} ({{reason}})")],
                   "ops"),
        timeseries("Executor call errors by code", "Failed calls from query nodes to plan executors per second, by "
                   "error code: TIMEOUT (cluster.fragment_timeout passed), UNAVAILABLE (executor down or stopping), "
                   "INTERNAL (the fragment failed).",
                   [target(f"sum by (code) (rate(lancefleet_query_executor_errors_total[{RI}]))", "{{code}}")],
                   "ops"),
        timeseries("Slow executor calls", "Executor calls slower than cluster.slow_call (default 1 s) per second, by "
                   "executor: one executor standing out is overloaded, cold or on a slow disk.",
                   [target(f"sum by (executor) (rate(lancefleet_query_slow_executor_calls_total[{RI}]))",
                           "{{executor}}")], "ops"),
        timeseries("Event publish failures", "Committed writes whose change event could not be published to the "
                   "event bus (etcd) in the window: indexers and executors learn of those tables only at their "
                   "next change.",
                   [target(f"sum(increase(lancefleet_query_event_publish_failures_total[{RI}]))", "failures")],
                   "short"),
        timeseries("Query node CPU", "CPU cores used by each query node (it plans, merges and serializes answers).",
                   [target(f"rate(process_cpu_seconds_total[{RI}]) * on(instance, job) group_left() "
                           "lancefleet_build_info{role=~\"query-node|standalone\"}", "{{instance}}")], "short",
                   width=6),
        timeseries("Query node memory", "Resident memory of each query node.",
                   [target("process_resident_memory_bytes * on(instance, job) group_left() "
                           "lancefleet_build_info{role=~\"query-node|standalone\"}", "{{instance}}")], "bytes",
                   width=6),
    ]
    return dashboard("lancefleet-query-nodes", "LanceFleet / Query nodes",
                     "The query nodes: REST and Flight traffic, latency by route, errors by code, requests in "
                     "flight, and how queries scatter over the plan executors (fan-out, retries, failed and slow "
                     "executor calls).", items)


def executors() -> dict:
    sel = 'instance=~"$instance"'
    executor = 'on(instance, job) group_left() lancefleet_build_info{role="plan-executor"}'
    hits = f"sum by (instance, job) (rate(lancefleet_cache_hits_total{{{sel}}}[{RI}]))"
    misses = f"sum by (instance, job) (rate(lancefleet_cache_misses_total{{{sel}}}[{RI}]))"
    items = [
        row("Fragments"),
        timeseries("Fragments served by RPC", "Plan fragments received per second by RPC (execute: searches and "
                   "scans, count, analyze), selected executors.",
                   [target(f"sum by (rpc) (rate(lancefleet_executor_fragments_total{{{sel}}}[{RI}]))", "{{rpc}}")],
                   "ops", stack=True, width=8),
        timeseries("Fragments served by executor", "Plan fragments per second on each executor: placement spreads "
                   "fragments evenly, so one executor far above the others is taking a dead peer's share.",
                   [target(f"sum by (instance) (rate(lancefleet_executor_fragments_total{{{sel}}}[{RI}]))",
                           "{{instance}}")], "ops", width=8),
        timeseries("Fragment errors by code", "Plan fragments that failed on the executors per second, by error code "
                   "(INTERNAL: the scan failed; NOT_SUPPORTED: another wire version; NOT_FOUND: the pinned version "
                   "is gone).",
                   [target(f"sum by (code) (rate(lancefleet_executor_fragment_errors_total{{{sel}}}[{RI}]))",
                           "{{code}}")], "ops", width=8),
        timeseries("Placement affinity", "Share of fragments answered by their first placement choice "
                   "(lancefleet_query_fragments_total on the query nodes). Below 1 while executors join, leave or "
                   "fail: the others answer from a colder cache.",
                   [target(f"sum(rate(lancefleet_query_fragments_total{{choice=\"first\"}}[{RI}])) / "
                           f"sum(rate(lancefleet_query_fragments_total[{RI}]))", "first choice")],
                   "percentunit", max_value=1),
        timeseries("Prewarmed after maintenance", "Fragments and indexes the executors read into their cache after an "
                   "indexer's compaction or index build (what they own), per second.",
                   [target(f"sum by (what) (rate(lancefleet_executor_prewarm_total{{{sel}}}[{RI}]))", "{{what}}")],
                   "ops"),
        row("Object cache"),
        timeseries("Cache hit ratio by tier", "Share of chunk reads answered by the memory tier and by the disk tier "
                   "(the rest went to the object store), selected executors.",
                   [target(f"sum by (tier) (rate(lancefleet_cache_hits_total{{{sel}}}[{RI}])) / ignoring(tier) "
                           f"group_left() (sum(rate(lancefleet_cache_hits_total{{{sel}}}[{RI}])) + "
                           f"sum(rate(lancefleet_cache_misses_total{{{sel}}}[{RI}])))", "{{tier}}")],
                   "percentunit", stack=True, max_value=1, width=8),
        timeseries("Cache hit ratio by executor", "Hits over all chunk reads per executor. A restarted executor "
                   "starts cold in memory but keeps its disk tier (cache.disk_dir).",
                   [target(f"{hits} / ({hits} + {misses})", "{{instance}}")], "percentunit", max_value=1, width=8),
        timeseries("Bytes read by tier", "Bytes per second the executors read from the memory tier, the disk tier and "
                   "the object store (misses, and reads the cache bypasses).",
                   [target(f"sum by (tier) (rate(lancefleet_cache_read_bytes_total{{{sel}}}[{RI}]))", "{{tier}}")],
                   "Bps", stack=True, width=8),
        timeseries("Bytes from object storage by executor", "Bytes per second each executor fetched from the object "
                   "store: what its cache did not hold.",
                   [target(f"sum by (instance) (rate(lancefleet_cache_read_bytes_total{{tier=\"object_store\", {sel}}}"
                           f"[{RI}]))", "{{instance}}")], "Bps", width=8),
        timeseries("Index bytes fetched by executor", "Bytes per second of index files each executor fetched from "
                   "the object store: the indexes it opens. Vector index segments are placed with their fragments, so "
                   "each executor opens about its share of a vector index.",
                   [target(f"sum by (instance) (rate(lancefleet_cache_index_read_bytes_total"
                           f"{{tier=\"object_store\", {sel}}}[{RI}]))", "{{instance}}")], "Bps", width=8),
        timeseries("Memory tier: used and capacity", "Bytes held by each executor's memory tier "
                   "(lancefleet_cache_memory_usage_bytes) against its configured capacity (cache.memory).",
                   [target(f"lancefleet_cache_memory_usage_bytes{{{sel}}} * {executor}", "used {{instance}}", "A"),
                    target(f"lancefleet_cache_capacity_bytes{{tier=\"memory\", {sel}}} * {executor}",
                           "capacity {{instance}}", "B")], "bytes", width=8),
        timeseries("Disk tier capacity", "Configured capacity of each executor's disk tier (cache.disk; 0 when "
                   "cache.disk_dir is not set, memory only).",
                   [target(f"lancefleet_cache_capacity_bytes{{tier=\"disk\", {sel}}} * {executor}", "{{instance}}")],
                   "bytes", width=8),
        timeseries("Bypassed reads", "Reads that skipped the cache per second: mutable objects (manifests, version "
                   "hints) and conditional reads, always served by the object store.",
                   [target(f"sum by (instance, job) (rate(lancefleet_cache_bypassed_reads_total{{{sel}}}[{RI}])) * "
                           f"{executor}", "{{instance}}")], "ops"),
        timeseries("Chunk misses", "Chunk reads per second that neither tier held, per executor: each is a request "
                   "to the object store.",
                   [target(f"{misses} * {executor}", "{{instance}}")], "ops"),
        row("Object storage (every role)"),
        timeseries("Object-store requests by operation", "Requests to S3/GCS/Azure per second by operation (get, "
                   "get_range, head, put, list, ...) and role.",
                   [target(f"sum by (role, operation) (rate(lancefleet_object_store_requests_total[{RI}]) * {ROLE})",
                           "{{role}} {{operation}}")], "reqps", width=8),
        timeseries("Object-store latency p99 by operation", "99th percentile time until the store answers, by "
                   "operation; reads stream on after that.",
                   quantiles("lancefleet_object_store_request_duration_seconds", "operation", qs=(0.99,)), "s",
                   width=8),
        timeseries("Object-store errors by operation", "Object-store requests that failed per second, by role and "
                   "operation (a HEAD or GET of an object that does not exist counts too, e.g. a version that is "
                   "gone).",
                   [target(f"sum by (role, operation) (rate(lancefleet_object_store_errors_total[{RI}]) * {ROLE})",
                           "{{role}} {{operation}}")], "reqps", width=8),
        row("Processes"),
        timeseries("Executor CPU", "CPU cores used by each plan executor.",
                   [target(f"rate(process_cpu_seconds_total{{{sel}}}[{RI}]) * {executor}", "{{instance}}")],
                   "short"),
        timeseries("Executor resident memory", "Resident memory of each plan executor, cache memory tier included.",
                   [target(f"process_resident_memory_bytes{{{sel}}} * {executor}", "{{instance}}")], "bytes"),
    ]
    variables = [query_variable("instance", "Executor", "lancefleet_executor_fragments_total", "instance")]
    return dashboard("lancefleet-executors", "LanceFleet / Plan executors and cache",
                     "The plan executors: fragments served and failed, placement affinity, the object cache "
                     "(hit ratio per tier, bytes from the object store, memory used against capacity) and "
                     "object-store traffic of every role.", items, variables)


def indexer() -> dict:
    sel = 'table=~"$table"'
    items = [
        row("Tables"),
        timeseries("Fragments per table", "Fragments of each maintained table as the indexer last saw it. Many small "
                   "fragments slow queries; compaction (indexer.compact_min_small_fragments) brings them down.",
                   [target(f"max by (table) (lancefleet_indexer_table_fragments{{{sel}}})", "{{table}}")], "short"),
        timeseries("Unindexed rows per table", "Rows not covered by each table's vector index (all rows while it has "
                   "none). New rows are added to the index once indexer.optimize_min_unindexed_rows are waiting.",
                   [target(f"max by (table) (lancefleet_indexer_table_unindexed_rows{{{sel}}})", "{{table}}")],
                   "short"),
        timeseries("Index coverage per table", "Share of each table's rows its vector index covers (0 while it has "
                   "no vector index; tables get one at indexer.auto_index_min_rows rows).",
                   [target(f"min by (table) (lancefleet_indexer_table_index_coverage_ratio{{{sel}}})", "{{table}}")],
                   "percentunit", max_value=1),
        table("Tables now", "Each maintained table's fragments, unindexed rows and index coverage, as the indexers "
              "last saw them.",
              [target(f"max by (table) (lancefleet_indexer_table_fragments{{{sel}}})", "fragments", "A", instant=True),
               target(f"max by (table) (lancefleet_indexer_table_unindexed_rows{{{sel}}})", "unindexed", "B",
                      instant=True),
               target(f"min by (table) (lancefleet_indexer_table_index_coverage_ratio{{{sel}}})", "coverage", "C",
                      instant=True)],
              width=12, rename={"Value #A": "fragments", "Value #B": "unindexed rows", "Value #C": "coverage"}),
        row("Jobs"),
        timeseries("Jobs by kind and outcome", "Maintenance jobs finished per second by kind (compaction, "
                   "auto_index, requested_index, optimize_indexes, cleanup) and outcome (done, nothing, conflict: "
                   "a writer's commit won and the job is planned again, failed).",
                   [target(f"sum by (kind, outcome) (rate(lancefleet_indexer_jobs_total[{RI}]))",
                           "{{kind}} {{outcome}}")], "ops"),
        timeseries("Job duration by kind", "p50 and p99 maintenance job duration by kind, from "
                   "lancefleet_indexer_job_duration_seconds.",
                   quantiles("lancefleet_indexer_job_duration_seconds", "kind"), "s"),
        timeseries("Mean job duration by kind", "Mean maintenance job duration by kind in the window.",
                   [target(f"sum by (kind) (rate(lancefleet_indexer_job_duration_seconds_sum[{RI}])) / "
                           f"sum by (kind) (rate(lancefleet_indexer_job_duration_seconds_count[{RI}]))", "{{kind}}")],
                   "s"),
        row("Queue"),
        timeseries("Queue lag", "Age of the oldest table change not yet handled, per indexer. It grows when writes "
                   "outpace maintenance: add indexers or raise indexer.concurrent_tables.",
                   [target("max by (instance) (lancefleet_indexer_queue_lag_seconds)", "{{instance}}")], "s",
                   width=8),
        timeseries("Tables waiting", "Tables with changes not yet handled, per indexer.",
                   [target("max by (instance) (lancefleet_indexer_queue_tables)", "{{instance}}")], "short", width=8),
        timeseries("Change events", "Table change events the indexers received per second (every committed write "
                   "publishes one).",
                   [target(f"sum by (instance) (rate(lancefleet_indexer_events_total[{RI}]))", "{{instance}}")],
                   "ops", width=8),
    ]
    variables = [query_variable("table", "Table", "lancefleet_indexer_table_fragments", "table")]
    return dashboard("lancefleet-indexer", "LanceFleet / Indexer and tables",
                     "Background maintenance: each table's fragments, unindexed rows and index coverage, the "
                     "indexers' jobs and their durations, and how far the queue of table changes lags.", items,
                     variables)


def control_plane() -> dict:
    items = [
        row("Control plane"),
        timeseries("Leader by instance", "lancefleet_control_leader of each control-plane instance: exactly one "
                   "should be 1. A handover shows as the 1 moving to another instance.",
                   [target("max by (instance) (lancefleet_control_leader)", "{{instance}}")], "short", max_value=1,
                   width=8),
        timeseries("Probes by result", "Executor health probes per second by result (the leader probes every "
                   "executor each control.probe_interval).",
                   [target(f"sum by (result) (rate(lancefleet_control_probes_total[{RI}]))", "{{result}}")], "ops",
                   stack=True, width=8),
        timeseries("Unhealthy executors", "Executors marked unhealthy after control.unhealthy_after_probes failed "
                   "probes in a row, as the leader last saw the marks.",
                   [target("max(lancefleet_control_unhealthy_executors)", "unhealthy")], "short", width=8),
        timeseries("Probe failure ratio", "Share of the health probes that failed.",
                   [target(f"sum(rate(lancefleet_control_probes_total{{result=\"failed\"}}[{RI}]) or vector(0)) / "
                           f"sum(rate(lancefleet_control_probes_total[{RI}]))", "failed")],
                   "percentunit", max_value=1, width=8),
        timeseries("Plan executors scraped", "Plan executor processes Prometheus scrapes (lancefleet_build_info). "
                   "Compare with the executors the control plane sees healthy.",
                   [target("count(lancefleet_build_info{role=\"plan-executor\"})", "executors")], "short", width=8),
        timeseries("Control-plane CPU", "CPU cores used by each control-plane instance.",
                   [target(f"rate(process_cpu_seconds_total[{RI}]) * on(instance, job) group_left() "
                           "lancefleet_build_info{role=\"control-plane\"}", "{{instance}}")], "short", width=4),
        timeseries("Control-plane memory", "Resident memory of each control-plane instance.",
                   [target("process_resident_memory_bytes * on(instance, job) group_left() "
                           "lancefleet_build_info{role=\"control-plane\"}", "{{instance}}")], "bytes", width=4),
        row("etcd"),
        timeseries("etcd has leader", "etcd_server_has_leader of each etcd member: 0 means the member sees no raft "
                   "leader and nothing can be written (registrations, leases, events, the leader election).",
                   [target("max by (instance) (etcd_server_has_leader)", "{{instance}}")], "short", max_value=1,
                   width=8),
        timeseries("etcd leader changes", "Raft leader changes seen in the window. Frequent changes mean slow disks "
                   "or a flaky network between members; LanceFleet leases may expire meanwhile.",
                   [target(f"sum by (instance) (increase(etcd_server_leader_changes_seen_total[{RI}]))",
                           "{{instance}}")], "short", width=8),
        timeseries("etcd database size", "Size of each member's database file and the part in use; LanceFleet keeps "
                   "few keys, so growth points at a missing compaction.",
                   [target("etcd_mvcc_db_total_size_in_bytes", "total {{instance}}", "A"),
                    target("etcd_mvcc_db_total_size_in_use_in_bytes", "in use {{instance}}", "B")], "bytes",
                   width=8),
        timeseries("etcd WAL fsync p99", "99th percentile write-ahead-log fsync time per member: above about 10 ms "
                   "etcd becomes slow and leader elections follow.",
                   [target("histogram_quantile(0.99, sum by (le, instance) "
                           f"(rate(etcd_disk_wal_fsync_duration_seconds_bucket[{RI}])))", "{{instance}}")], "s",
                   width=8),
        timeseries("etcd proposals", "Raft proposals committed and failed per second: failures come with leader "
                   "elections or a lost quorum.",
                   [target(f"sum(rate(etcd_server_proposals_committed_total[{RI}]))", "committed", "A"),
                    target(f"sum(rate(etcd_server_proposals_failed_total[{RI}]))", "failed", "B")], "ops", width=8),
        timeseries("etcd keys", "Keys in etcd (LanceFleet registers one per node plus health marks, the election and "
                   "table locks).",
                   [target("max by (instance) (etcd_debugging_mvcc_keys_total)", "{{instance}}")], "short", width=8),
        timeseries("Nodes cut off from etcd", "LanceFleet nodes, by role, whose last listing or watch of etcd failed "
                   "(lancefleet_etcd_reachable 0). Many nodes at once: etcd itself is down; a single node: the path "
                   "from it to etcd (NetworkPolicy, DNS, authentication).",
                   [target(f"sum by (role) ((1 - lancefleet_etcd_reachable) * {ROLE})", "{{role}}")], "short",
                   width=24),
    ]
    return dashboard("lancefleet-control-plane", "LanceFleet / Control plane and etcd",
                     "The control plane (leader election, executor health probes, unhealthy executors) and the etcd "
                     "it runs on (leader, leader changes, database size, disk latency, proposals).", items)


DASHBOARDS = {
    "lancefleet-overview.json": overview,
    "lancefleet-query-nodes.json": query_nodes,
    "lancefleet-executors.json": executors,
    "lancefleet-indexer.json": indexer,
    "lancefleet-control-plane.json": control_plane,
}


def render() -> dict[str, str]:
    """{file name: JSON text} of every dashboard."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
