"""Kubernetes for the e2e: lightkube for the API (typed resources, no shelling out), kubectl only for what the
API has no plain call for (port-forward, cp, exec)."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.core_v1 import Namespace, PersistentVolume, Pod
from lightkube.types import CascadeType

from .wait import NotYet, wait_until

# KServe's kinds (its CRDs; lightkube has no models for them)
InferenceService = create_namespaced_resource(
    "serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"
)
ClusterStorageContainer = create_global_resource(
    "serving.kserve.io", "v1alpha1", "ClusterStorageContainer", "clusterstoragecontainers"
)

FIELD_MANAGER = "housing-mlops-e2e"
# What the e2e creates itself (not the chart): diagnostics and leftover checks tell the two apart.
E2E_LABELS = {"app.kubernetes.io/part-of": "housing-mlops-e2e"}


@dataclass(frozen=True)
class Kube:
    """The cluster as the e2e sees it: an API client and the kubectl to run beside it, on one kubeconfig."""

    kubeconfig: Path
    kubectl_bin: Path

    @property
    def api(self) -> Client:
        return _client(str(self.kubeconfig))

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """kubectl ARGS; its output is returned (and fails the test, with stderr, when ``check``)."""
        cmd = [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    def create(self, manifest: dict[str, Any]) -> Any:
        return self.api.create(codecs.from_dict(manifest))

    def exists(self, kind: type, name: str, namespace: str | None = None) -> bool:
        try:
            self.api.get(kind, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    def delete(
        self, kind: type, name: str, namespace: str | None = None, *, timeout: float = 180, wait: bool = True
    ) -> None:
        """Delete and (``wait``) wait until it is gone (foreground: a Job's pods go with it)."""
        try:
            self.api.delete(kind, name, namespace=namespace, cascade=CascadeType.FOREGROUND)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        if not wait:
            return
        wait_until(
            lambda: not self.exists(kind, name, namespace),
            what=f"{kind.__name__} {namespace or ''}/{name} is gone",
            timeout=timeout,
        )

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A fresh namespace: one left from an earlier run is deleted first (nothing of it is reused)."""
        if self.exists(Namespace, name):
            self.delete(Namespace, name, timeout=300)
        for pv in self.api.list(PersistentVolume):  # volumes an earlier run's claims there kept (Retain)
            if pv.spec.claimRef and pv.spec.claimRef.namespace == name:
                self.delete(PersistentVolume, pv.metadata.name, timeout=120)
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {**E2E_LABELS, **(labels or {})}},
            }
        )

    def pods(self, namespace: str, labels: dict[str, str]) -> list[Pod]:
        return list(self.api.list(Pod, namespace=namespace, labels=labels))

    def logs(self, pod: str, namespace: str, container: str | None = None, tail: int | None = None) -> str:
        lines = self.api.log(pod, namespace=namespace, container=container, tail_lines=tail)
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int, timeout: float = 60) -> Iterator[int]:
        """``kubectl port-forward TARGET :PORT`` for the block; yields the local port. It enters the pod's own
        network namespace, so NetworkPolicies (which filter the pod's interface) do not apply to it."""
        cmd = [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), "port-forward", "-n", namespace]
        proc = subprocess.Popen(
            [*cmd, target, f":{port}", "--address", "127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            local = _forwarded_port(proc, timeout)
            yield local
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _forwarded_port(proc: subprocess.Popen, timeout: float) -> int:
    """The local port kubectl announces ("Forwarding from 127.0.0.1:NNNN -> PORT")."""
    assert proc.stdout is not None
    box: dict[str, int] = {}

    def announced() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"kubectl port-forward exited {proc.returncode}: {err.strip()}")
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        if not match:
            raise NotYet(line.strip() or "no output yet")
        box["port"] = int(match.group(1))
        return True

    wait_until(announced, what="kubectl port-forward announces its port", timeout=timeout, interval=0.1)
    return box["port"]


_CLIENTS: dict[str, Client] = {}


def _client(kubeconfig: str) -> Client:
    if kubeconfig not in _CLIENTS:
        _CLIENTS[kubeconfig] = Client(config=KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)
    return _CLIENTS[kubeconfig]
