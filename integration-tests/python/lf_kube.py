"""Helpers of the Helm chart tests (test_helm_chart.py, test_helm_run.py).

- `render()` renders helm/lancefleet with a real Helm engine: helm-python-sdk, which binds
  the Helm v4 Go SDK (`helm template` offline: no cluster, `lookup` returns nothing).
- `Pod` turns one rendered pod into what a kubelet would run: the container's command and
  args with `$(VAR)` expanded, its environment (`envFrom` Secrets/ConfigMaps, then `env`
  with field references and `$(VAR)`), and its volumes as directories (ConfigMap and Secret
  files written out, emptyDir / hostPath / claims as empty directories).
- `Network` plays cluster DNS and kube-proxy on loopback: each simulated pod gets its own
  loopback address (127.x.y.z), so every server keeps the container port the chart gives
  it, and a Service or pod DNS name with a port is rewritten to the address of the pod the
  Service selects and the container port its targetPort names. An in-cluster name that
  matches no Service, pod or port is an error: that is a wiring bug in the chart.
"""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lancefleet"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "lf"
NAMESPACE = "lancefleet"
CLUSTER_DOMAIN = "cluster.local"
# Where the image puts its binaries (Dockerfile; etcd's image), and what runs them here.
LANCEFLEET_IN_IMAGE = "/usr/local/bin/lancefleet"
ETCD_IN_IMAGE = "/usr/local/bin/etcd"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")


def tls_secret(ca, identities: list[str]) -> dict[str, str]:
    """A Secret as cert-manager makes it: tls.crt and tls.key of a certificate `ca` (a
    trustme.CA) issued for `identities`, and ca.crt."""
    cert = ca.issue_cert(*identities)
    return {"tls.crt": b"".join(blob.bytes() for blob in cert.cert_chain_pems).decode(),
            "tls.key": cert.private_key_pem.bytes().decode(), "ca.crt": ca.cert_pem.bytes().decode()}


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def chart():
    import helm_python as helm

    return helm.Chart.load(str(CHART))


def render(values: dict | None = None, chart_dir: Path = CHART, release: str = RELEASE,
           namespace: str = NAMESPACE) -> "Rendered":
    import helm_python as helm

    loaded = helm.Chart.load(str(chart_dir))
    return Rendered(loaded.render(values or {}, name=release, namespace=namespace, is_install=True))


class Rendered:
    """The rendered templates: `files` by template path, `objects` parsed (NOTES excluded)."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.objects: list[dict] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                continue
            self.objects += [doc for doc in yaml.safe_load_all(text) if doc]

    @property
    def notes(self) -> str:
        return next((text for path, text in self.files.items() if path.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def find(self, kind: str, name: str) -> dict | None:
        return next((obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name), None)

    def one(self, kind: str, name: str) -> dict:
        obj = self.find(kind, name)
        assert obj is not None, f"no {kind} {name}; rendered: {sorted(self.names())}"
        return obj

    def names(self) -> set[tuple[str, str]]:
        return {(obj["kind"], obj["metadata"]["name"]) for obj in self.objects}

    def workloads(self) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's data as text."""
        obj = self.one(kind, name)
        out = {key: base64.b64decode(value).decode() for key, value in (obj.get("data") or {}).items()} \
            if kind == "Secret" else dict(obj.get("data") or {})
        out.update(obj.get("stringData") or {})
        return out


def pod_template(workload: dict) -> dict:
    if workload["kind"] == "Pod":
        return {"metadata": workload["metadata"], "spec": workload["spec"]}
    return workload["spec"]["template"]


def replicas(workload: dict) -> int:
    if workload["kind"] in ("Pod", "Job"):
        return 1
    return int(workload["spec"].get("replicas", 1))


def container_ports(container: dict) -> dict[str, int]:
    return {port["name"]: int(port["containerPort"]) for port in container.get("ports", []) if "name" in port}


def resolve_port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    ports = container_ports(container)
    assert port in ports, f"port {port!r} is not a container port of {container['name']} ({ports})"
    return ports[port]


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, undefined ones kept,
    $$ escapes a dollar."""
    def sub(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))
    return _VAR.sub(sub, text)


class Pod:
    """One simulated pod of a rendered workload: its name, labels, loopback address and
    volumes as directories under `root`."""

    def __init__(self, rendered: Rendered, workload: dict, index: int, ip: str, root: Path,
                 external_secrets: dict[str, dict[str, str]] | None = None, node_name: str = "node-0"):
        self.rendered = rendered
        self.external_secrets = external_secrets or {}
        self.workload = workload
        self.template = pod_template(workload)
        self.spec = self.template["spec"]
        self.labels = self.template["metadata"].get("labels", {})
        name = workload["metadata"]["name"]
        if workload["kind"] == "StatefulSet":
            self.name = f"{name}-{index}"
        elif workload["kind"] == "Pod":
            self.name = name
        else:
            self.name = f"{name}-5d8f7c9b4-{index:05d}"[:63]
        self.ip = ip
        self.node_name = node_name
        self.root = Path(root) / self.name
        self.volumes = self._materialize_volumes()
        self.localized: set[str] = set()

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    @property
    def containers(self) -> list[dict]:
        return self.spec["containers"]

    def container(self, name: str | None = None) -> dict:
        if name is None:
            assert len(self.containers) == 1
            return self.containers[0]
        return next(c for c in self.containers if c["name"] == name)

    def _materialize_volumes(self) -> dict[str, Path]:
        volumes: dict[str, Path] = {}
        claims = [t["metadata"]["name"] for t in self.workload.get("spec", {}).get("volumeClaimTemplates", [])]
        for volume in (self.spec.get("volumes") or []) + [{"name": c, "persistentVolumeClaim": {}} for c in claims]:
            path = self.root / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume or "secret" in volume:
                kind, source = ("ConfigMap", volume["configMap"]) if "configMap" in volume else ("Secret", volume["secret"])
                name = source.get("name") or source.get("secretName")
                rendered = self.rendered.find(kind, name) is not None
                data = self.rendered.data(kind, name) if rendered or kind != "Secret" else self.external_secret(name)
                items = source.get("items") or [{"key": key, "path": key} for key in data]
                for item in items:
                    assert item["key"] in data, f"{kind} {name} has no key {item['key']!r}"
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
            volumes[volume["name"]] = path
        return volumes

    def mounts(self, container: dict) -> dict[str, Path]:
        """mountPath -> the local directory (or file) behind it."""
        out = {}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in self.volumes, f"{container['name']} mounts unknown volume {mount['name']}"
            local = self.volumes[mount["name"]]
            if mount.get("subPath"):
                local = local / mount["subPath"]
            out[mount["mountPath"].rstrip("/") or "/"] = local
        return out

    def field(self, path: str) -> str:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": NAMESPACE,
            "status.podIP": self.ip,
            "status.hostIP": self.ip,
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
        }
        assert path in fields, f"field reference {path} is not simulated"
        return fields[path]

    def env(self, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet builds it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self.rendered.data("Secret", source["secretRef"]["name"]) \
                    if self.rendered.find("Secret", source["secretRef"]["name"]) else self.external_secret(source["secretRef"]["name"])
            else:
                data = self.rendered.data("ConfigMap", source["configMapRef"]["name"])
            env.update({prefix + key: value for key, value in data.items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(str(var["value"]), env)
            elif "valueFrom" in var:
                ref = var["valueFrom"]
                if "fieldRef" in ref:
                    env[var["name"]] = self.field(ref["fieldRef"]["fieldPath"])
                elif "secretKeyRef" in ref:
                    env[var["name"]] = self.rendered.data("Secret", ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
                elif "configMapKeyRef" in ref:
                    env[var["name"]] = self.rendered.data("ConfigMap", ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
                else:
                    raise AssertionError(f"env {var['name']}: {ref} is not simulated")
            else:
                env[var["name"]] = ""
        return env

    def external_secret(self, name: str) -> dict[str, str]:
        """A Secret the chart references but does not make (existingSecret)."""
        assert name in self.external_secrets, f"Secret {name} is neither rendered nor provided by the test"
        return self.external_secrets[name]

    def argv(self, container: dict, env: dict[str, str] | None = None) -> list[str]:
        env = self.env(container) if env is None else env
        return [expand(str(part), env) for part in container.get("command", []) + container.get("args", [])]

    def local_command(self, container: dict, lancefleet: str, network: "Network | None" = None,
                      listen_host: str = "0.0.0.0") -> tuple[list[str], dict[str, str]]:
        """The container as a local process: (argv, env). Its binary is the local one, paths
        under its volume mounts are the pod's directories (in the arguments, the variables
        and the mounted ConfigMap files, rewritten in the pod's own copy). With a `network`:
        in-cluster host:port -> loopback, and `listen_host` -> the pod's address."""
        mounts = self.mounts(container)
        env = self.env(container)
        argv = self.argv(container, env)

        def local(text: str, whole: bool) -> str:
            text = localize_paths(text, mounts, whole=whole)
            if network is not None:
                text = network.rewrite(text.replace(listen_host + ":", self.ip + ":"))
            return text

        config_maps = {v["name"] for v in self.spec.get("volumes", []) if "configMap" in v}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in config_maps and mount["name"] not in self.localized:
                self.localized.add(mount["name"])
                for path in self.volumes[mount["name"]].rglob("*"):
                    if path.is_file():
                        path.write_text(local(path.read_text(), whole=False))
        argv = [local_binary(argv[0], lancefleet)] + [local(part, whole=True) for part in argv[1:]]
        env = {key: local(value, whole=True) for key, value in env.items()}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        return argv, {**base_env(self), **env}


def localize_paths(text: str, mounts: dict[str, Path], whole: bool = False) -> str:
    """Mount paths -> the pod's local directories, in one pass (a local directory may itself
    start with a mount path such as /tmp). `whole`: `text` is one path (an argument, an
    environment value); else paths inside quotes (a TOML file)."""
    ordered = sorted(mounts, key=len, reverse=True)
    if whole:
        for mount_path in ordered:
            if text == mount_path or text.startswith(mount_path + "/"):
                return str(mounts[mount_path]) + text[len(mount_path):]
        return text
    if not ordered:
        return text
    pattern = re.compile(r'(["\'])(' + "|".join(re.escape(m) for m in ordered) + r')(?=["\'/])')
    return pattern.sub(lambda m: m.group(1) + str(mounts[m.group(2)]), text)


class Network:
    """Cluster DNS and Services on loopback: (in-cluster host, port) -> (pod address, container port)."""

    HOST_PORT = re.compile(r"(?<![\w.-])([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?):(\d{1,5})(?![\d])")

    def __init__(self, rendered: Rendered, pods: list[Pod]):
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}
        self.service_hosts: set[str] = set()
        for service in rendered.of_kind("Service"):
            name = service["metadata"]["name"]
            selector = service["spec"].get("selector") or {}
            selected = [pod for pod in pods if selector and all(pod.labels.get(k) == v for k, v in selector.items())]
            names = self.names(name)
            self.service_hosts.update(names)
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                for pod in selected:
                    container = next((c for c in pod.containers
                                      if isinstance(target, int) or target in container_ports(c)), None)
                    assert container is not None, f"Service {name}: no container of {pod.name} has port {target}"
                    address = (pod.ip, resolve_port(container, target))
                    for host in names:
                        self.routes.setdefault((host, int(port["port"])), address)
                    # Pods of a StatefulSet whose serviceName is this Service get DNS names.
                    if pod.workload["kind"] == "StatefulSet" and pod.workload["spec"].get("serviceName") == name:
                        for host in self.names(f"{pod.name}.{name}"):
                            self.routes[(host, int(port["port"]))] = address
                            self.service_hosts.add(host)

    @staticmethod
    def names(name: str) -> list[str]:
        """The DNS names of a Service (or of a pod under its headless Service)."""
        return [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"]

    def add(self, host: str, port: int, address: tuple[str, int]) -> None:
        for name in self.names(host):
            self.routes[(name, port)] = address
            self.service_hosts.add(name)

    def rewrite(self, text: str) -> str:
        """Every in-cluster host:port in `text` -> the loopback address behind it."""
        def sub(match):
            host, port = match.group(1), int(match.group(2))
            if (host, port) in self.routes:
                ip, target = self.routes[(host, port)]
                return f"{ip}:{target}"
            in_release = host.startswith(f"{RELEASE}-") or f".{NAMESPACE}.svc" in host or host.endswith(f".{NAMESPACE}")
            if host in self.service_hosts or in_release:
                raise AssertionError(f"{host}:{port} names no Service port of the release (in {text!r})")
            return match.group(0)
        return self.HOST_PORT.sub(sub, text)

    def url(self, service: str, port: int) -> str:
        ip, target = self.routes[(service, port)]
        return f"http://{ip}:{target}"


def loopback_block() -> str:
    """A random 127.a.b. prefix for this run's pod addresses."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}."


def can_bind(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


class Process:
    """One simulated container, run as a local process with only its own environment."""

    def __init__(self, pod: Pod, container: dict, argv: list[str], env: dict[str, str], log_dir: Path):
        self.pod = pod
        self.container = container
        self.argv = argv
        self.env = env
        self.log_path = Path(log_dir) / f"{pod.name}.{container['name']}.log"
        # The image's working directory (/data) is on the read-only root file system: an
        # empty directory here, which must still be empty when the process has stopped.
        self.workdir = pod.root / "workdir"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        with open(self.log_path, "ab") as log:
            log.write(f"=== {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "<no log>"

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.pod.name} did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()


def local_binary(path: str, lancefleet: str) -> str:
    """The local program for a binary of an image."""
    if path == LANCEFLEET_IN_IMAGE:
        return lancefleet
    if path == ETCD_IN_IMAGE:
        etcd = shutil.which("etcd")
        assert etcd, "etcd is not installed (Debian package etcd-server; scripts/test.sh installs it)"
        return etcd
    raise AssertionError(f"no local program for {path}")


def base_env(pod: Pod) -> dict[str, str]:
    """What the image provides besides the container's own variables."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(pod.root)}


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = error
        time.sleep(interval)  # polling a starting process
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")
