"""The Kubernetes manifests in deploy/k8s/ are valid objects and keep the promises operators use.

Every object is validated offline against the Kubernetes JSON schemas that the PyPI package
kubernetes-validate bundles, in strict mode (an unknown or misspelt field fails), for one pinned
Kubernetes version. Then the things an operator relies on: agentd runs on GPU nodes only, knows
its node, reads the ConfigMap where the command says, keeps its state on the node, is probed on a
port it exposes and drains within the grace period; its agentd.toml loads; the NATS chart values
make a three-server JetStream cluster and use only keys the chart reads.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from agentd.config import LoadedConfig, load_config
from agentd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CHART_KEYS = Path(__file__).parent / "data" / "nats-chart-1.x-keys.txt"
# The oldest Kubernetes release still in wide support when these manifests were written; the
# schemas of newer releases accept everything used here too (see test_newest_schemas_accept_them).
KUBERNETES_VERSION = "1.30.0"
CONFIG_PATH = "/etc/agentd/agentd.toml"
STATE_DIR = "/var/lib/agentd"
# The Helm release and namespace of the README's `helm install nats nats/nats -n agentd`.
NATS_RELEASE, NAMESPACE = "nats", "agentd"
# The [cluster] section of issue 8, as the lead's loader will accept it.
CLUSTER_SECTION = {
    "enabled": True,
    "node": "",
    "labels": {"gpu": "true"},
    "lease_ttl_s": 6,
    "stream_replicas": 3,
}

Doc = dict[str, Any]


def load_yaml(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> Doc:
    [doc] = load_yaml(K8S / "kustomization.yaml")
    return doc


def manifests() -> list[tuple[str, Doc]]:
    """Every object of every file the kustomization lists, with the file's name."""
    return [(name, doc) for name in kustomization()["resources"] for doc in load_yaml(K8S / name)]


def the(kind: str) -> Doc:
    found = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> Doc:
    spec: Doc = the("DaemonSet")["spec"]["template"]["spec"]
    return spec


def agentd_container() -> Doc:
    found: list[Doc] = [c for c in pod_spec()["containers"] if c["name"] == "agentd"]
    [container] = found
    return container


def validate(doc: Doc, version: str = KUBERNETES_VERSION) -> None:
    """Raise kubernetes_validate.ValidationError when `doc` breaks the schema of `version`."""
    kubernetes_validate.validate(doc, version, strict=True)


def configmap_toml() -> str:
    text: str = the("ConfigMap")["data"]["agentd.toml"]
    return text


def without_cluster_section(text: str) -> str:
    """The TOML without its [cluster] table (up to the next table header)."""
    return re.sub(r"(?ms)^\[cluster\]\n.*?(?=^\[)", "", text)


def load_agentd_toml(tmp_path: Path) -> LoadedConfig:
    """The ConfigMap's agentd.toml through agentd's own loader.

    Until the lead's [cluster] loader lands on main, load_config rejects the section as an
    unknown key and nothing else: then it is stripped and the rest loaded. Any other problem fails.
    """
    path = tmp_path / "agentd.toml"
    path.write_text(configmap_toml())
    try:
        return load_config(path)
    except ConfigError as exc:
        if [p.split(":")[0] for p in exc.problems] != ["cluster"]:
            raise
    path.write_text(without_cluster_section(configmap_toml()))
    return load_config(path)


def leaf_paths(values: Doc, prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def chart_keys() -> set[str]:
    keys = set()
    for line in CHART_KEYS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            keys.add(line.split()[0])
    return keys


def unknown_chart_keys(values: Doc) -> list[str]:
    """Paths in `values` that the chart does not read (free-form maps end in `.*`)."""
    keys = chart_keys()
    free = tuple(k[: -len("*")] for k in keys if k.endswith(".*"))
    return [p for p in leaf_paths(values) if p not in keys and not p.startswith(free)]


def nats_values() -> Doc:
    [values] = load_yaml(K8S / "nats-values.yaml")
    return values


# -- schema validation ---------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "nats-values.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)
    assert kustomization()["namespace"] == NAMESPACE
    kinds = {doc["kind"] for _, doc in manifests()}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }


@pytest.mark.parametrize(
    "name,doc", manifests(), ids=[f"{d['kind']}/{d['metadata']['name']}" for _, d in manifests()]
)
def test_every_object_validates_against_the_kubernetes_schemas(name: str, doc: Doc) -> None:
    validate(doc)
    if doc["kind"] != "Namespace":
        assert doc["metadata"]["namespace"] == NAMESPACE, name


def test_newest_schemas_accept_them() -> None:
    newest = kubernetes_validate.latest_version()
    for _, doc in manifests():
        validate(doc, newest)


def test_a_broken_copy_fails_validation() -> None:
    daemonset = the("DaemonSet")
    validate(daemonset)

    misspelt = copy.deepcopy(daemonset)
    spec = misspelt["spec"]["template"]["spec"]
    spec["nodeSelecter"] = spec.pop("nodeSelector")
    with pytest.raises(kubernetes_validate.ValidationError, match="nodeSelecter"):
        validate(misspelt)

    wrong_type = copy.deepcopy(daemonset)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9464"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)

    no_selector = copy.deepcopy(daemonset)
    del no_selector["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError, match="selector"):
        validate(no_selector)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is missing")
def test_kustomize_builds_valid_objects_in_the_namespace_with_a_pinned_image() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert len(docs) == len(manifests())
    for doc in docs:
        validate(doc)
    [daemonset] = [d for d in docs if d["kind"] == "DaemonSet"]
    spec = daemonset["spec"]["template"]["spec"]
    for container in spec["initContainers"] + spec["containers"]:
        repository, _, tag = container["image"].rpartition(":")
        assert repository.endswith("/agentd") and tag and tag != "latest", container["image"]


# -- what the DaemonSet promises ------------------------------------------------------------------


def test_agentd_runs_on_gpu_nodes_only_and_gets_a_gpu() -> None:
    spec = pod_spec()
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(
        t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
        for t in spec["tolerations"]
    )
    resources = agentd_container()["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    # an extended resource's request, when given, must equal its limit
    gpus = resources["limits"]["nvidia.com/gpu"]
    assert resources["requests"].get("nvidia.com/gpu", gpus) == gpus


def test_agentd_runs_the_daemon_on_the_mounted_config() -> None:
    container = agentd_container()
    argv = container.get("command", []) + container.get("args", [])
    assert argv == ["agentd", "--config", CONFIG_PATH, "run"]
    config_dir, config_name = CONFIG_PATH.rsplit("/", 1)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    [volume] = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    assert config_name in the("ConfigMap")["data"]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates


def test_agentd_node_is_the_kubernetes_node_name() -> None:
    env = {e["name"]: e for e in agentd_container()["env"]}
    assert env["AGENTD_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_state_lives_on_the_node_where_the_config_puts_it(tmp_path: Path) -> None:
    config = load_agentd_toml(tmp_path).config
    assert str(config.daemon.state_dir) == STATE_DIR
    [mount] = [m for m in agentd_container()["volumeMounts"] if m["mountPath"] == STATE_DIR]
    assert not mount.get("readOnly", False)
    [volume] = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"] == {"path": STATE_DIR, "type": "DirectoryOrCreate"}
    # the init container hands it to the user agentd runs as
    [init] = pod_spec()["initContainers"]
    assert any(m["mountPath"] == STATE_DIR for m in init["volumeMounts"])
    assert str(pod_spec()["securityContext"]["runAsUser"]) in "\n".join(init["command"])


def test_probes_call_the_metrics_endpoint_on_an_exposed_port(tmp_path: Path) -> None:
    container = agentd_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics = load_agentd_toml(tmp_path).config.metrics
    assert metrics.enabled and metrics.host == "0.0.0.0"  # the kubelet probes the pod's address
    assert ports["metrics"] == metrics.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ports or get["port"] in ports.values(), probe
        assert get["path"] == "/metrics", probe
    service = the("Service")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = the("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in ports and port["port"] == metrics.port


def test_the_pod_is_stopped_no_sooner_than_the_drain_and_the_systemd_unit(tmp_path: Path) -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    drain = load_agentd_toml(tmp_path).config.daemon.drain_grace_s
    assert grace > drain + 5  # agentd forces its children 5 s after the drain
    unit = (ROOT / "deploy" / "systemd" / "agentd.service").read_text()
    [stop] = re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert grace == int(stop)


def test_every_container_is_hardened() -> None:
    spec = pod_spec()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert the("ServiceAccount")["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    for container in spec["initContainers"] + spec["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not ctx.get("privileged"), container["name"]
    main = agentd_container()["securityContext"]
    assert main["runAsNonRoot"] is True and "add" not in main["capabilities"]
    # root only to chown the hostPath, with nothing but the two capabilities that needs
    [init] = spec["initContainers"]
    assert sorted(init["securityContext"]["capabilities"]["add"]) == ["CHOWN", "FOWNER"]


def test_the_disruption_budget_covers_the_daemonset_one_pod_at_a_time() -> None:
    budget = the("PodDisruptionBudget")["spec"]
    daemonset = the("DaemonSet")["spec"]
    assert budget["selector"] == daemonset["selector"]
    assert budget["maxUnavailable"] == 1
    assert daemonset["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


def test_the_pods_accept_the_metrics_port_only() -> None:
    policy = the("NetworkPolicy")["spec"]
    assert policy["podSelector"] == the("DaemonSet")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    ports = [port for rule in policy["ingress"] for port in rule["ports"]]
    assert ports == [{"port": "metrics", "protocol": "TCP"}]
    assert "metrics" in {p["name"] for p in agentd_container()["ports"]}


# -- agentd.toml in the ConfigMap -----------------------------------------------------------------


def test_the_configmap_toml_parses_and_carries_the_cluster_section() -> None:
    data = tomllib.loads(configmap_toml())
    assert data["cluster"] == CLUSTER_SECTION
    assert "cluster" not in tomllib.loads(without_cluster_section(configmap_toml()))
    assert data["cluster"]["stream_replicas"] <= nats_values()["config"]["cluster"]["replicas"]


def test_the_configmap_toml_loads_with_agentds_loader(tmp_path: Path) -> None:
    config = load_agentd_toml(tmp_path).config
    assert config.bus.url == f"nats://{NATS_RELEASE}.{NAMESPACE}.svc.cluster.local:4222"
    assert config.daemon.log_format == "json"
    assert config.identity.enabled and config.policy.mode == "enforce"
    # agents, policies and tools come from the checkout the image carries at /opt/agentd/src
    for folder in (config.agents.dir, config.policy.dir, config.tools.dir):
        assert (ROOT / folder.relative_to("/opt/agentd/src")).is_dir(), folder
    assert {pool.device for pool in config.models.values()} == {"gpu"}


def test_a_broken_configmap_toml_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text(configmap_toml().replace('log_format = "json"', 'log_format = "jsonl"'))
    with pytest.raises(ConfigError, match="log_format"):
        load_config(path)


# -- NATS chart values ----------------------------------------------------------------------------


def test_nats_values_make_a_three_server_jetstream_cluster_on_disk() -> None:
    config = nats_values()["config"]
    assert config["cluster"] == config["cluster"] | {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    spread = nats_values()["podTemplate"]["topologySpreadConstraints"]
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"


def test_nats_values_use_only_keys_the_chart_reads() -> None:
    assert unknown_chart_keys(nats_values()) == []


def test_a_key_of_the_old_chart_layout_is_caught() -> None:
    values = copy.deepcopy(nats_values())
    values["config"]["jetstream"]["fileStorage"] = {"size": "10Gi"}  # 0.x name
    values["cluster"] = {"enabled": True}  # 0.x place
    assert unknown_chart_keys(values) == ["config.jetstream.fileStorage.size", "cluster.enabled"]
