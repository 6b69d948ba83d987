"""Adapt KServe's rendered kserve-resources chart to the local cluster (see ci/cluster/kserve.sh).

usage: kserve_manifests.py RENDERED.yaml CA.crt > kserve.yaml

Drops cert-manager's Issuer/Certificate and its CA-injection annotation (the CA goes into every webhook's
caBundle instead), the kube-rbac-proxy sidecar (its image cannot be pulled here) and KServe's own
ClusterServingRuntimes/ClusterStorageContainers (their images are not built here). Fails if the chart no
longer has what this expects, rather than installing something half-adapted.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import yaml

DROP_KINDS = {"Issuer", "Certificate", "ClusterServingRuntime", "ClusterStorageContainer"}
WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
CONTROLLER = "kserve-controller-manager"


def adapt(docs: list[dict], ca_bundle: str) -> list[dict]:
    """Return the documents to apply; raise ValueError when an expected object is missing."""
    kept: list[dict] = []
    webhooks = 0
    controller = False
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
        kept.append(doc)
    if not controller:
        raise ValueError(f"no Deployment {CONTROLLER} in the rendered chart")
    if not webhooks:
        raise ValueError("no webhook configurations in the rendered chart")
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
