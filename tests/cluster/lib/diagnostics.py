"""What a failed scenario leaves to read afterwards: artifacts/<test id>/ with Helm's view of every release, and
the events, descriptions and pod logs of the e2e's namespaces and KServe's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from .kube import E2E_LABELS, Kube
from .setup import S3_NAMESPACE, Setup

ALWAYS = ("kserve", S3_NAMESPACE)


def _run(out: Path, argv: list[str], timeout: float = 120) -> None:
    """Append ARGV's output to OUT; never fails, never hangs."""
    with out.open("a") as f:
        f.write(f"+ {' '.join(argv)}\n")
        f.flush()
        try:
            subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            f.write(f"({exc})\n")


def test_dir(root: Path, nodeid: str) -> Path:
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


def collect(setup: Setup, kube: Kube, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    kubectl = [str(kube.kubectl_bin), "--kubeconfig", str(kube.kubeconfig)]
    helm = [str(setup.helm), "--kubeconfig", str(kube.kubeconfig)]
    namespaces = list(ALWAYS)
    try:
        listed = subprocess.run(
            [
                *kubectl,
                "get",
                "namespaces",
                "-l",
                ",".join(f"{k}={v}" for k, v in E2E_LABELS.items()),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        namespaces = [n["metadata"]["name"] for n in json.loads(listed.stdout)["items"]] + namespaces
        releases = json.loads(
            subprocess.run(
                [*helm, "list", "-A", "-o", "json"], capture_output=True, text=True, timeout=60
            ).stdout
        )
    except (OSError, ValueError, subprocess.TimeoutExpired):
        releases = []
    _run(dest / "helm.txt", [*helm, "list", "-A"])
    for r in releases:
        for verb in (["history"], ["status"], ["get", "hooks"]):
            _run(dest / "helm.txt", [*helm, *verb, r["name"], "-n", r["namespace"]])
    _run(dest / "cluster.txt", [*kubectl, "get", "nodes,namespaces", "-o", "wide"])
    _run(
        dest / "cluster.txt",
        [*kubectl, "get", "clusterstoragecontainers,clusterservingruntimes", "-o", "wide"],
    )
    _run(dest / "cluster.txt", [*kubectl, "get", "networkpolicies", "-A", "-o", "wide"])
    for ns in namespaces:
        kinds = "all,inferenceservices,servingruntimes,jobs,pvc,configmaps,secrets,ingresses,networkpolicies"
        _run(dest / f"{ns}-get.txt", [*kubectl, "get", kinds, "-n", ns, "-o", "wide"])
        _run(
            dest / f"{ns}-describe.txt",
            [*kubectl, "describe", "pods,jobs,deployments,statefulsets,inferenceservices", "-n", ns],
        )
        _run(dest / f"{ns}-events.txt", [*kubectl, "get", "events", "-n", ns, "--sort-by=.lastTimestamp"])
        try:
            pods = subprocess.run(
                [*kubectl, "get", "pods", "-n", ns, "-o", "name"], capture_output=True, text=True, timeout=60
            ).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            pods = []
        for pod in pods:
            for extra in ([], ["--previous"]):
                _run(
                    dest / f"{ns}-logs.txt",
                    [*kubectl, "logs", "-n", ns, pod, "--all-containers", "--prefix", "--timestamps", *extra],
                )
