"""Adapt KServe's rendered kserve-resources chart to the local cluster (see ci/cluster/kserve.sh).

usage: kserve_manifests.py RENDERED.yaml CA.crt > kserve.yaml

Drops cert-manager's Issuer/Certificate and its CA-injection annotation (the CA goes into every webhook's
caBundle instead), the kube-rbac-proxy sidecar (its image cannot be pulled here) and KServe's own
ClusterServingRuntimes/ClusterStorageContainers (their images are not built here; v0.20 ships the runtimes in
a chart of their own, kserve-runtime-configs, not installed here, but still renders the default
ClusterStorageContainer).
Fails if the chart no longer has what this expects, rather than installing something half-adapted: the
controller Deployment, webhooks, and an inferenceservice-config that says what kserve.sh's --set asked for
(Standard mode, no Ingress; a renamed values key would otherwise be ignored by Helm without a word).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import yaml

DROP_KINDS = {"Issuer", "Certificate", "ClusterServingRuntime", "ClusterStorageContainer"}
WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
CONTROLLER = "kserve-controller-manager"
CONFIG = "inferenceservice-config"


def check_config(doc: dict) -> None:
    """Raise ValueError unless KServe's config says Standard (raw Deployment) mode and no Ingress."""
    data = doc.get("data") or {}
    try:
        mode = json.loads(data["deploy"])["defaultDeploymentMode"]
        no_ingress = json.loads(data["ingress"])["disableIngressCreation"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{CONFIG} has no readable deploy/ingress settings ({exc!r})") from exc
    if mode != "Standard":
        raise ValueError(f"{CONFIG} says defaultDeploymentMode {mode!r}, not 'Standard'")
    if no_ingress is not True:
        raise ValueError(f"{CONFIG} says disableIngressCreation {no_ingress!r}, not true")


def adapt(docs: list[dict], ca_bundle: str) -> list[dict]:
    """Return the documents to apply; raise ValueError when an expected object is missing."""
    kept: list[dict] = []
    webhooks = 0
    controller = config = False
    for doc in docs:
        kind = doc["kind"]
        if kind in DROP_KINDS:
            continue
        if kind in WEBHOOK_KINDS:
            doc["metadata"].get("annotations", {}).pop("cert-manager.io/inject-ca-from", None)
            for hook in doc["webhooks"]:
                hook["clientConfig"]["caBundle"] = ca_bundle
                webhooks += 1
        if kind == "Deployment" and doc["metadata"]["name"] == CONTROLLER:
            spec = doc["spec"]["template"]["spec"]
            spec["containers"] = [c for c in spec["containers"] if c["name"] != "kube-rbac-proxy"]
            for container in spec["containers"]:
                container["imagePullPolicy"] = "Never"
            controller = True
        if kind == "ConfigMap" and doc["metadata"]["name"] == CONFIG:
            check_config(doc)
            config = True
        kept.append(doc)
    if not controller:
        raise ValueError(f"no Deployment {CONTROLLER} in the rendered chart")
    if not webhooks:
        raise ValueError("no webhook configurations in the rendered chart")
    if not config:
        raise ValueError(f"no ConfigMap {CONFIG} in the rendered chart")
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    docs = [d for d in yaml.safe_load_all(Path(argv[1]).read_text()) if d]
    ca_bundle = base64.b64encode(Path(argv[2]).read_bytes()).decode()
    try:
        kept = adapt(docs, ca_bundle)
    except ValueError as exc:
        print(f"kserve_manifests: {exc}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(kept, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
