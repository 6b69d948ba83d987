"""kube-linter's default checks that checkov and kube-score do not make (tests/chart/object_checks.py): none
fires on any values file, and each fires on the render it is meant to catch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import KSERVE_APIS, ROOT, VALUES_FILES, render, values_id
from .object_checks import lint

SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
PROD = ROOT / "values" / "prod.yaml"
# renders the ServiceMonitor too (off by default), so that its checks have something to read
MONITOR_ON = "inference.metrics.serviceMonitor.enabled=true"


def objects(values: Path = PROD, *sets: str) -> list[dict]:
    return copy.deepcopy(list(render((values,), sets, api_versions=(*KSERVE_APIS, SERVICE_MONITOR_API))))


def one(objs: list[dict], kind: str, name_part: str = "") -> dict:
    found = [o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"]]
    assert found, f"no {kind} *{name_part}* rendered"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_no_finding(values: Path):
    objs = objects(values, MONITOR_ON)
    findings = [str(f) for f in lint(objs)]
    print(f"{values_id(values)}: {len(objs)} objects, {len(findings)} findings")
    assert findings == []


def test_prod_has_what_the_checks_read():
    """The checks below are not vacuous on prod: it renders every kind they look across."""
    kinds = {o["kind"] for o in objects(PROD, MONITOR_ON)}
    assert {"NetworkPolicy", "PodDisruptionBudget", "Ingress", "ServiceMonitor", "Service"} <= kinds
    assert {"Deployment", "StatefulSet", "Job", "Pod", "InferenceService", "ServingRuntime"} <= kinds


def break_service_account(objs: list[dict]) -> None:
    pod_spec(one(objs, "Deployment", "mlflow"))["serviceAccountName"] = "housing-nobody"


def deprecated_account_field(objs: list[dict]) -> None:
    pod_spec(one(objs, "Job", "promote"))["serviceAccount"] = "housing-promotion"


def duplicate_env(objs: list[dict]) -> None:
    container = pod_spec(one(objs, "Job", "train"))["containers"][0]
    container["env"] = [*container.get("env", []), {"name": "A", "value": "1"}, {"name": "A", "value": "2"}]


def rename_container_port(objs: list[dict]) -> None:
    pod_spec(one(objs, "Deployment", "mlflow"))["containers"][-1]["ports"][0]["name"] = "web"


def probe_unknown_port(objs: list[dict]) -> None:
    container = pod_spec(one(objs, "StatefulSet", "postgresql"))["containers"][0]
    container["livenessProbe"] = {"tcpSocket": {"port": 5433}}


def probe_unknown_name(objs: list[dict]) -> None:
    for container in pod_spec(one(objs, "Deployment", "mlflow"))["containers"]:
        if "readinessProbe" in container:
            container["readinessProbe"]["httpGet"]["port"] = "health"


def mismatching_selector(objs: list[dict]) -> None:
    one(objs, "Deployment", "mlflow")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "x"


def blocking_pdb(objs: list[dict]) -> None:
    one(objs, "PodDisruptionBudget", "mlflow")["spec"]["minAvailable"] = 2


def zero_unavailable_pdb(objs: list[dict]) -> None:
    spec = one(objs, "PodDisruptionBudget", "mlflow")["spec"]
    spec.pop("minAvailable")
    spec["maxUnavailable"] = 0


def default_eviction_policy(objs: list[dict]) -> None:
    one(objs, "PodDisruptionBudget", "predictor")["spec"].pop("unhealthyPodEvictionPolicy")


def dangling_policy(objs: list[dict]) -> None:
    one(objs, "NetworkPolicy", "predictor")["spec"]["podSelector"]["matchLabels"][
        "serving.kserve.io/inferenceservice"
    ] = "another-model"


def dangling_pdb(objs: list[dict]) -> None:
    selector = one(objs, "PodDisruptionBudget", "predictor")["spec"]["selector"]
    selector["matchLabels"]["component"] = "transformer"


def ingress_to_missing_service(objs: list[dict]) -> None:
    backend = one(objs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"]["name"] = "housing-mlflow-ui"


def ingress_to_missing_port(objs: list[dict]) -> None:
    backend = one(objs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"]["port"] = {"name": "https"}


def monitor_missing_port(objs: list[dict]) -> None:
    one(objs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "prometheus"


def monitor_no_service(objs: list[dict]) -> None:
    one(objs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]["component"] = "explainer"


def runtime_without_metrics_port(objs: list[dict]) -> None:
    """The predictor Service KServe makes carries the runtime's ports: without `metrics` the monitor dangles."""
    container = one(objs, "ServingRuntime")["spec"]["containers"][0]
    container["ports"] = [p for p in container["ports"] if p["name"] != "metrics"]


def host_path(objs: list[dict]) -> None:
    pod_spec(one(objs, "Job", "train"))["volumes"].append(
        {"name": "docker", "hostPath": {"path": "/var/run"}}
    )


def ssh_port(objs: list[dict]) -> None:
    container = pod_spec(one(objs, "Deployment", "mlflow"))["containers"][-1]
    container["ports"].append({"name": "ssh", "containerPort": 22})


def bad_port_name(objs: list[dict]) -> None:
    container = pod_spec(one(objs, "Deployment", "mlflow"))["containers"][-1]
    container["ports"].append({"name": "Metrics_Port", "containerPort": 9100})


def unsafe_sysctl(objs: list[dict]) -> None:
    pod_spec(one(objs, "StatefulSet", "postgresql"))["securityContext"]["sysctls"] = [
        {"name": "kernel.shmmax", "value": "1"}
    ]


BREAKS: dict[str, tuple[Callable[[list[dict]], None], str, str]] = {
    "non-existent-service-account": (break_service_account, "Deployment/housing-mlflow", "housing-nobody"),
    "deprecated-service-account-field": (
        deprecated_account_field,
        "Job/housing-promote",
        "serviceAccountName",
    ),
    "duplicate-env-var": (duplicate_env, "Job/housing-train", "env A is set 2 times"),
    "invalid-target-ports": (rename_container_port, "Service/housing-mlflow", "targetPort 'http'"),
    "liveness-port": (probe_unknown_port, "StatefulSet/housing-postgresql", "5433"),
    "readiness-port": (probe_unknown_name, "Deployment/housing-mlflow", "'health'"),
    "mismatching-selector": (mismatching_selector, "Deployment/housing-mlflow", "pod template"),
    "pdb-min-available": (blocking_pdb, "PodDisruptionBudget/housing-mlflow", "minAvailable 2 with 2"),
    "pdb-max-unavailable": (zero_unavailable_pdb, "PodDisruptionBudget/housing-mlflow", "maxUnavailable 0"),
    "pdb-unhealthy-pod-eviction-policy": (
        default_eviction_policy,
        "PodDisruptionBudget/housing-predictor",
        "AlwaysAllow",
    ),
    "dangling-networkpolicy": (dangling_policy, "NetworkPolicy/housing-predictor", "matches no pod"),
    "dangling-pdb": (dangling_pdb, "PodDisruptionBudget/housing-predictor", "matches no pod"),
    "dangling-ingress": (ingress_to_missing_service, "Ingress/housing-mlflow", "housing-mlflow-ui"),
    "dangling-ingress port": (ingress_to_missing_port, "Ingress/housing-mlflow", "no port 'https'"),
    "dangling-servicemonitor": (monitor_missing_port, "ServiceMonitor/housing-predictor", "'prometheus'"),
    "dangling-servicemonitor selector": (
        monitor_no_service,
        "ServiceMonitor/housing-predictor",
        "no Service",
    ),
    "dangling-servicemonitor runtime": (
        runtime_without_metrics_port,
        "ServiceMonitor/housing-predictor",
        "'metrics'",
    ),
    "sensitive-host-mounts": (host_path, "Job/housing-train", "volume docker"),
    "ssh-port": (ssh_port, "Deployment/housing-mlflow/mlflow", "port 22"),
    "invalid-target-ports name": (bad_port_name, "Deployment/housing-mlflow/mlflow", "'Metrics_Port'"),
    "unsafe-sysctls": (unsafe_sysctl, "StatefulSet/housing-postgresql", "kernel.shmmax"),
}


@pytest.mark.parametrize("case", BREAKS)
def test_each_check_fires(case: str):
    breaker, where, words = BREAKS[case]
    objs = objects(PROD, MONITOR_ON)
    breaker(objs)
    findings = [str(f) for f in lint(objs)]
    check = case.split()[0]
    hits = [f for f in findings if f.startswith(where) and f": {check}: " in f and words in f]
    assert hits, findings
