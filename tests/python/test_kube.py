"""kube.py against a stand-in API server (fake_kube.py; no cluster runs here): the InferenceService's pin, Jobs,
and Helm's record of a revision, stored as Helm stores it."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import fake_kube
import pytest
from housing_mlops import kube
from housing_mlops.errors import ConfigError, HousingError, NotFound

FIRST = "2026-12-05T07:00:00.123456789Z"  # info.first_deployed of one install
AGAIN = "2026-12-05T09:30:00.987654321Z"  # ... of a later install of the same name


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_kube.FakeCluster]:
    yield from fake_kube.serve(tmp_path / "sa", monkeypatch)


# --- the pin ---------------------------------------------------------------------------------------------------


RENDERED = "mlflow://mlflow.ml:5000/housing-model/pinned"  # the storageUri the chart renders in alias mode


def test_an_isvc_as_the_chart_renders_it_is_not_pinned(api) -> None:
    api.add_isvc("housing-model", uri=RENDERED)
    assert kube.pinned("housing-model", None) == kube.Pin(None, RENDERED)
    (call,) = api.calls
    assert (call.method, call.path) == ("GET", fake_kube.ISVC.format(ns="ml", name="housing-model"))
    assert call.authorization == "Bearer tok123"


def test_an_isvc_without_storage_uri_reads_as_none(api) -> None:
    api.add_isvc("housing-model")
    assert kube.pinned("housing-model", None) == kube.Pin(None, None)


def test_pin_is_one_merge_patch_of_the_annotation_only_and_pinned_reads_it_back(api) -> None:
    api.add_isvc("housing-model", "serving", uri=RENDERED)
    kube.pin("housing-model", "serving", "7")
    (patch,) = api.patches()
    assert patch.path == "/apis/serving.kserve.io/v1beta1/namespaces/serving/inferenceservices/housing-model"
    assert patch.content_type == "application/merge-patch+json"
    assert patch.authorization == "Bearer tok123"
    assert patch.query == {"fieldManager": "housing-mlops-reconciler"}, (
        "managedFields name the pin's one writer"
    )
    # the annotation and nothing else: the storageUri is Helm's, and Helm re-applies what it renders
    assert patch.body == {"spec": {"predictor": {"annotations": {"housing-mlops.io/model-version": "7"}}}}
    assert kube.pinned("housing-model", "serving") == kube.Pin("7", RENDERED)
    # a merge patch: what the chart rendered stays
    model = api.isvc("housing-model", "serving")["spec"]["predictor"]["model"]
    assert model == {"modelFormat": {"name": "mlflow"}, "runtime": "housing-serving", "storageUri": RENDERED}

    kube.pin("housing-model", "serving", "8")
    assert kube.pinned("housing-model", "serving") == kube.Pin("8", RENDERED)
    assert api.patches()[-1].body["spec"]["predictor"]["annotations"] == {
        "housing-mlops.io/model-version": "8"
    }
    assert len(api.patches()) == 2


def test_an_isvc_pinned_before_keeps_its_other_annotations(api) -> None:
    path = api.add_isvc("housing-model", version="3", uri=RENDERED)
    api.objects[path]["spec"]["predictor"]["annotations"]["prometheus.io/scrape"] = "true"
    assert kube.pinned("housing-model", "ml") == kube.Pin("3", RENDERED)
    kube.pin("housing-model", "ml", "4")
    annotations = api.isvc("housing-model")["spec"]["predictor"]["annotations"]
    assert annotations == {"housing-mlops.io/model-version": "4", "prometheus.io/scrape": "true"}
    assert api.pin_of("housing-model") == ("4", RENDERED)


def test_missing_isvc_is_named(api) -> None:
    with pytest.raises(NotFound, match="InferenceService other/missing not found"):
        kube.pin("missing", "other", "1")
    with pytest.raises(NotFound, match="InferenceService ml/missing not found"):
        kube.pinned("missing", None)


def test_pin_refused_by_kserve_says_what_to_change(api) -> None:
    path = api.add_isvc("refused", uri=RENDERED)
    api.refusals[path] = (403, fake_kube.DEPLOYMENT_MODE_REFUSAL)
    with pytest.raises(HousingError) as err:
        kube.pin("refused", "ml", "1")
    message = str(err.value)
    assert message.startswith("pinning InferenceService ml/refused to version 1 failed: 403 ")
    assert "cannot be changed from 'Standard' to 'RawDeployment'" in message
    assert "set inference.deploymentMode to the mode KServe recorded: Standard on KServe 0.16+" in message
    assert api.pin_of("refused") == (None, RENDERED)  # nothing applied


def test_reading_an_isvc_without_rbac_names_it(api) -> None:
    path = api.add_isvc("housing-model")
    api.forbidden.add(path)
    with pytest.raises(
        HousingError, match=r"reading InferenceService ml/housing-model failed: 403 .*forbidden"
    ):
        kube.pinned("housing-model", None)


def test_outside_a_pod(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOUSING_SA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="not running in a pod"):
        kube.pin("housing-model", "ml", "1")
    with pytest.raises(ConfigError, match="no namespace: set --isvc-namespace or HOUSING_ISVC_NAMESPACE"):
        kube.pinned("housing-model", None)


def test_an_unreachable_api_server_is_named(api, monkeypatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    with pytest.raises(HousingError, match="reading InferenceService ml/housing-model failed: "):
        kube.pinned("housing-model", None)


# --- Jobs ------------------------------------------------------------------------------------------------------


def test_job_failure_names_the_jobs_failed_condition(api) -> None:
    api.add_job(
        "failed-train", failed=("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    )
    why = kube.job_failure("failed-train", None)
    assert why == (
        "Job ml/failed-train BackoffLimitExceeded: Job has reached the specified backoff limit "
        "(kubectl logs -n ml job/failed-train)"
    )
    assert api.calls[0].path == "/apis/batch/v1/namespaces/ml/jobs/failed-train"


def test_job_failure_is_none_while_it_runs_or_cannot_be_read(api, monkeypatch) -> None:
    api.add_job("running-train")
    api.forbidden.add(api.add_job("forbidden-train", failed=("BackoffLimitExceeded", "x")))
    assert kube.job_failure("running-train", "ml") is None
    assert kube.job_failure("forbidden-train", "ml") is None  # no RBAC: the MLflow run still tells
    assert kube.job_failure("no-such-train", "ml") is None  # not created yet, or expired
    api.add_job("failed-train", failed=("DeadlineExceeded", "too slow"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert kube.job_failure("failed-train", "ml") is None  # outside a pod (local runs)


# --- Helm's record ---------------------------------------------------------------------------------------------


def test_helm_record_reads_status_and_install_of_a_pending_upgrade(api) -> None:
    api.add_helm_revision("housing", 1, "superseded", FIRST)
    api.add_helm_revision("housing", 2, "pending-upgrade", FIRST)
    found = kube.helm_record("ml", "housing", 2)
    assert found == kube.HelmRecord("pending-upgrade", kube.install_key(FIRST))
    assert found.status in kube.DEPLOYING
    assert api.calls[-1].path == "/api/v1/namespaces/ml/secrets/sh.helm.release.v1.housing.v2"
    assert kube.helm_record("ml", "housing", 1) == kube.HelmRecord("superseded", kube.install_key(FIRST))


@pytest.mark.parametrize("status", ["failed", "deployed", "superseded", "uninstalling"])
def test_helm_record_of_a_revision_helm_is_done_with(api, status: str) -> None:
    api.add_helm_revision("housing", 3, status, FIRST)
    found = kube.helm_record("ml", "housing", 3)
    assert found is not None and found.status == status and found.status not in kube.DEPLOYING


def test_helm_record_gone_or_not_ours_to_read_is_none(api) -> None:
    assert kube.helm_record("ml", "housing", 9) is None  # 404: uninstalled (or never there)
    api.forbidden.add(api.add_helm_revision("housing", 2, "pending-rollback", FIRST))
    assert kube.helm_record("ml", "housing", 2) is None  # 403: the Role now names another revision's record


def test_install_key_is_stable_across_revisions_and_differs_per_install(api) -> None:
    for revision, status in ((1, "superseded"), (2, "superseded"), (3, "pending-upgrade")):
        api.add_helm_revision("housing", revision, status, FIRST)
    keys = {kube.helm_record("ml", "housing", r).install for r in (1, 2, 3)}
    assert len(keys) == 1
    (key,) = keys
    assert kube.check_install_key(key) == key and len(key) == 12
    # uninstalled, installed again: same name, same revision number, another first_deployed
    api.add_helm_revision("housing", 1, "pending-install", AGAIN)
    again = kube.helm_record("ml", "housing", 1).install
    assert again != key and again == kube.install_key(AGAIN)
    # a release of the same name in another namespace is another install too
    api.add_helm_revision("housing", 1, "deployed", "2026-12-05T07:00:01.5Z", ns="other")
    assert kube.helm_record("other", "housing", 1).install not in (key, again)


def test_helm_record_stored_without_gzip_is_read_too(api) -> None:
    """Helm 2-era / hand-made records hold plain JSON under the base64: first_deployed is still read."""
    plain = base64.b64encode(json.dumps({"info": {"first_deployed": FIRST}}).encode())
    api.add_helm_revision("housing", 1, "deployed", FIRST, payload=plain)
    assert kube.helm_record("ml", "housing", 1) == kube.HelmRecord("deployed", kube.install_key(FIRST))


CORRUPT = {
    "not base64": b"!!! not base64 at all !!!",
    "corrupt gzip": base64.b64encode(b"\x1f\x8b\x08 not deflate data"),
    "truncated gzip": base64.b64encode(
        gzip.compress(json.dumps({"info": {"first_deployed": FIRST}}).encode())[:-6]
    ),
    "neither gzip nor JSON": base64.b64encode(b"plain text"),
    "JSON without info.first_deployed": base64.b64encode(gzip.compress(json.dumps({"info": {}}).encode())),
    "JSON that is not an object": base64.b64encode(gzip.compress(b"[1, 2, 3]")),
}


@pytest.mark.parametrize("payload", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_helm_record_is_a_clear_error(api, payload: bytes) -> None:
    api.add_helm_revision("housing", 4, "pending-upgrade", FIRST, payload=payload)
    with pytest.raises(
        HousingError, match=r"^Helm's record ml/sh\.helm\.release\.v1\.housing\.v4 is not a Helm release \("
    ):
        kube.helm_record("ml", "housing", 4)


def test_a_secret_without_release_data_is_a_clear_error(api) -> None:
    path = api.add_helm_revision("housing", 5, "pending-upgrade", FIRST)
    del api.objects[path]["data"]
    with pytest.raises(
        HousingError, match=r"sh\.helm\.release\.v1\.housing\.v5 is not a Helm release \(KeyError"
    ):
        kube.helm_record("ml", "housing", 5)


@pytest.mark.parametrize("bad", ["ABCDEF", "", "0123456789abc", "ab/cd", "ab cd", "äb"])
def test_check_install_key_refuses_what_is_not_a_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="install id must be 1-12 lowercase letters or digits, got "):
        kube.check_install_key(bad)


def test_check_install_key_accepts_helms_and_hand_picked_ones() -> None:
    assert kube.check_install_key(None) is None
    for key in (kube.install_key(FIRST), "blue", "i2"):
        assert kube.check_install_key(key) == key
