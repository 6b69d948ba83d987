"""Hardened defaults on the rendered manifests of every values file: each pod and container (including the
KServe predictor, its ServingRuntime container and the storage initializer) against each control; no secret
value outside a Secret; one ServiceAccount per component; API tokens only where the API is used.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from .conftest import VALUES_FILES, render, values_id

# pods that call the Kubernetes API (they patch the InferenceService)
# pods that talk to the API server: the hooks and CronJobs that read the training Job or patch the
# InferenceService
TOKEN_USERS = ("-promote-", "-rollback-", "/housing-reconciler")
CREDENTIAL_URI = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def workloads(objects) -> list[tuple[str, dict, list[dict]]]:
    """(name, pod-level spec, containers) for every pod the release can start."""
    out = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        kind = obj["kind"]
        if kind == "Pod":
            spec = obj["spec"]
        elif kind in ("Deployment", "StatefulSet", "Job"):
            spec = obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "InferenceService":
            spec = obj["spec"]["predictor"]
            out.append((name, spec, [spec["model"]]))
            continue
        else:
            continue
        out.append((name, spec, spec.get("initContainers", []) + spec["containers"]))
    return out


def extra_containers(objects) -> list[tuple[str, dict]]:
    """Containers KServe injects into predictor pods: the runtime's and the storage initializer."""
    out = []
    for obj in objects:
        if obj["kind"] == "ServingRuntime":
            out += [(f"ServingRuntime/{obj['metadata']['name']}", c) for c in obj["spec"]["containers"]]
        if obj["kind"] == "ClusterStorageContainer":
            out.append((f"ClusterStorageContainer/{obj['metadata']['name']}", obj["spec"]["container"]))
    return out


def container_violations(name: str, container: dict, tmp_volumes: set[str] | None) -> list[str]:
    sc = container.get("securityContext", {})
    bad = []
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append("allowPrivilegeEscalation")
    if sc.get("readOnlyRootFilesystem") is not True:
        bad.append("readOnlyRootFilesystem")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        bad.append("capabilities.drop")
    if sc.get("runAsNonRoot") is not True:
        bad.append("runAsNonRoot")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad.append("seccompProfile")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if "/tmp" not in mounts or (tmp_volumes is not None and mounts["/tmp"] not in tmp_volumes):
        bad.append("emptyDir /tmp")
    return [f"{name}/{container.get('name', '?')}: {b}" for b in bad]


def audit(objects) -> tuple[list[str], int]:
    """Violations and the number of (pod or container) x control checks made."""
    violations, checks = [], 0
    for name, spec, containers in workloads(objects):
        psc = spec.get("securityContext", {})
        checks += 3
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
            violations.append(f"{name}: pod runAsNonRoot")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            violations.append(f"{name}: pod seccompProfile")
        uses_api = any(marker in name for marker in TOKEN_USERS)
        if spec.get("automountServiceAccountToken") is not uses_api:
            violations.append(f"{name}: automountServiceAccountToken should be {uses_api}")
        tmp = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers:
            checks += 6
            violations += container_violations(name, container, tmp)
    for name, container in extra_containers(objects):
        checks += 6
        violations += container_violations(name, container, None)
    return violations, checks


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_every_pod_is_hardened(values: Path):
    violations, checks = audit(render((values,)))
    print(f"{values_id(values)}: {checks} pod/container x control checks")
    assert checks > 0
    assert violations == []


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_one_service_account_per_component(values: Path):
    objects = render((values,))
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    users: dict[str, set[str]] = {}
    for obj in objects:
        for name, spec, _ in workloads([obj]):
            account = spec.get("serviceAccountName")
            assert account in accounts, f"{name} runs as {account!r}, not one of the chart's accounts"
            users.setdefault(account, set()).add(obj["metadata"]["labels"]["app.kubernetes.io/component"])
    shared = {account: comps for account, comps in users.items() if len(comps) > 1}
    assert shared == {}


def test_audit_catches_a_weakened_pod():
    objects = [dict(o) for o in render((VALUES_FILES[0],))]
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-mlflow")
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    weakened = {
        **container,
        "securityContext": {**container["securityContext"], "readOnlyRootFilesystem": False},
    }
    violations = container_violations("Deployment/x", weakened, {"tmp"})
    assert violations == ["Deployment/x/mlflow: readOnlyRootFilesystem"]


def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_no_secret_value_outside_secrets(values: Path):
    """The generated PostgreSQL password appears in its Secret only; credentials are never env literals."""
    objects = render((values,))
    secrets = [o for o in objects if o["kind"] == "Secret"]
    known = [base64.b64decode(v).decode() for s in secrets for v in s.get("data", {}).values()]
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        for text in strings(obj):
            for secret in known:
                assert secret not in text, f"{obj['kind']}/{obj['metadata']['name']} leaks a secret"
    for name, _, containers in workloads(objects):
        for container in containers:
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY")):
                    assert "valueFrom" in env, f"{name}: {env['name']} is a literal"
    for obj in objects:
        for text in strings(obj.get("data", {}) if obj["kind"] == "ConfigMap" else obj.get("spec", {})):
            assert not CREDENTIAL_URI.search(text), (
                f"{obj['kind']}/{obj['metadata']['name']}: user:password@ URI"
            )
