"""Every values file (values/*.yaml, the chart's ci/ scenarios): `helm lint --strict`, then each rendering
validated with kubernetes-validate --strict for Kubernetes 1.30 and 1.35, and the KServe objects against
KServe's own CRD schemas (strict: unknown fields rejected, as the API server's strict field validation does).
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from .conftest import CHART, KUBE_VERSIONS, VALUES_FILES, helm, render, template_args, values_id

KSERVE_GROUP = "serving.kserve.io"


def strict(schema):
    """An OpenAPI schema that rejects fields it does not declare (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def kube_errors(objects, version: str) -> list[str]:
    errors = []
    for obj in objects:
        if obj["apiVersion"].startswith(KSERVE_GROUP + "/"):
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {obj['apiVersion']} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
    return errors


def kserve_errors(objects, schemas) -> list[str]:
    errors = []
    for obj in objects:
        if not obj["apiVersion"].startswith(KSERVE_GROUP + "/"):
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        schema = schemas.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            errors.append(f"{name}: KServe serves no {obj['apiVersion']} {obj['kind']}")
            continue
        validator = jsonschema.Draft7Validator(strict(schema))
        for error in validator.iter_errors(obj):
            errors.append(f"{name}: {'/'.join(str(p) for p in error.path)}: {error.message}")
    return errors


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_lint_strict(values: Path):
    # helm lint has no --api-versions: the CRD guard has its own unittest suite
    out = helm(
        "lint",
        "--strict",
        "--kube-version",
        "1.35.0",
        "--set",
        "inference.crdCheck.enabled=false",
        "-f",
        str(values),
        str(CHART),
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_kubernetes_schemas(values: Path, version: str):
    objects = render((values,), kube_version=version)
    assert objects, "nothing rendered"
    assert kube_errors(objects, version) == []


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_kserve_objects_match_crds(values: Path, kserve_schemas):
    objects = render((values,))
    assert kserve_errors(objects, kserve_schemas) == []


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_kserve_scope(values: Path):
    """ClusterStorageContainer is cluster-scoped; everything else lives in the release namespace."""
    for obj in render((values,)):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] == "ClusterStorageContainer":
            assert namespace is None
        else:
            assert namespace == "ml", f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUES_FILES[:3], ids=values_id)
def test_upgrade_rendering_is_valid(values: Path, version: str, kserve_schemas):
    """`helm upgrade` renders valid objects too (the bootstrap is decided at run time, so it renders the same
    training Job as an install)."""
    objects = render((values,), kube_version=version, upgrade=True)
    assert kube_errors(objects, version) == []
    assert kserve_errors(objects, kserve_schemas) == []


def test_validators_reject_broken_objects(kserve_schemas):
    """The checks above can fail: a typo in a Deployment and in the InferenceService is reported."""
    objects = render((VALUES_FILES[0],))
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert any("imagePullPolice" in e for e in kube_errors([deployment], "1.35.0"))
    isvc = copy.deepcopy(next(o for o in objects if o["kind"] == "InferenceService"))
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://x/y"
    assert any("storageURI" in e for e in kserve_errors([isvc], kserve_schemas))
    isvc = copy.deepcopy(next(o for o in objects if o["kind"] == "InferenceService"))
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    assert kserve_errors([isvc], kserve_schemas)


def test_every_values_file_is_checked():
    names = {values_id(p) for p in VALUES_FILES}
    assert {"values/staging.yaml", "values/prod.yaml", "values/kind.yaml"} <= names
    assert sum(1 for n in names if n.startswith("charts/housing-mlops/ci/")) >= 5


def test_refuses_kubernetes_older_than_1_28():
    result = helm(*template_args(kube_version="1.27.0"), check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


def test_kserve_version_guard_lets_the_installed_kserves_through(kserve_schemas):
    """The CRD guard tells KServe < v0.16 by a field v0.16 added; every KServe an e2e installs has it."""
    guard = (CHART / "charts" / "inference" / "templates" / "_inference.tpl").read_text()
    assert 'hasKey $predictor "storageUris"' in guard
    schema = kserve_schemas[(f"{KSERVE_GROUP}/v1beta1", "InferenceService")]
    assert "storageUris" in schema["properties"]["spec"]["properties"]["predictor"]["properties"]
