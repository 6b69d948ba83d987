"""A stand-in Kubernetes API server (stdlib http.server) with just the state the lifecycle touches: InferenceServices
(GET, JSON merge-PATCH), Jobs and Helm's release Secrets, stored as Helm stores them. No cluster runs in the Python
tests; kube.py talks to this one exactly as to a real API server (bearer token, paths, status codes).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

TOKEN = "tok123"
NAMESPACE = "ml"  # the pod's namespace (the ServiceAccount folder's `namespace` file)
ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
JOB = "/apis/batch/v1/namespaces/{ns}/jobs/{name}"
SECRET = "/api/v1/namespaces/{ns}/secrets/{name}"
MERGE_PATCH = "application/merge-patch+json"
# KServe 0.16's validating webhook, measured, on a legacy RawDeployment annotation
DEPLOYMENT_MODE_REFUSAL = (
    'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
    "update rejected: deploymentMode cannot be changed from 'Standard' to 'RawDeployment'"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what `application/merge-patch+json` means to the API server)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def helm_release_secret(
    ns: str,
    release: str,
    revision: int,
    status: str,
    first_deployed: str,
    *,
    payload: bytes | None = None,
) -> dict[str, Any]:
    """Helm 3/4's `secret` storage driver: Secret `sh.helm.release.v1.<release>.v<revision>` labelled with the
    status; data.release = base64 (the API's encoding of Secret data) of base64 (Helm's) of gzip of the release's
    JSON. ``payload`` replaces Helm's base64 string (to corrupt it)."""
    body = {
        "name": release,
        "namespace": ns,
        "version": revision,
        "info": {
            "first_deployed": first_deployed,
            "last_deployed": first_deployed if revision == 1 else "2026-12-05T08:00:00.123456789Z",
            "status": status,
            "description": "Upgrade complete" if status == "deployed" else "Preparing upgrade",
        },
        "chart": {"metadata": {"name": "housing-mlops", "version": "0.1.0"}},
        "config": {},
        "manifest": "---\n",
    }
    helm_encoded = (
        payload if payload is not None else base64.b64encode(gzip.compress(json.dumps(body).encode()))
    )
    name = f"sh.helm.release.v1.{release}.v{revision}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "name": release,
                "owner": "helm",
                "status": status,
                "version": str(revision),
                "modifiedAt": "1796000000",
            },
        },
        "data": {"release": base64.b64encode(helm_encoded).decode()},
    }


@dataclass
class Call:
    method: str
    path: str
    content_type: str
    authorization: str
    body: Any
    query: dict[str, str] = field(default_factory=dict)  # e.g. fieldManager


@dataclass
class FakeCluster:
    """The API server's objects by path, what it refuses, and every call it answered."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    forbidden: set[str] = field(
        default_factory=set
    )  # paths answered 403 (the ServiceAccount's Role lacks them)
    refusals: dict[str, tuple[int, str]] = field(default_factory=dict)  # PATCH path -> (code, message)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- objects ---

    def add_isvc(
        self, name: str, ns: str = NAMESPACE, *, version: str | None = None, uri: str | None = None
    ) -> str:
        """An InferenceService as the chart renders it in alias mode (storageUri ``uri``: the constant
        mlflow://<MLflow>/<model>/pinned; no version annotation), or pinned (the reconciler wrote ``version``)."""
        predictor: dict[str, Any] = {
            "model": {"modelFormat": {"name": "mlflow"}, "runtime": "housing-serving"}
        }
        if uri is not None:
            predictor["model"]["storageUri"] = uri
        if version is not None:
            predictor["annotations"] = {"housing-mlops.io/model-version": version}
        path = ISVC.format(ns=ns, name=name)
        self.objects[path] = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"predictor": predictor},
        }
        return path

    def isvc(self, name: str, ns: str = NAMESPACE) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[ISVC.format(ns=ns, name=name)])

    def pin_of(self, name: str, ns: str = NAMESPACE) -> tuple[str | None, str | None]:
        """(version annotation, storageUri) as stored now."""
        predictor = self.isvc(name, ns)["spec"]["predictor"]
        return (predictor.get("annotations") or {}).get("housing-mlops.io/model-version"), predictor[
            "model"
        ].get("storageUri")

    def add_job(self, name: str, ns: str = NAMESPACE, *, failed: tuple[str, str] | None = None) -> str:
        """A Job, running (no Failed condition) or failed with (reason, message)."""
        conditions = [{"type": "Complete", "status": "False"}]
        if failed is not None:
            conditions.append({"type": "Failed", "status": "True", "reason": failed[0], "message": failed[1]})
        path = JOB.format(ns=ns, name=name)
        self.objects[path] = {"kind": "Job", "metadata": {"name": name}, "status": {"conditions": conditions}}
        return path

    def add_helm_revision(
        self, release: str, revision: int, status: str, first_deployed: str, ns: str = NAMESPACE, **kwargs
    ) -> str:
        secret = helm_release_secret(ns, release, revision, status, first_deployed, **kwargs)
        path = SECRET.format(ns=ns, name=secret["metadata"]["name"])
        with self.lock:
            self.objects[path] = secret
        return path

    def set_helm_status(self, release: str, revision: int, status: str, ns: str = NAMESPACE) -> None:
        """Helm moved on: the revision's Secret is relabelled (deployed, failed, superseded)."""
        with self.lock:
            self.objects[SECRET.format(ns=ns, name=f"sh.helm.release.v1.{release}.v{revision}")]["metadata"][
                "labels"
            ]["status"] = status

    def patches(self) -> list[Call]:
        return [c for c in self.calls if c.method == "PATCH"]

    # --- the API ---

    def answer(
        self,
        method: str,
        path: str,
        content_type: str,
        auth: str,
        body: Any,
        query: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        with self.lock:
            self.calls.append(Call(method, path, content_type, auth, body, dict(query or {})))
            if auth != f"Bearer {TOKEN}":
                return 401, _status(401, "Unauthorized", "Unauthorized")
            if path in self.forbidden:
                return 403, _status(
                    403, "Forbidden", f'{path} is forbidden: User "system:serviceaccount:ml:x"'
                )
            if path not in self.objects:
                return 404, _status(404, "NotFound", f"{path.rsplit('/', 1)[-1]} not found")
            if method == "GET":
                return 200, copy.deepcopy(self.objects[path])
            if content_type != MERGE_PATCH:
                return 415, _status(
                    415, "UnsupportedMediaType", f"the content type {content_type} is not supported"
                )
            if path in self.refusals:
                code, message = self.refusals[path]
                return code, _status(code, "Forbidden", message)
            self.objects[path] = merge_patch(self.objects[path], body)
            self.objects[path]["metadata"]["generation"] = (
                self.objects[path]["metadata"].get("generation", 1) + 1
            )
            return 200, copy.deepcopy(self.objects[path])


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        url = urlsplit(self.path)
        code, answer = self.server.cluster.answer(
            method,
            url.path,
            self.headers.get("Content-Type", ""),
            self.headers.get("Authorization", ""),
            body,
            dict(parse_qsl(url.query)),
        )
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply("GET")

    def do_PATCH(self) -> None:
        self._reply("PATCH")

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: FakeCluster


def serve(sa_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    """Run a FakeCluster and point kube.py at it as a pod would be (ServiceAccount folder, service env)."""
    # kube.py logs: to this test's stderr, not to the one a previous in-process CLI run configured (closed since)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cluster = FakeCluster()
    threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True).start()
    sa_dir.mkdir(parents=True, exist_ok=True)
    (sa_dir / "token").write_text(f"{TOKEN}\n")
    (sa_dir / "namespace").write_text(f"{NAMESPACE}\n")
    monkeypatch.setenv("HOUSING_SA_DIR", str(sa_dir))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.server_port))
    monkeypatch.setenv("HOUSING_KUBE_SCHEME", "http")
    try:
        yield server.cluster
    finally:
        server.shutdown()
        server.server_close()
