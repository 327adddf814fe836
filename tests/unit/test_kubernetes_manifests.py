"""deploy/kubernetes: every object validates against the Kubernetes schemas (kubernetes-validate ships them:
no network), strictly (an unknown field is an error), for the oldest Kubernetes the manifests support and the
newest the schemas know; and the pieces agree with each other and with the daemon's own configuration
parser — the ConfigMap's sandboxd.toml loads, the probes ask the health listener, the grace periods match,
the Service and the budget select the DaemonSet's pods, the scrape annotations name the metrics proxy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sandboxd.server.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OLDEST_KUBERNETES = "1.29"  # grpc probes are GA from 1.27; 1.29 is the oldest release still patched by vendors
MARGIN_S = 10  # the quiet wait (≤ 2 s), the server's stop (2 s), closing sessions


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


def one(kind: str) -> dict[str, Any]:
    [found] = [document for _, document in documents() if document["kind"] == kind]
    return found


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_object_validates_strictly(version: str) -> None:
    kinds = set()
    for name, document in documents():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{name}: {document['kind']} {document['metadata']['name']}: {error}") from None
        kinds.add(document["kind"])
    assert {"DaemonSet", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_a_broken_manifest_does_not_validate() -> None:
    daemonset = one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {"port": 7071}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, OLDEST_KUBERNETES, strict=True)


def test_the_configmap_is_a_configuration_the_daemon_loads(tmp_path: Path) -> None:
    text = one("ConfigMap")["data"]["sandboxd.toml"]
    principals = DEPLOY / "principals.example.toml"  # what the Secret sandboxd-principals holds
    (tmp_path / "sandboxd.toml").write_text(text.replace("/etc/sandboxd/principals/principals.toml", str(principals)))
    config = load_config(tmp_path / "sandboxd.toml")
    assert {"gateway", "operator", "local-admin"} <= set(config.policy.principals)
    assert config.daemon.tls is not None and config.daemon.health_listen == "0.0.0.0:7071"

    spec = one("DaemonSet")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == config.daemon.grace_period_ms // 1000 + MARGIN_S
    [daemon] = [c for c in spec["containers"] if c["name"] == "sandboxd"]
    assert daemon["securityContext"]["privileged"] is True
    health_port = int(config.daemon.health_listen.rpartition(":")[2])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert daemon[probe]["grpc"]["port"] == health_port, probe
    assert daemon["readinessProbe"]["grpc"]["service"] == "sandboxd.v1.Sandbox"  # NOT_SERVING while draining
    assert "--instance=$(POD_NAME)" in daemon["args"]
    grpc_port = int((config.daemon.tcp_listen or "").rpartition(":")[2])
    assert {p["name"]: p["containerPort"] for p in daemon["ports"]}["grpc"] == grpc_port

    # Every file the configuration names is mounted from where it should come.
    mounts = {m["mountPath"]: m for m in daemon["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    named = {config.daemon.tls.cert_file: "sandboxd-tls", config.daemon.tls.key_file: "sandboxd-tls",
             config.policy.auth.jwt_key_file: "sandboxd-jwt", config.audit.key_file: "sandboxd-audit-key",
             Path("/etc/sandboxd/principals/principals.toml"): "sandboxd-principals"}
    for path, secret in named.items():
        assert path is not None
        mount = mounts.get(str(path)) or mounts[str(path.parent)]
        assert volumes[mount["name"]]["secret"]["secretName"] == secret, path
    assert mounts["/etc/sandboxd/audit-key/audit.key"]["subPath"] == "audit.key"  # not a symlink: O_NOFOLLOW
    assert "hostPath" in volumes[mounts[str(config.audit.path.parent)]["name"]]  # the chain outlives the pod


def test_the_service_budget_and_scrapers_find_the_daemons() -> None:
    daemonset = one("DaemonSet")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    service = one("Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance with round_robin themselves
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    [proxy] = [c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == "metrics-proxy"]
    assert int(annotations["prometheus.io/port"]) == proxy["ports"][0]["containerPort"]
    assert re.search(r"--upstream=http://127\.0\.0\.1:9464/", " ".join(proxy["args"]))
