"""The InferenceService roll-out patch, against a stand-in API server (no cluster runs here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from housing_mlops import kube
from housing_mlops.errors import ConfigError, HousingError, NotFound


class FakeApi(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, dict, dict]]] = []

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeApi.calls.append((self.path, self.headers["Content-Type"], dict(self.headers), body))
        status = 404 if "missing" in self.path else 403 if "refused" in self.path else 200
        self.send_response(status)
        self.end_headers()
        if status == 403:  # KServe 0.16's webhook (measured) on a legacy RawDeployment annotation
            message = (
                'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
                "update rejected: deploymentMode cannot be changed from 'Standard' to 'RawDeployment'"
            )
            self.wfile.write(json.dumps({"kind": "Status", "message": message}).encode())
            return
        self.wfile.write(b"{}")

    served: ClassVar[str | None] = None  # the InferenceService's model-version annotation

    def do_GET(self) -> None:
        """A Job: `failed-*` has the Failed condition, `running-*` none, `forbidden-*` is a 403; an
        InferenceService annotated with `served` (or 404 when `missing`)."""
        FakeApi.calls.append((self.path, "", dict(self.headers), {}))
        if "/inferenceservices/" in self.path:
            found = "missing" not in self.path
            self.send_response(200 if found else 404)
            self.end_headers()
            annotations = {} if FakeApi.served is None else {"housing-mlops.io/model-version": FakeApi.served}
            self.wfile.write(json.dumps({"spec": {"predictor": {"annotations": annotations}}}).encode())
            return
        name = self.path.rsplit("/", 1)[-1]
        conditions = [{"type": "Complete", "status": "False"}]
        if name.startswith("failed"):
            conditions.append(
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached",
                }
            )
        self.send_response(403 if name.startswith("forbidden") else 200)
        self.end_headers()
        self.wfile.write(json.dumps({"status": {"conditions": conditions}}).encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text("tok123\n")
    (tmp_path / "namespace").write_text("ml\n")
    monkeypatch.setenv("HOUSING_SA_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.server_port))
    monkeypatch.setenv("HOUSING_KUBE_SCHEME", "http")
    FakeApi.calls = []
    FakeApi.served = None
    yield FakeApi
    server.shutdown()


def test_rollout_merge_patches_the_predictor_annotation(api) -> None:
    kube.rollout("housing-model", None, "7", "s3://b/x")
    path, content_type, headers, body = api.calls[0]
    assert path == "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/housing-model"
    assert content_type == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer tok123"
    assert body == {"spec": {"predictor": {"annotations": {"housing-mlops.io/model-version": "7"}}}}


def test_rollout_missing_isvc(api) -> None:
    with pytest.raises(NotFound, match="InferenceService other/missing not found"):
        kube.rollout("missing", "other", "1", "s3://b/x")


def test_rollout_outside_a_pod(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOUSING_SA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="not running in a pod"):
        kube.rollout("housing-model", "ml", "1", "s3://b/x")


def test_job_failure_names_the_jobs_failed_condition(api) -> None:
    why = kube.job_failure("failed-train", None)
    assert why == (
        "Job ml/failed-train BackoffLimitExceeded: Job has reached (kubectl logs -n ml job/failed-train)"
    )
    assert api.calls[0][0] == "/apis/batch/v1/namespaces/ml/jobs/failed-train"


def test_job_failure_is_none_while_it_runs_or_cannot_be_read(api, monkeypatch) -> None:
    assert kube.job_failure("running-train", "ml") is None
    assert kube.job_failure("forbidden-train", "ml") is None  # no RBAC: the MLflow run still tells
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert kube.job_failure("failed-train", "ml") is None  # outside a pod (local runs)


def test_rollout_refused_by_kserve_says_what_to_change(api) -> None:
    with pytest.raises(HousingError) as err:
        kube.rollout("refused", "ml", "1", "s3://b/x")
    message = str(err.value)
    assert "cannot be changed from 'Standard' to 'RawDeployment'" in message
    assert "set inference.deploymentMode to the mode KServe recorded: Standard on KServe 0.16+" in message


def test_reconcile_rolls_out_an_alias_moved_outside_helm(api, cli, champion: str) -> None:
    """The alias moved in the MLflow UI / CLI: reconcile patches the predictor to the alias's version, once."""
    api.served = "999"  # what the predictor was last rolled out with
    code, out, err = cli("reconcile", "--isvc-name", "housing-model", "--isvc-namespace", "ml")
    assert code == 0, err
    assert (
        out.strip()
        == f"rolled out: housing-model now serves housing-model@production version {champion} (was 999)"
    )
    patches = [c for c in api.calls if c[1] == "application/merge-patch+json"]
    assert patches[-1][3]["spec"]["predictor"]["annotations"]["housing-mlops.io/model-version"] == champion
    api.served = champion
    before = len(api.calls)
    code, out, _ = cli("reconcile", "--isvc-name", "housing-model", "--isvc-namespace", "ml")
    assert code == 0 and out.startswith("in sync:")
    assert all(c[1] != "application/merge-patch+json" for c in api.calls[before:])  # nothing patched


def test_reconcile_names_what_is_missing(api, cli, champion: str) -> None:
    code, _, err = cli("reconcile")
    assert code == 2 and "--isvc-name (HOUSING_ISVC_NAME) is required" in err
    code, _, err = cli("reconcile", "--isvc-name", "missing-model", "--isvc-namespace", "ml")
    assert code == 1 and "InferenceService ml/missing-model not found" in err
