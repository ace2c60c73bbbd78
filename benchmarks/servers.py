"""Starting LanceFleet for a benchmark: plan executors, then a standalone query node in
front of them, all over one local data directory."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited")
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    """Waits until a process listens on `port` (a plan executor's gRPC port)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Servers:
    """A running query node (REST `url`, Flight `flight_url`) and its executors."""

    url: str
    flight_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=60)


def start(binary: str, data: Path, log: Path, executors: int, env: dict | None = None) -> Servers:
    """`standalone` over `data`, spreading queries over `executors` plan executors (0:
    in-process), without its embedded indexer unless `env` (more environment for it) says."""
    processes, endpoints = [], []
    out = open(log, "ab")
    for index in range(executors):
        port = free_port()
        processes.append(subprocess.Popen(
            [binary, "plan-executor", "--data-dir", str(data), "--node-id", f"pe-{index}",
             "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}"],
            stdout=out, stderr=subprocess.STDOUT,
        ))
        endpoints += ["--executor", f"pe-{index}=http://127.0.0.1:{port}"]
    for process, endpoint in zip(processes, endpoints[1::2]):
        wait_listening(int(endpoint.rsplit(":", 1)[1]), process)
    port, flight_port = free_port(), free_port()
    processes.append(subprocess.Popen(
        [binary, "standalone", "--data-dir", str(data), "--rest-listen", f"127.0.0.1:{port}",
         "--flight-listen", f"127.0.0.1:{flight_port}", *endpoints],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "LANCEFLEET_INDEXER__EMBEDDED": "false", "NO_COLOR": "1", **(env or {})},
    ))
    servers = Servers(f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{flight_port}", processes)
    wait_healthy(servers.url, processes[-1])
    return servers
