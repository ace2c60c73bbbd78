"""Processes of an etcd-backed LanceFleet cluster for the control-plane tests: a real etcd
(Debian's etcd-server, on free loopback ports with a temporary data directory) and
`lancefleet control-plane` instances. Executors and query nodes are the suite's usual
PlanExecutor / LanceFleetServer, pointed at etcd through LANCEFLEET_CONTROL__* variables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import READY_TIMEOUT_S, STOP_TIMEOUT_S, free_port, lancefleet_bin, wait_for_port
from lf_helpers import metric, parse_metrics


class Etcd:
    """One etcd member on loopback. `stop()` then `start()` keeps its data (an outage).

    With `tls` (CA, certificate and key paths) it serves clients over HTTPS and asks for
    client certificates that CA signed (`--client-cert-auth`); `client` (certificate and
    key) is what this helper itself presents."""

    def __init__(self, root: Path, tls: tuple[str, str, str] | None = None, client: tuple[str, str] | None = None):
        binary = shutil.which("etcd")
        if binary is None:
            pytest.fail("etcd is not installed (Debian package etcd-server; scripts/test.sh installs it)")
        self.binary = binary
        self.data_dir = Path(root) / "etcd-data"
        self.log_path = Path(root) / "etcd.log"
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.tls, self.client = tls, client

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def start(self) -> "Etcd":
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            self.binary, "--name", "lf", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"lf={peer}", "--logger", "zap", "--log-level", "warn",
        ]
        if self.tls:
            ca, cert, key = self.tls
            cmd += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"etcd exited with {self.proc.returncode}\n{self.log_path.read_text()[-3000:]}")
            try:
                secure = {"verify": self.tls[0], "cert": self.client} if self.tls else {}
                if requests.get(f"{self.endpoint}/health", timeout=1, **secure).json().get("health") == "true":
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)  # readiness polling only
        pytest.fail("etcd did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT_S)


def etcd_env(etcd: Etcd, cluster: str, lease_ttl: int = 3) -> dict:
    """Environment that points a lancefleet process at `etcd`."""
    return {
        "LANCEFLEET_CONTROL__ETCD_ENDPOINTS": f'["{etcd.endpoint}"]',
        "LANCEFLEET_CONTROL__CLUSTER": cluster,
        "LANCEFLEET_CONTROL__LEASE_TTL_SECONDS": str(lease_ttl),
        "LANCEFLEET_CONTROL__PROBE_INTERVAL_MS": "300",
        "LANCEFLEET_CONTROL__PROBE_TIMEOUT_MS": "500",
        "LANCEFLEET_CONTROL__STOPPING_PROPAGATION_MS": "500",
    }


class ControlPlane:
    """One `lancefleet control-plane` instance."""

    def __init__(self, root: Path, node_id: str, env: dict):
        self.node_id = node_id
        self.env = env
        self.port = free_port()
        self.log_path = Path(root) / f"{node_id}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ControlPlane":
        cmd = [lancefleet_bin(), "control-plane", "--listen", f"127.0.0.1:{self.port}", "--node-id", self.node_id]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1", **self.env},
            )
        wait_for_port(self.port, self.proc, f"control plane {self.node_id}", self.log_path)
        return self

    def state(self) -> dict:
        return requests.get(f"{self.url}/v1/cluster", timeout=10).json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)


class Indexer:
    """One `lancefleet indexer` process, logging JSON lines (parsed by `events()`)."""

    def __init__(self, root: Path, node_id: str, data_dir, env: dict):
        self.node_id = node_id
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.log_path = Path(root) / f"{node_id}.log"
        self.proc: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            lancefleet_bin(), "indexer", "--data-dir", str(self.data_dir), "--node-id", self.node_id,
            "--listen", f"127.0.0.1:{self.port}", "--log-format", "json",
            "--log-level", "info,lancefleet_indexer=debug", *extra,
        ]

    def environment(self) -> dict:
        return {**os.environ, "NO_COLOR": "1", **self.env}

    def start(self) -> "Indexer":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(),
            )
        wait_until(lambda: self.proc.poll() is not None or self.logged("indexer is following table changes"),
                   READY_TIMEOUT_S, f"indexer {self.node_id} to start")
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        return self

    def run_once(self) -> subprocess.CompletedProcess:
        """`lancefleet indexer --once`: maintains every table once and exits."""
        return subprocess.run(
            self.command("--once"), capture_output=True, text=True, env=self.environment(), timeout=300
        )

    def events(self) -> list[dict]:
        """Every JSON log line so far: {"timestamp", "level", "message", "target", fields...}."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def logged(self, message: str, **fields) -> list[dict]:
        return [
            event for event in self.events()
            if event.get("message") == message and all(event.get(key) == value for key, value in fields.items())
        ]

    def metrics(self) -> dict:
        return parse_metrics(requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Polls `condition` until it returns something truthy; returns it, or fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)  # polling an eventually-consistent cluster state
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def serving_executors(state: dict) -> set[str]:
    return {node["node_id"] for node in state["nodes"] if node.get("serving_fragments")}


class QueryLoad:
    """Threads running `run_query()` back to back until stopped, recording every failure
    and when each query finished."""

    def __init__(self, run_query, threads: int = 2):
        self.run_query = run_query
        self.failures: list[str] = []
        self.answered = 0
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_query()
                self.answered += 1
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                self.failures.append(repr(error))

    def __enter__(self) -> "QueryLoad":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=120)


class RetryWatch:
    """Samples the query node's retry counter in the background, to tell when the last
    retry after an event happened."""

    def __init__(self, url: str):
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def retries(self) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return metric(parse_metrics(text), "lancefleet_query_fragment_retries_total")

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((time.monotonic(), self.retries()))
            time.sleep(0.05)  # sampling interval

    def last_increase_after(self, start: float) -> float | None:
        """Seconds from `start` to the last sample where the counter rose, or None."""
        last = None
        for (_, before), (at, after) in zip(self.samples, self.samples[1:]):
            if after > before and at >= start:
                last = at - start
        return last

    def __enter__(self) -> "RetryWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
