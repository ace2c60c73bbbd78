"""The rendered Helm chart, run for real: every pod of the default scenario started as local
processes from its rendered command, arguments, environment and configuration file, and the
cluster they form used through the query nodes' Service with the `lancedb` client and the
`helm test` pod's own command.

What is rendered: helm/lancefleet with its default values plus only what points it at this
machine's object store: `storage.root` s3://lancefleet/<unique prefix> with
`storage.options` {aws_endpoint: the moto server, aws_region: us-east-1, allow_http: true},
`secret.apiKeys` [one key] and `secret.env` {AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY} (so
the chart makes its Secret), and `planExecutor.cache.volume.size` 1Gi (the default 100Gi
would make 85 GiB of sparse cache files). Everything else is the default: 2 query nodes,
3 plan executors (StatefulSet), 2 control-plane instances, 1 indexer, 3 etcd members.
The last test does the same with ci/minimal-values.yaml (no etcd: 1 query node with a
fixed list of 2 executors).

What is simulated, and how (lf_kube.py):
- Kubernetes itself: no API server, kubelet or container runtime exists here. Each replica
  of each Deployment/StatefulSet becomes one simulated pod with its own loopback address
  (127.a.b.N, a random block per run), its StatefulSet or Deployment-style name, and its
  volumes as directories (ConfigMap and Secret files written out, emptyDir and claims empty).
- The container: its `command[0]` from the image is mapped to the local program
  (/usr/local/bin/lancefleet -> the built `lancefleet` binary; etcd's image's
  /usr/local/bin/etcd -> Debian's etcd 3.4, so the chart's etcd StatefulSet runs with
  Debian's etcd instead of the image's 3.5). Its environment is only what the kubelet
  would give it: `envFrom` Secrets, then `env` with field references (POD_NAME, POD_IP,
  ...) and `$(VAR)` expansion, plus PATH, HOME and TMPDIR (its /tmp emptyDir).
- Paths: arguments, variables and the pod's copy of its mounted configuration file have
  their volume mount paths (/etc/lancefleet, /var/cache/lancefleet, /var/lib/etcd, /tmp)
  replaced by the pod's directories.
- Network: the listen host 0.0.0.0 becomes the pod's own loopback address, and every
  in-cluster `host:port` (Service names in every form, StatefulSet pods under their
  headless Service) becomes the address of the pod the Service selects and the container
  port its targetPort names. Ports are never remapped: each process listens on the
  container port the chart gives it. An in-cluster name the release does not define fails
  the test.
- Start order: etcd members first (Kubernetes would start everything at once and let the
  other pods retry), then every other pod; readiness is the rendered readinessProbe
  (HTTP GET of its path on its port, or the gRPC health check with its service name).
- S3 is moto (the conftest `moto` fixture), and `helm test` is the smoke-test pod's command
  run like any other container, after the cluster is ready.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
import warnings

import numpy as np
import pyarrow as pa
import pytest
import requests
import yaml
from lancedb.remote import ClientConfig, TlsConfig
from urllib3.exceptions import InsecureRequestWarning

import lf_kube
from conftest import BUCKET, lancefleet_bin
from lf_helpers import connect_remote, metric, parse_metrics
from lf_kube import CHART, RELEASE, Network, Pod, Process, render, wait_for

FULLNAME = f"{RELEASE}-lancefleet"
API_KEY = "helm-run-key"
ROLES = ("query-node", "plan-executor", "control-plane", "indexer")
READY_TIMEOUT_S = 90


def run_values(moto_endpoint: str, prefix: str) -> dict:
    return {
        "storage": {"root": f"s3://{BUCKET}/{prefix}",
                    "options": {"aws_endpoint": moto_endpoint, "aws_region": "us-east-1", "allow_http": "true"}},
        "secret": {"apiKeys": [API_KEY], "env": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}},
        "planExecutor": {"cache": {"volume": {"size": "1Gi"}}},
    }


def probe_passes(pod: Pod, container: dict, probe: dict) -> bool:
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = lf_kube.resolve_port(container, get["port"])
        url = f"{get.get('scheme', 'HTTP').lower()}://{pod.ip}:{port}{get.get('path', '/')}"
        with warnings.catch_warnings():  # the kubelet does not verify HTTPS probes' certificates
            warnings.simplefilter("ignore", InsecureRequestWarning)
            return 200 <= requests.get(url, timeout=timeout, verify=False).status_code < 400
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"{pod.ip}:{probe['grpc']['port']}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
            return answer.status == health_pb2.HealthCheckResponse.SERVING
    if "tcpSocket" in probe:
        with socket.create_connection((pod.ip, lf_kube.resolve_port(container, probe["tcpSocket"]["port"])), timeout=timeout):
            return True
    raise AssertionError(f"probe {probe} is not simulated")


class Cluster:
    def __init__(self, rendered: lf_kube.Rendered, pods: list[Pod], network: Network, moto: str, prefix: str):
        self.rendered = rendered
        self.pods = pods
        self.network = network
        self.moto = moto
        self.prefix = prefix
        self.processes: list[Process] = []

    def of(self, component: str) -> list[Pod]:
        return [pod for pod in self.pods if pod.component == component]

    def start(self, pods: list[Pod], log_dir) -> None:
        started = []
        for pod in pods:
            container = pod.container()
            argv, env = pod.local_command(container, lancefleet_bin(), self.network)
            started.append(Process(pod, container, argv, env, log_dir).start())
        self.processes += started
        for process in started:
            probe = process.container.get("readinessProbe")
            assert probe, f"{process.pod.name} has no readiness probe"

            def ready(process=process, probe=probe):
                assert process.alive(), f"{process.pod.name} exited with {process.proc.returncode}\n{process.log_tail()}"
                return probe_passes(process.pod, process.container, probe)

            wait_for(ready, READY_TIMEOUT_S, f"{process.pod.name} to pass its readiness probe")

    def url(self, service: str, port_name: str) -> str:
        svc = self.rendered.one("Service", service)
        port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name)
        return self.network.url(service, port)

    def state(self) -> dict:
        return requests.get(f"{self.url(f'{FULLNAME}-control-plane', 'http')}/v1/cluster", timeout=10).json()

    def stop_all(self) -> None:
        for process in self.processes:
            process.kill()


def start_cluster(values: dict, moto: str, prefix: str, root, secrets=None) -> Cluster:
    """Renders the chart with `values` and starts every server pod of it: etcd members
    first, then the LanceFleet roles, each waited for by its readiness probe. `secrets`,
    given the pods' addresses, makes the Secrets the chart names but does not make."""
    rendered = render(values)
    block = lf_kube.loopback_block()
    placed = [(workload, index) for workload in rendered.workloads() for index in range(lf_kube.replicas(workload))]
    addresses = [f"{block}{n}" for n in range(1, len(placed) + 1)]
    external = secrets(addresses) if secrets else {}
    pods = [Pod(rendered, workload, index, ip, root / "pods", external_secrets=external)
            for (workload, index), ip in zip(placed, addresses)]
    servers = [pod for pod in pods if pod.workload["kind"] != "Pod"]
    for pod in servers:
        for port in lf_kube.container_ports(pod.container()).values():
            if not lf_kube.can_bind(pod.ip, port):
                pytest.fail(f"{pod.ip}:{port} is taken on this machine (a process listening on 0.0.0.0:{port}?)")
    cluster = Cluster(rendered, pods, Network(rendered, servers), moto, prefix)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    print(f"logs of the simulated pods: {logs}")
    try:
        cluster.start(cluster.of("etcd"), logs)
        cluster.start([pod for pod in servers if pod.component in ROLES], logs)
    except BaseException:
        for process in cluster.processes:
            print(f"--- {process.pod.name}\n{process.log_tail(2000)}")
        cluster.stop_all()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(moto, tmp_path_factory):
    """The default scenario (plus the S3 values above), running."""
    prefix = f"helm-{uuid.uuid4().hex[:8]}"
    cluster = start_cluster(run_values(moto, prefix), moto, prefix, tmp_path_factory.mktemp("helm-run"))
    try:
        yield cluster
    finally:
        cluster.stop_all()


def run_smoke_test(cluster: Cluster) -> None:
    pod = next(p for p in cluster.pods if p.workload["kind"] == "Pod")
    assert pod.workload["metadata"]["annotations"]["helm.sh/hook"] == "test"
    argv, env = pod.local_command(pod.container(), lancefleet_bin(), cluster.network)
    assert env["LANCEFLEET_API_KEY"] == API_KEY
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"


def executor_fragments(cluster: Cluster) -> float:
    return sum(metric(parse_metrics(requests.get(f"http://{pod.ip}:9464/metrics", timeout=10).text),
                      "lancefleet_executor_fragments_total") for pod in cluster.of("plan-executor"))


def test_every_pod_serves_its_probes(cluster):
    """Each pod's startup, liveness and readiness probes pass on the running process (the
    HTTP paths and ports, the executors' gRPC health service)."""
    checked = 0
    for pod in cluster.pods:
        if pod.workload["kind"] == "Pod":
            continue
        container = pod.container()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe:
                assert probe_passes(pod, container, probe), f"{pod.name}: {kind} {probe} fails"
                checked += 1
    assert checked >= 3 * 11


def test_the_cluster_forms(cluster):
    """Every role registers in etcd under its pod name; a control-plane instance leads; the
    executors (StatefulSet pod names) share the placement ring."""
    expected = {role: {pod.name for pod in cluster.of(role)} for role in ROLES}

    def formed():
        state = cluster.state()
        roles = {role: {n["node_id"] for n in state["nodes"] if n["role"] == role} for role in ROLES}
        return state if roles == expected and state["leader"] else None

    state = wait_for(formed, 30, f"every node registered: {expected}")
    assert state["leader"] in expected["control-plane"]
    assert state["cluster"] == FULLNAME
    executors = [n for n in state["nodes"] if n["role"] == "plan-executor"]
    assert all(n["healthy"] and n["serving_fragments"] and not n["stopping"] for n in executors), executors
    for node in executors:  # registered at the address from $(POD_IP): its pod's own
        pod = next(p for p in cluster.of("plan-executor") if p.name == node["node_id"])
        assert node["address"] == f"http://{pod.ip}:7070"
    shares = state["placement"]["first_choice_share"]
    assert set(shares) == expected["plan-executor"]
    assert all(share > 0.1 for share in shares.values()) and abs(sum(shares.values()) - 1) < 1e-6


def test_lancedb_client_creates_writes_and_searches_through_the_query_node_service(cluster):
    url = cluster.url(f"{FULLNAME}-query-node", "http")
    assert requests.get(f"{url}/v1/table/", timeout=10).status_code == 401, "the chart's API key is checked"
    db = connect_remote(url, api_key=API_KEY)
    rng = np.random.default_rng(7)
    vectors = rng.random((600, 16), dtype=np.float32)

    def batch(rows):
        return pa.table({"id": pa.array(rows, pa.int64()),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), 16)})

    table = db.create_table("helm_run", batch(np.arange(0, 200)))
    for start in (200, 400):  # three fragments, spread over the executors
        table.add(batch(np.arange(start, start + 200)))
    hits = table.search(vectors[321]).limit(3).to_arrow()
    assert hits["id"][0].as_py() == 321 and hits["_distance"][0].as_py() < 1e-6
    assert table.count_rows() == 600 and table.count_rows("id < 10") == 10
    assert "helm_run" in db.table_names()
    assert executor_fragments(cluster) > 0, "the query nodes sent fragments to the executors they found in etcd"
    import boto3

    s3 = boto3.client("s3", endpoint_url=cluster.moto, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{cluster.prefix}/helm_run.lance/")["Contents"]]
    assert any("/data/" in key for key in keys), "the table lives under the chart's storage.root"


def test_flight_port_of_the_query_node_service(cluster):
    import pyarrow.flight as flight

    url = cluster.url(f"{FULLNAME}-query-node", "flight").replace("http://", "grpc://")
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {API_KEY}".encode())], timeout=30)
    names = [info.descriptor.path[0].decode() for info in flight.connect(url).list_flights(options=options)]
    assert "helm_run" in names


def test_helm_test_pod_passes(cluster):
    """`helm test`: the smoke-test pod's command, with its environment (LANCEFLEET_API_KEY
    from the chart's Secret) and the query node Service's address."""
    run_smoke_test(cluster)


def test_metrics_the_alert_rules_use_exist(cluster):
    """Every metric the chart's alerts/*.yaml name is served by some role's /metrics (the
    ports the ServiceMonitor scrapes: `http` on query nodes and control planes, `metrics`
    on executors and indexers)."""
    served = set()
    for pod in cluster.pods:
        if pod.component not in ROLES:
            continue
        ports = lf_kube.container_ports(pod.container())
        port = ports.get("metrics") or ports["http"]
        text = requests.get(f"http://{pod.ip}:{port}/metrics", timeout=10).text
        served |= {name for (name, _labels) in parse_metrics(text)}
        served |= {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    used = set()
    for path in sorted((CHART / "alerts").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used |= set(re.findall(r"\blancefleet_[a-z0-9_]+", rule["expr"]))
    assert used, "no alert rule names a LanceFleet metric"
    assert used <= served, f"alert rules name metrics no process serves: {sorted(used - served)}"


def test_every_pod_stops_gracefully_within_its_grace_period(cluster):
    """SIGTERM to every pod at once (`helm uninstall`); each exits 0 within its rendered
    terminationGracePeriodSeconds (executors: NOT_SERVING, `stopping`, drain, deregister),
    having written nothing outside its volumes (its working directory, the image's /data on
    the read-only root file system, is still empty)."""
    lancefleet = [p for p in cluster.processes if p.pod.component in ROLES]
    started = time.monotonic()
    for process in lancefleet:
        process.terminate()
    for process in lancefleet:
        grace = process.pod.spec["terminationGracePeriodSeconds"]
        code = process.wait(timeout=max(1.0, grace - (time.monotonic() - started)))
        assert code == 0, f"{process.pod.name} exited with {code}\n{process.log_tail()}"
    for process in lancefleet:
        written = sorted(str(p.relative_to(process.workdir)) for p in process.workdir.rglob("*"))
        assert not written, f"{process.pod.name} wrote outside its volumes (read-only root file system): {written}"
    for process in cluster.processes:
        if process.pod.component == "etcd":
            process.terminate()
            # Debian's etcd re-raises SIGTERM after its clean shutdown: -15 is its normal exit.
            assert process.wait(timeout=process.pod.spec["terminationGracePeriodSeconds"]) in (0, -15)


def test_minimal_scenario_without_etcd_runs(moto, tmp_path):
    """ci/minimal-values.yaml (plus the S3 values): no etcd, no control plane, no indexer;
    the query node reaches its two executors by the fixed list of their StatefulSet DNS
    names, and the `helm test` pod's smoke test passes through it."""
    prefix = f"helm-min-{uuid.uuid4().hex[:8]}"
    values = lf_kube.load_values(CHART / "ci" / "minimal-values.yaml")
    overrides = run_values(moto, prefix)
    values["storage"] = overrides["storage"]
    values["secret"] = overrides["secret"]
    values["planExecutor"]["cache"]["volume"]["size"] = "1Gi"
    cluster = start_cluster(values, moto, prefix, tmp_path)
    try:
        assert sorted(pod.component for pod in cluster.pods if pod.workload["kind"] != "Pod") == \
            ["plan-executor", "plan-executor", "query-node"]
        run_smoke_test(cluster)
        assert executor_fragments(cluster) > 0, "the query node sent fragments to the listed executors"
        for process in cluster.processes:
            process.terminate()
        for process in cluster.processes:
            assert process.wait(timeout=process.pod.spec["terminationGracePeriodSeconds"]) == 0, process.log_tail()
            assert not any(process.workdir.iterdir()), f"{process.pod.name} wrote outside its volumes"
    finally:
        cluster.stop_all()


def test_tls_scenario_runs_over_mutual_tls_with_an_etcd_that_asks_for_certificates(moto, tmp_path):
    """ci/tls-values.yaml (plus the S3 values) with its Secrets made as cert-manager would
    (the nodes' certificate naming every pod address, since the simulated DNS resolves to
    them; an etcd client certificate of another CA), and its external etcd run here over
    HTTPS with --client-cert-auth: the pods pass their probes (HTTPS on query nodes, the
    metrics port on executors), executors register at https:// addresses and serve
    fragments over mutual TLS, the `lancedb` client works over HTTPS, and `helm test`
    passes with the Secret's CA."""
    import trustme

    from lf_control import Etcd

    etcd_ca, node_ca = trustme.CA(), trustme.CA()
    etcd_dir = tmp_path / "etcd"
    etcd_dir.mkdir()
    server = lf_kube.tls_secret(etcd_ca, ["127.0.0.1"])
    client = lf_kube.tls_secret(etcd_ca, ["lancefleet-client"])
    for name, text in [("ca.crt", server["ca.crt"]), ("etcd.crt", server["tls.crt"]), ("etcd.key", server["tls.key"]),
                       ("client.crt", client["tls.crt"]), ("client.key", client["tls.key"])]:
        (etcd_dir / name).write_text(text)
    etcd = Etcd(etcd_dir, tls=tuple(str(etcd_dir / n) for n in ("ca.crt", "etcd.crt", "etcd.key")),
                client=(str(etcd_dir / "client.crt"), str(etcd_dir / "client.key"))).start()
    prefix = f"helm-tls-{uuid.uuid4().hex[:8]}"
    values = lf_kube.load_values(CHART / "ci" / "tls-values.yaml")
    overrides = run_values(moto, prefix)
    values.update(storage=overrides["storage"], secret=overrides["secret"])
    values["planExecutor"]["cache"] = overrides["planExecutor"]["cache"]
    values["externalEtcd"]["endpoints"] = [etcd.endpoint]
    values["metrics"] = {"serviceMonitor": {"enabled": False}}

    def secrets(addresses):
        return {"lancefleet-tls": lf_kube.tls_secret(node_ca, ["localhost", *addresses]), "lancefleet-etcd-tls": client}

    cluster = start_cluster(values, moto, prefix, tmp_path, secrets)
    try:
        state = cluster.state()
        executors = [node for node in state["nodes"] if node["role"] == "plan-executor"]
        assert len(executors) == 2 and all(node["address"].startswith("https://") for node in executors), executors
        url = cluster.url(f"{FULLNAME}-query-node", "http").replace("http://", "https://")
        ca_path = tmp_path / "node-ca.crt"
        ca_path.write_text(node_ca.cert_pem.bytes().decode())
        db = connect_remote(url, api_key=API_KEY,
                            client_config=ClientConfig(tls_config=TlsConfig(ssl_ca_cert=str(ca_path))))
        rows = pa.table({"id": pa.array(range(300), pa.int64()),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(300 * 8, dtype=np.float32)), 8)})
        table = db.create_table("helm_tls", rows)
        table.add(rows)
        assert table.search(np.arange(8, 16, dtype=np.float32)).limit(2).to_arrow()["id"].to_pylist() == [1, 1]
        assert executor_fragments(cluster) > 0, "fragments went to the executors, over mutual TLS"
        run_smoke_test(cluster)
        for process in cluster.processes:
            process.terminate()
        for process in cluster.processes:
            assert process.wait(timeout=process.pod.spec["terminationGracePeriodSeconds"]) == 0, process.log_tail()
    finally:
        cluster.stop_all()
        etcd.stop()
