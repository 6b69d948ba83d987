"""Just enough Kubernetes API for the lifecycle: read and pin the InferenceService, read a Job's and Helm's
record of a revision. In-cluster auth (the pod's ServiceAccount token); every call names what it touched."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .errors import ConfigError, HousingError, NotFound

log = logging.getLogger(__name__)

VERSION_ANNOTATION = "housing-mlops.io/model-version"
ISVC_API = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
# Helm 3 and 4 keep each revision in a Secret of this name (the default `secret` storage driver), labelled
# with its status: pending-install/-upgrade/-rollback while Helm works on it, then deployed/failed/superseded.
HELM_RECORD = "sh.helm.release.v1.{name}.v{revision}"
# The field manager the pin is written as (managedFields), so that `kubectl get -o yaml --show-managed-fields`
# names its one writer beside Helm's (docs/chart.md, "Who writes which field").
FIELD_MANAGER = "housing-mlops-reconciler"
DEPLOYING = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})


def _sa_dir() -> Path:
    return Path(os.environ.get("HOUSING_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))


def _api() -> tuple[str, dict[str, str], str | bool]:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = _sa_dir() / "token"
    if not host or not token_file.exists():
        raise ConfigError("not running in a pod with a ServiceAccount token: cannot reach the Kubernetes API")
    scheme = os.environ.get("HOUSING_KUBE_SCHEME", "https")
    ca = _sa_dir() / "ca.crt"
    return (
        f"{scheme}://{host}:{port}",
        {"Authorization": f"Bearer {token_file.read_text().strip()}"},
        str(ca) if ca.exists() else True,
    )


def namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    ns_file = _sa_dir() / "namespace"
    if ns_file.exists():
        return ns_file.read_text().strip()
    raise ConfigError("no namespace: set --isvc-namespace or HOUSING_ISVC_NAMESPACE")


def _call(method: str, path: str, what: str, body: dict | None = None) -> requests.Response:
    base, headers, verify = _api()
    if body is not None:
        headers = {**headers, "Content-Type": "application/merge-patch+json"}
    try:
        return requests.request(
            method,
            base + path,
            data=None if body is None else json.dumps(body),
            headers=headers,
            verify=verify,
            timeout=30,
        )
    except requests.RequestException as exc:
        raise HousingError(f"{what} failed: {exc}") from exc


def _why(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text


@dataclass(frozen=True)
class Pin:
    """What an InferenceService is pinned to: the exact model version its predictor pods fetch (the storageUri the
    chart renders says `…/<model>/pinned`; the storage initializer reads the version from this annotation, which
    KServe copies to every predictor pod), and the storageUri itself."""

    version: str | None
    uri: str | None


def pinned(name: str, ns: str | None) -> Pin:
    """The InferenceService's pin (version None: never pinned)."""
    ns = namespace(ns)
    response = _call("GET", ISVC_API.format(ns=ns, name=name), f"reading InferenceService {ns}/{name}")
    if response.status_code == 404:
        raise NotFound(f"InferenceService {ns}/{name} not found")
    if not response.ok:
        raise HousingError(
            f"reading InferenceService {ns}/{name} failed: {response.status_code} {_why(response)}"
        )
    predictor = response.json().get("spec", {}).get("predictor", {})
    annotations = predictor.get("annotations") or {}
    return Pin(annotations.get(VERSION_ANNOTATION), (predictor.get("model") or {}).get("storageUri"))


def pin(name: str, ns: str | None, version: str) -> None:
    """Pin the InferenceService to ``version``: its predictor pods carry the version as an annotation, which the
    storage initializer fetches; KServe rolls the predictor. The chart never renders the annotation, so Helm
    (three-way merge or server-side apply, upgrade or rollback) neither reverts nor conflicts with it.

    Why an annotation and not the storageUri: KServe (v0.20, `IsMMSPredictor`) takes a predictor without a
    storageUri for a multi-model server and injects its model agent, so Helm must render one, and a storageUri Helm
    renders is one Helm re-applies (a rollback would bring an old pin back)."""
    ns = namespace(ns)
    what = f"pinning InferenceService {ns}/{name} to version {version}"
    patch = {"spec": {"predictor": {"annotations": {VERSION_ANNOTATION: str(version)}}}}
    response = _call(
        "PATCH", f"{ISVC_API.format(ns=ns, name=name)}?fieldManager={FIELD_MANAGER}", what, patch
    )
    if response.status_code == 404:
        raise NotFound(f"InferenceService {ns}/{name} not found")
    if not response.ok:
        why = _why(response)
        hint = ""
        if "deploymentMode cannot be changed" in why:
            hint = " (set inference.deploymentMode to the mode KServe recorded: Standard on KServe 0.16+)"
        raise HousingError(f"{what} failed: {response.status_code} {why[:500]}{hint}")
    log.info("InferenceService %s/%s pinned to version %s", ns, name, version)


def job_failure(name: str, ns: str | None) -> str | None:
    """Why Job ``name`` failed (its Failed condition), or None while it has not (or cannot be read)."""
    try:
        ns = namespace(ns)
        response = _call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", f"reading Job {name}")
    except (ConfigError, HousingError) as exc:
        log.debug("cannot read Job %s: %s", name, exc)
        return None
    if not response.ok:
        log.debug("cannot read Job %s: %s", name, response.status_code)
        return None
    for condition in response.json().get("status", {}).get("conditions", []):
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = condition.get("reason", "Failed")
            return (
                f"Job {ns}/{name} {reason}: {condition.get('message', '')} (kubectl logs -n {ns} job/{name})"
            )
    return None


@dataclass(frozen=True)
class HelmRecord:
    """Helm's record of one revision: its status, and the install it belongs to."""

    status: str
    install: str  # 12 hex of the install's first-deployed time: a reinstall of the same name differs


def helm_record(ns: str, release: str, revision: int) -> HelmRecord | None:
    """Helm's record of ``release`` at ``revision``, or None when it is gone or no longer ours to read (the
    release was uninstalled, with our ServiceAccount and Role, or rolled back: the Role of the revision applied
    now names only its own record)."""
    secret = HELM_RECORD.format(name=release, revision=revision)
    response = _call(
        "GET", f"/api/v1/namespaces/{ns}/secrets/{secret}", f"reading Helm's record {ns}/{secret}"
    )
    if response.status_code in (401, 403, 404):  # 401: our ServiceAccount itself was deleted with the release
        log.info("Helm's record %s/%s: %s", ns, secret, response.status_code)
        return None
    if not response.ok:
        raise HousingError(
            f"reading Helm's record {ns}/{secret} failed: {response.status_code} {_why(response)}"
        )
    body: dict[str, Any] = response.json()
    status = (body.get("metadata", {}).get("labels") or {}).get("status", "")
    return HelmRecord(status, install_key(_first_deployed(body, f"{ns}/{secret}")))


def _first_deployed(secret: dict[str, Any], where: str) -> str:
    """`info.first_deployed` of a Helm release Secret (base64 of base64 of gzipped JSON): one value per install."""
    try:
        raw = base64.b64decode(base64.b64decode(secret["data"]["release"]))
        release = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        return str(release["info"]["first_deployed"])
    except (
        KeyError,
        ValueError,
        OSError,
        TypeError,
        EOFError,
        zlib.error,
    ) as exc:  # gzip: truncated, corrupt
        raise HousingError(
            f"Helm's record {where} is not a Helm release ({type(exc).__name__}: {exc})"
        ) from exc


def install_key(first_deployed: str) -> str:
    return hashlib.sha256(first_deployed.encode()).hexdigest()[:12]


def check_install_key(key: str | None) -> str | None:
    if key is not None and not re.fullmatch(r"[0-9a-z]{1,12}", key):
        raise ConfigError(f"install id must be 1-12 lowercase letters or digits, got {key!r}")
    return key
