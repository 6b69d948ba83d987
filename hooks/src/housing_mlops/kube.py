"""Just enough Kubernetes API to roll an InferenceService out: one merge-patch, in-cluster auth."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import requests

from .errors import ConfigError, HousingError, NotFound

log = logging.getLogger(__name__)

VERSION_ANNOTATION = "housing-mlops.io/model-version"


def _sa_dir() -> Path:
    return Path(os.environ.get("HOUSING_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))


def _api() -> tuple[str, dict[str, str], str | bool]:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = _sa_dir() / "token"
    if not host or not token_file.exists():
        raise ConfigError(
            "not running in a pod with a ServiceAccount token: cannot patch the InferenceService"
        )
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


def rollout(name: str, ns: str | None, model_version: str, uri: str) -> None:
    """Annotate the predictor with the served version: KServe rolls the pods, re-fetching the alias.

    The chart never renders this annotation, so `helm upgrade` neither reverts nor conflicts with it.
    """
    base, headers, verify = _api()
    ns = namespace(ns)
    url = f"{base}/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
    patch = {"spec": {"predictor": {"annotations": {VERSION_ANNOTATION: str(model_version)}}}}
    try:
        response = requests.patch(
            url,
            data=json.dumps(patch),
            headers={**headers, "Content-Type": "application/merge-patch+json"},
            verify=verify,
            timeout=30,
        )
    except requests.RequestException as exc:
        raise HousingError(f"patching InferenceService {ns}/{name} failed: {exc}") from exc
    if response.status_code == 404:
        raise NotFound(f"InferenceService {ns}/{name} not found")
    if not response.ok:
        try:
            why = response.json().get("message", response.text)
        except ValueError:
            why = response.text
        hint = ""
        if "deploymentMode cannot be changed" in why:
            hint = " (set inference.deploymentMode to the mode KServe recorded: Standard on KServe 0.16+)"
        raise HousingError(
            f"patching InferenceService {ns}/{name} failed: {response.status_code} {why[:500]}{hint}"
        )
    log.info("InferenceService %s/%s now serves version %s (%s)", ns, name, model_version, uri)


def job_failure(name: str, ns: str | None) -> str | None:
    """Why Job ``name`` failed (its Failed condition), or None while it has not (or cannot be read)."""
    try:
        base, headers, verify = _api()
        ns = namespace(ns)
        response = requests.get(
            f"{base}/apis/batch/v1/namespaces/{ns}/jobs/{name}", headers=headers, verify=verify, timeout=15
        )
    except (ConfigError, requests.RequestException) as exc:
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


def served_version(name: str, ns: str | None) -> str | None:
    """The model version InferenceService ``name`` is annotated to serve (None: never rolled out by us)."""
    base, headers, verify = _api()
    ns = namespace(ns)
    url = f"{base}/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
    try:
        response = requests.get(url, headers=headers, verify=verify, timeout=30)
    except requests.RequestException as exc:
        raise HousingError(f"reading InferenceService {ns}/{name} failed: {exc}") from exc
    if response.status_code == 404:
        raise NotFound(f"InferenceService {ns}/{name} not found")
    if not response.ok:
        raise HousingError(f"reading InferenceService {ns}/{name} failed: {response.status_code}")
    annotations = response.json().get("spec", {}).get("predictor", {}).get("annotations") or {}
    return annotations.get(VERSION_ANNOTATION)
