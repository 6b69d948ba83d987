"""One-off pods the e2e runs inside the cluster: the in-pod checks (tests/images/services/e2e_probe.py in the
test-only image) report through the termination message, a Kubernetes API field, never scraped stdout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lightkube.resources.core_v1 import Pod

from .kube import E2E_LABELS, Kube
from .wait import NotYet, wait_until

PROBE = "/usr/local/bin/e2e_probe.py"
POD_SECONDS = 600

# The e2e's own pods run as the chart's do, so that Pod Security `restricted` admits them.
RESTRICTED_POD = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "automountServiceAccountToken": False,
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class PodResult:
    name: str
    phase: str
    exit_code: int | None
    result: dict[str, Any] | None  # the probe's JSON (termination message), when it wrote one
    logs: str


def start_pod(
    kube: Kube,
    namespace: str,
    name: str,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Create a one-off pod (restricted, never restarted, image already on the node)."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {**E2E_LABELS, **(labels or {})}},
            "spec": {
                **RESTRICTED_POD,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": command,
                        "env": [{"name": k, "value": v} for k, v in {"HOME": "/tmp", **(env or {})}.items()],
                        "securityContext": RESTRICTED_CONTAINER,
                        "terminationMessagePolicy": "File",
                    }
                ],
            },
        }
    )


def finish_pod(kube: Kube, namespace: str, name: str, timeout: float = POD_SECONDS) -> PodResult:
    """Wait until the pod has finished, read its result, print its output, delete it."""

    def done() -> Pod:
        pod = kube.api.get(Pod, name, namespace=namespace)
        if pod.status is None or pod.status.phase not in ("Succeeded", "Failed"):
            raise NotYet(f"pod {name} is {pod.status.phase if pod.status else 'new'}")
        return pod

    pod = wait_until(done, what=f"pod {namespace}/{name} has finished", timeout=timeout, interval=1)
    state = pod.status.containerStatuses[0].state.terminated if pod.status.containerStatuses else None
    message = (state.message or "").strip() if state else ""
    try:
        result = json.loads(message) if message else None
    except ValueError:
        result = None
    logs = kube.logs(name, namespace)
    for line in logs.splitlines():
        print(f"    [{name}] {line}")
    kube.delete(Pod, name, namespace, timeout=120)
    return PodResult(name, pod.status.phase, state.exitCode if state else None, result, logs)


def run_pod(kube: Kube, namespace: str, name: str, image: str, command: list[str], **kw: Any) -> PodResult:
    start_pod(kube, namespace, name, image, command, **kw)
    return finish_pod(kube, namespace, name)


def probe_command(*args: str) -> list[str]:
    return ["python3", PROBE, *args]
