"""Release lifecycle properties of every rendering: uninstall removes what install made, hooks are explicit."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import RELEASE, VALUES_FILES, render, values_id


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_nothing_outlives_uninstall_but_the_retained_databases_password(values: Path):
    """Only the generated PostgreSQL password is kept, and only while its volume is (whenDeleted=Retain):
    a reinstall must open the retained database with the password it was initialised with (audit item 5)."""
    for obj in render((values,)):
        annotations = obj["metadata"].get("annotations", {})
        if annotations.get("helm.sh/resource-policy") != "keep":
            continue
        assert obj["kind"] == "Secret" and obj["metadata"]["name"] == f"{RELEASE}-postgresql", obj["metadata"]
    retained = [
        o for o in render(()) if o["kind"] == "Secret" and o["metadata"]["name"] == f"{RELEASE}-postgresql"
    ]
    assert retained[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deleted = render((), ("postgresql.persistence.whenDeleted=Delete",))
    secret = [
        o for o in deleted if o["kind"] == "Secret" and o["metadata"]["name"] == f"{RELEASE}-postgresql"
    ]
    assert "helm.sh/resource-policy" not in secret[0]["metadata"].get("annotations", {})


# --- training identity (lifecycle.py): what a Helm verb trains ------------------------------------------------


def _training(sets: tuple[str, ...] = (), upgrade: bool = False) -> tuple[str, str, dict]:
    """(identity, Job name, ConfigMap data) of a rendering."""
    objects = render((), sets, upgrade=upgrade)
    (job,) = [
        o
        for o in objects
        if o["kind"] == "Job" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    ]
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-training"
    ]
    return (
        job["metadata"]["annotations"]["housing-mlops.io/identity"],
        job["metadata"]["name"],
        config["data"],
    )


def test_the_hooks_are_told_the_jobs_identity_and_name():
    identity, name, data = _training()
    assert data == {"identity": identity, "job": name}


@pytest.mark.parametrize(
    "sets",
    [
        ("inference.replicas=3",),
        ("mlflow.workers=3", "postgresql.resources.limits.memory=1Gi"),
        ("promotion.waitTimeout=99",),
    ],
    ids=["replicas", "mlflow-and-db", "promotion"],
)
def test_an_upgrade_that_changes_nothing_the_model_depends_on_trains_nothing(sets: tuple[str, ...]):
    """Same identity and the very same Job: Helm leaves it alone, no pod runs (audit item 2)."""
    assert _training(upgrade=True)[:2] == _training(sets, upgrade=True)[:2]
    assert _training()[:2] == _training(upgrade=True)[:2]  # the verb does not matter either


@pytest.mark.parametrize(
    "sets",
    [("training.resources.requests.cpu=1",), ("global.gate.maxRegressionPct=7",)],
    ids=["resources", "gate"],
)
def test_a_change_to_the_pod_only_renames_the_job_and_keeps_the_identity(sets: tuple[str, ...]):
    """A Job's template is immutable: new resources (or the bootstrap container's gate) need a new Job, whose
    pod finds the identity's version registered and trains nothing."""
    identity, name, _ = _training()
    identity2, name2, _ = _training(sets)
    assert identity2 == identity and name2 != name


@pytest.mark.parametrize(
    "sets",
    [
        ("training.params.maxIter=300",),
        ("training.params.randomState=7",),
        ("training.data.path=data/other.csv",),
        ("training.data.md5=0123456789abcdef0123456789abcdef",),
        ("training.data.remoteUrl=s3://elsewhere/dvc",),
        ("training.code.gitRev=v2",),
        ("global.image.tag=0.2.0",),
        ("global.model.name=other-model",),
        ("training.retrainNonce=again",),
        ("training.experiment=other",),
    ],
)
def test_what_determines_the_model_changes_the_identity(sets: tuple[str, ...]):
    assert _training(sets)[0] != _training()[0]


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
        (
            "training",
            ("training.enabled=false", "promotion.enabled=false", "training.bootstrapPromotion=false"),
        ),
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
