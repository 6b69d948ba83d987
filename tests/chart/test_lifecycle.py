"""Release lifecycle properties of every rendering: uninstall removes what install made, hooks are explicit."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import RELEASE, VALUES_FILES, render, values_id


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_nothing_outlives_uninstall(values: Path):
    for obj in render((values,)):
        annotations = obj["metadata"].get("annotations", {})
        assert annotations.get("helm.sh/resource-policy") != "keep", obj["metadata"]["name"]


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_hooks_are_explicit(values: Path):
    for obj in render((values,)):
        annotations = obj["metadata"].get("annotations", {})
        if "helm.sh/hook" not in annotations:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert "helm.sh/hook-weight" in annotations, name
        assert "before-hook-creation" in annotations.get("helm.sh/hook-delete-policy", ""), name
        if obj["kind"] == "Job":
            assert obj["spec"]["backoffLimit"] >= 0, name
            assert obj["spec"]["activeDeadlineSeconds"] > 0, name
            assert obj["metadata"]["name"].endswith("-1"), f"{name}: no revision in the name"


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_every_object_carries_the_release_labels(values: Path):
    for obj in render((values,)):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "housing-mlops", obj["metadata"]["name"]


@pytest.mark.parametrize(
    ("component", "setting"),
    [
        (
            "postgresql",
            ("postgresql.enabled=false", "global.database.host=db", "global.database.existingSecret=db"),
        ),
        ("mlflow", ("mlflow.enabled=false", "global.mlflow.url=http://mlflow.example.com")),
        ("training", ("training.enabled=false",)),
        ("promotion", ("promotion.enabled=false", "training.bootstrapPromotion=false")),
        ("inference", ("inference.enabled=false", "global.inferenceService.name=")),
    ],
)
def test_a_disabled_part_renders_nothing(component: str, setting: tuple[str, ...]):
    objects = render((), setting)
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects}
    assert component not in components
    assert render(())  # and the defaults do render it
    assert component in {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in render(())}


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_hooks_do_not_outlive_uninstall(values: Path):
    """`helm uninstall` deletes no hook: succeeded hooks delete themselves, a failed Job expires (>= 10 min
    so its logs and exit code can be read), and `helm test --logs` finds a pod behind every test hook."""
    for obj in render((values,)):
        annotations = obj["metadata"].get("annotations", {})
        hook = annotations.get("helm.sh/hook")
        if hook is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"], name
        if hook == "test":
            assert obj["kind"] == "Pod", f"{name}: helm test --logs asks every test hook for pod logs"
        if obj["kind"] == "Job":
            assert 600 <= obj["spec"]["ttlSecondsAfterFinished"] <= 3600, name
