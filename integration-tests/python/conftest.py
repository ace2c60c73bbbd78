"""Fixtures for the LanceFleet end-to-end suite.

The real `lancefleet` binary is started as

    $LANCEFLEET_BIN standalone --data-dir <tmp>/data --rest-listen 127.0.0.1:<port> \
        --flight-listen 127.0.0.1:<port>

(default binary: $CARGO_TARGET_DIR/debug/lancefleet, CARGO_TARGET_DIR defaulting to
~/.cache/lancefleet-target) and driven with the official `lancedb` client, differentially
against LanceDB OSS on a local directory.

With LANCEFLEET_E2E_EXECUTORS=N the same server is started in front of N real
`lancefleet plan-executor` processes over the same data directory, so every test also
checks the distributed path: fragment placement, gRPC execution and the exact merge.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

# Keep a hung server from hanging the suite for the client's 300 s default.
os.environ.setdefault("LANCE_CLIENT_READ_TIMEOUT", "120")
os.environ.setdefault("LANCE_CLIENT_CONNECT_TIMEOUT", "10")

import lancedb  # noqa: E402

from lf_helpers import connect_remote, parse_metrics  # noqa: E402

# Self-test of the suite's own logic without a server: the "remote" side becomes a
# second LanceDB OSS directory and tests marked `raw`/`lifecycle` are skipped.
SELFTEST_OSS = os.environ.get("LANCEFLEET_SELFTEST_OSS") == "1"

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
E2E_EXECUTORS = int(os.environ.get("LANCEFLEET_E2E_EXECUTORS", "0"))
# S3 bucket of the moto server tests on object storage use.
BUCKET = "lancefleet"


def lancefleet_bin() -> str:
    explicit = os.environ.get("LANCEFLEET_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "lancefleet-target"
    )
    return os.path.join(target, "debug", "lancefleet")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # readiness polling only
    pytest.fail(f"{what} did not listen on port {port} within {READY_TIMEOUT_S}s")


class PlanExecutor:
    """One `lancefleet plan-executor` process over a data directory."""

    def __init__(self, root: Path, data_dir: Path | str, node_id: str, env: dict | None = None):
        self.node_id = node_id
        self.env = env or {}
        self.data_dir = data_dir
        self.log_path = Path(root) / f"{node_id}.log"
        self.cache_dir = Path(root) / f"{node_id}-cache"
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.node_id}=http://127.0.0.1:{self.port}"

    def start(self) -> "PlanExecutor":
        """Starts the executor and waits until it logs that it serves (its own socket, not
        a port another process took between our probe and its bind)."""
        for _attempt in range(3):
            cmd = [
                lancefleet_bin(), "plan-executor", "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}", "--node-id", self.node_id,
                "--cache-dir", str(self.cache_dir),
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            ]
            start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "NO_COLOR": "1", "LANCEFLEET_CACHE__DISK_BYTES": str(256 << 20), **self.env},
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                with open(self.log_path, "rb") as log:
                    log.seek(start)
                    if b"plan executor is serving" in log.read():
                        return self
                time.sleep(0.05)  # readiness polling only
            output = self.log_path.read_text(errors="replace")[start:]
            if self.proc.poll() is None:
                self.proc.kill()
                pytest.fail(f"plan executor {self.node_id} not ready within {READY_TIMEOUT_S}s\n{output[-4000:]}")
            if "in use" not in output:
                pytest.fail(f"plan executor {self.node_id} exited with {self.proc.returncode}\n{output[-4000:]}")
            self.port, self.metrics_port = free_port(), free_port()
        pytest.fail(f"plan executor {self.node_id} found no free port")

    def metrics(self) -> dict:
        return parse_metrics(requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)


class LanceFleetServer:
    """One `lancefleet standalone` process (plus `executors` plan executors).
    `root` holds `data/` and the logs only."""

    def __init__(
        self,
        root: Path,
        data_dir: Path | str | None = None,
        executors: int = E2E_EXECUTORS,
        env: dict | None = None,
    ):
        """`data_dir` may be an object-store URI (then `env` carries its options)."""
        self.root = Path(root)
        self.env = env or {}
        if isinstance(data_dir, str) and "://" in data_dir:
            self.data_dir = data_dir
        else:
            self.data_dir = Path(data_dir) if data_dir else self.root / "data"
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.flight_port: int | None = None
        # (certificate, key) the readiness check presents, for a server asking for one.
        self.client_cert: tuple[str, str] | None = None
        self.executors = [
            PlanExecutor(self.root, self.data_dir, f"pe-{index}", self.env) for index in range(executors)
        ]

    @property
    def url(self) -> str:
        if SELFTEST_OSS:
            return f"oss://{self.data_dir}"
        return f"http://127.0.0.1:{self.port}"

    @property
    def flight_url(self) -> str:
        """Arrow Flight and Flight SQL (`grpc://`)."""
        return f"grpc://127.0.0.1:{self.flight_port}"

    def log_tail(self, n: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no server log>"
        lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
        return "\n".join(lines[-n:])

    def start(self) -> "LanceFleetServer":
        if SELFTEST_OSS:
            return self
        binary = lancefleet_bin()
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            pytest.fail(
                f"lancefleet binary not found or not executable at {binary!r}; "
                "build it or set LANCEFLEET_BIN",
                pytrace=False,
            )
        for executor in self.executors:
            executor.start()
        last_err = ""
        for _attempt in range(3):  # the free port can be stolen between probe and bind
            self.port, self.flight_port = free_port(), free_port()
            log = open(self.log_path, "ab")
            cmd = [
                binary,
                "standalone",
                "--data-dir",
                str(self.data_dir),
                "--rest-listen",
                f"127.0.0.1:{self.port}",
                "--flight-listen",
                f"127.0.0.1:{self.flight_port}",
            ]
            for executor in self.executors:
                cmd += ["--executor", executor.endpoint]
            log.write(f"\n=== starting: {' '.join(cmd)}\n".encode())
            log.flush()
            # Background maintenance would rewrite the fragments tests lay out on purpose;
            # test_indexer.py turns it on where it is the subject.
            env = {**os.environ, "NO_COLOR": "1", "LANCEFLEET_INDEXER__EMBEDDED": "false", **self.env}
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
            log.close()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    r = requests.get(f"{self.url}/health", timeout=2, cert=self.client_cert)
                    if r.status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)  # readiness polling only
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(
                    f"lancefleet did not become ready on {self.url}/health within {READY_TIMEOUT_S}s\n"
                    f"--- server log tail ---\n{self.log_tail()}",
                    pytrace=False,
                )
            last_err = self.log_tail()
            if "in use" not in last_err.lower():
                break
        pytest.fail(
            f"lancefleet exited during startup with code {self.proc.returncode}\n"
            f"--- server log tail ---\n{last_err}",
            pytrace=False,
        )

    def stop(self) -> int:
        """SIGTERM (query node first, then executors); return the query node's exit code.
        Fails if a process does not exit within 20 s or an executor exits non-zero."""
        assert self.proc is not None
        code = self.proc.returncode if self.proc.poll() is not None else None
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"lancefleet did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n{self.log_tail()}"
                )
        for executor in self.executors:
            executor_code = executor.stop()
            assert executor_code == 0, f"plan executor {executor.node_id} exited with {executor_code}"
        return code


moto_logs: dict[str, Path] = {}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ObjectGets:
    """Counts GETs of immutable lance objects (data, index, deletion files) that reach
    the S3 server, from its request log."""

    def __init__(self, endpoint: str):
        self.path = moto_logs[endpoint]
        self.mark = self.path.stat().st_size

    def since_mark(self) -> list[str]:
        with open(self.path, "rb") as log:
            log.seek(self.mark)
            lines = ANSI.sub("", log.read().decode(errors="replace")).splitlines()
        pattern = re.compile(r'"GET [^ ]*/(data|_indices|_deletions)/')
        return [line for line in lines if pattern.search(line)]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto S3 server on a free loopback port with an empty bucket."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    # moto_server with atomic conditional writes (see lf_moto.py).
    launcher = Path(__file__).with_name("lf_moto.py")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    wait_for_port(port, proc, "moto_server", log_path)
    endpoint = f"http://127.0.0.1:{port}"
    moto_logs[endpoint] = log_path
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=20)


def storage_options(endpoint: str) -> dict:
    """Object-store options of the moto server at `endpoint` (lance's names)."""
    return {
        "aws_endpoint": endpoint,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "allow_http": "true",
    }


def s3_env(endpoint: str) -> dict:
    """Environment that points a lancefleet process's storage at the moto server."""
    return {f"LANCEFLEET_STORAGE__OPTIONS__{key.upper()}": value for key, value in storage_options(endpoint).items()}


def _stop_and_check(srv: LanceFleetServer) -> None:
    if SELFTEST_OSS:
        return
    alive_before = srv.proc is not None and srv.proc.poll() is None
    code = srv.stop()
    assert alive_before, f"lancefleet died during the tests (exit {code})\n{srv.log_tail()}"
    assert code == 0, f"lancefleet exited with {code} after SIGTERM\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LanceFleetServer:
    srv = LanceFleetServer(tmp_path_factory.mktemp("lancefleet")).start()
    yield srv
    _stop_and_check(srv)


@pytest.fixture(scope="module")
def isolated_server(tmp_path_factory) -> LanceFleetServer:
    """A server of its own for tests that need to see *all* tables (listing)."""
    srv = LanceFleetServer(tmp_path_factory.mktemp("lancefleet-iso")).start()
    yield srv
    _stop_and_check(srv)


@pytest.fixture
def server_url(server) -> str:
    return server.url


@pytest.fixture
def data_dir(server) -> Path:
    return server.data_dir


@pytest.fixture
def remote_db(server):
    # A fresh connection per test so client-side caches never leak between tests.
    return connect_remote(server.url)


@pytest.fixture
def oss_db(tmp_path):
    return lancedb.connect(str(tmp_path / "oss"))


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60]


@pytest.fixture
def unique_name(request):
    """Factory for unique, valid table names: unique_name() / unique_name("suffix")."""
    base = _sanitize(request.node.name)

    def make(suffix: str = "") -> str:
        s = f"{base}_{suffix}_" if suffix else f"{base}_"
        return s + uuid.uuid4().hex[:8]

    return make


@pytest.fixture
def table_name(unique_name) -> str:
    return unique_name()


def pytest_configure(config):
    config.addinivalue_line("markers", "raw: talks HTTP to the server directly (skipped in OSS self-test)")
    config.addinivalue_line("markers", "lifecycle: starts/stops its own server (skipped in OSS self-test)")


def pytest_collection_modifyitems(config, items):
    if not SELFTEST_OSS:
        return
    skip = pytest.mark.skip(reason="LANCEFLEET_SELFTEST_OSS=1: needs the real server")
    for item in items:
        if "raw" in item.keywords or "lifecycle" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the server log to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        for fx in ("server", "isolated_server"):
            srv = item.funcargs.get(fx) if hasattr(item, "funcargs") else None
            if isinstance(srv, LanceFleetServer):
                rep.sections.append((f"{fx} log tail ({srv.log_path})", srv.log_tail(40)))
