"""What of a release is still on the cluster after `helm uninstall`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from .kube import E2E_LABELS, Kube
from .wait import wait_until

# What Kubernetes puts in every namespace
DEFAULTS = {"serviceaccount/default", "configmap/kube-root-ca.crt"}
CLUSTER_KINDS = (
    "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations,"
    "clusterstoragecontainers.serving.kserve.io,clusterservingruntimes.serving.kserve.io"
)


def leftovers(kube: Kube, namespace: str, release: str) -> list[str]:
    """Every object of the release still there: all listable kinds in its namespace (less what Kubernetes puts in
    every namespace and what the e2e made itself), its cluster-scoped objects, volumes bound in the namespace.
    Raises (rather than answering "nothing") when the API cannot be read."""
    kinds = kube.kubectl(
        "api-resources", "--verbs=list", "--namespaced", "-o", "name", timeout=60
    ).stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    found = kube.kubectl("get", ",".join(kinds), "-n", namespace, "-o", "name", timeout=60).stdout.split()
    selector = ",".join(f"{k}={v}" for k, v in E2E_LABELS.items())
    mine = kube.kubectl(
        "get", "services,secrets,pods", "-n", namespace, "-l", selector, "-o", "name", timeout=60
    )
    cluster = kube.kubectl(
        "get", CLUSTER_KINDS, "-l", f"app.kubernetes.io/instance={release}", "-o", "name", timeout=60
    )
    pvs = json.loads(kube.kubectl("get", "persistentvolumes", "-o", "json", timeout=60).stdout)["items"]
    skip = DEFAULTS | set(mine.stdout.split())
    out = [o for o in found if o not in skip]
    # cluster-scoped objects are named <namespace>-<release>-... (releases of one name in several namespaces)
    out += [o for o in cluster.stdout.split() if f"/{namespace}-{release}-" in o]
    out += [
        f"persistentvolume/{pv['metadata']['name']}"
        for pv in pvs
        if (pv["spec"].get("claimRef") or {}).get("namespace") == namespace
    ]
    return out


def only_volume_left(left: list[str], release: str) -> bool:
    """What `persistence.whenDeleted: Retain` keeps and nothing else: one PVC, its volume, and the generated
    PostgreSQL password that opens it (when the chart generated one)."""
    pvcs = [o for o in left if o.startswith("persistentvolumeclaim/")]
    pvs = [o for o in left if o.startswith("persistentvolume/")]
    rest = [o for o in left if not o.startswith("persistentvolume") and o != f"secret/{release}-postgresql"]
    return len(pvcs) == 1 and len(pvs) == 1 and not rest


def settled(
    kube: Kube, namespace: str, release: str, done: Callable[[list[str]], bool], what: str
) -> list[str]:
    """What is left of the release once ``done(leftovers)`` holds, or after 300 s (deletions are asynchronous:
    Kubernetes' garbage collector and finalizers take a moment); the caller asserts on the list it gets."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: done(leftovers(kube, namespace, release)), what=what, timeout=300, interval=5)
    return leftovers(kube, namespace, release)
