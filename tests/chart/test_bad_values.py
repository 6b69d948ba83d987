"""Bad values are refused by `helm template` (so by `helm install`/`upgrade`) with a message naming the key.

Each case is what a user could plausibly type: a typo'd key, a wrong type, an out-of-range number, a bad enum, a
malformed string, two modes that contradict each other. `values.schema.json` catches most before rendering; the
templates' `fail` catches the rest (the KServe CRD guard, an empty price range).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import KSERVE_APIS, helm, template_args


def nested(dotted: str, value) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}"""
    out: dict = {}
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


def merge(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def values(**dotted) -> dict:
    return merge(*(nested(key.replace("__", "."), value) for key, value in dotted.items()))


# (kind, values, text that must appear in the error: the key's path, and the offending word where useful)
CASES: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    # unknown keys (typos): strict additionalProperties everywhere
    "typo at the top level": ("unknown key", {"mlfow": {"enabled": True}}, ("'mlfow' not allowed",)),
    "typo inside a component": ("unknown key", values(mlflow__replica=2), ("/mlflow'", "'replica'")),
    "typo inside global": ("unknown key", values(global__s3__endpointUrl="http://s3"), ("/global/s3'",)),
    # wrong types
    "replicas as a word": ("wrong type", values(mlflow__replicas="two"), ("/mlflow/replicas",)),
    "boolean as a string": (
        "wrong type",
        values(global__networkPolicy__enabled="yes"),
        ("/global/networkPolicy/enabled",),
    ),
    "gate threshold as text": (
        "wrong type",
        values(global__gate__threshold="50k"),
        ("/global/gate/threshold",),
    ),
    # out-of-range numbers
    "test split of 90 %": (
        "out of range",
        values(training__params__testSize=0.9),
        ("/training/params/testSize",),
    ),
    "regression above 100 %": (
        "out of range",
        values(global__gate__maxRegressionPct=150),
        ("/global/gate/maxRegressionPct",),
    ),
    "port above 65535": ("out of range", values(global__mlflow__port=70000), ("/global/mlflow/port",)),
    "negative retries": ("out of range", values(training__backoffLimit=-1), ("/training/backoffLimit",)),
    "failed hook Job deleted before anyone reads it": (
        "out of range",
        values(promotion__ttlSecondsAfterFinished=60),
        ("/promotion/ttlSecondsAfterFinished", "want 600"),
    ),
    "root uid": (
        "out of range",
        values(mlflow__podSecurityContext__runAsUser=0),
        ("/mlflow/podSecurityContext",),
    ),
    # bad enums
    "unknown deployment mode": (
        "bad enum",
        values(inference__deploymentMode="Raw"),
        ("/inference/deploymentMode",),
    ),
    "unknown gate direction": (
        "bad enum",
        values(global__gate__direction="down"),
        ("/global/gate/direction",),
    ),
    "unknown sslmode": ("bad enum", values(global__database__sslMode="on"), ("/global/database/sslMode",)),
    "PDB eviction policy misspelt": (
        "bad enum",
        values(mlflow__pdb__enabled=True, mlflow__pdb__unhealthyPodEvictionPolicy="Always"),
        ("/mlflow/pdb/unhealthyPodEvictionPolicy",),
    ),
    "unknown URI mode": (
        "bad enum",
        values(inference__model__uriMode="latest"),
        ("/inference/model/uriMode",),
    ),
    "unknown PVC policy": (
        "bad enum",
        values(postgresql__persistence__whenDeleted="Keep"),
        ("/postgresql/persistence/whenDeleted",),
    ),
    "unknown MLflow permission": (
        "bad enum",
        values(mlflow__auth__defaultPermission="ALL"),
        ("/mlflow/auth/defaultPermission",),
    ),
    # malformed strings
    "bucket with capitals": ("malformed", values(global__s3__bucket="My_Bucket"), ("/global/s3/bucket",)),
    "MLflow URL without a scheme": (
        "malformed",
        values(mlflow__enabled=False, global__mlflow__url="mlflow:5000"),
        ("/global/mlflow/url",),
    ),
    "DVC remote that is not s3://": (
        "malformed",
        values(training__data__remoteUrl="/srv/dvc"),
        ("/training/data/remoteUrl",),
    ),
    "size that is not a quantity": (
        "malformed",
        values(global__tmpSizeLimit="lots"),
        ("/global/tmpSizeLimit",),
    ),
    "pinned URI on another store": (
        "malformed",
        values(inference__model__uriMode="pinned", inference__model__storageUri="gs://bucket/model"),
        ("/inference/model/storageUri",),
    ),
    # conflicting modes (allOf rules)
    "alias mode with a pinned URI": (
        "conflict",
        values(inference__model__storageUri="s3://models/1/models/m-1/artifacts"),
        ("/inference/model/storageUri",),
    ),
    "pinned mode without a URI": (
        "conflict",
        values(inference__model__uriMode="pinned"),
        ("/inference/model/storageUri",),
    ),
    "MLflow auth on without credentials": (
        "conflict",
        values(mlflow__auth__enabled=True),
        ("/global/mlflow/auth/existingSecret",),
    ),
    "PostgreSQL off without an external database": (
        "conflict",
        values(postgresql__enabled=False),
        ("/global/database/host",),
    ),
    "external database host next to the in-chart PostgreSQL": (
        "conflict",
        values(global__database__host="db.example.com"),
        ("/global/database/host",),
    ),
    "MLflow off without a URL": ("conflict", values(mlflow__enabled=False), ("/global/mlflow/url",)),
    "in-chart MLflow and an external URL": (
        "conflict",
        values(global__mlflow__url="http://mlflow.example.com"),
        ("/global/mlflow/url",),
    ),
    "ingress without a host": ("conflict", values(mlflow__ingress__enabled=True), ("/mlflow/ingress/host",)),
    "bootstrap promotion without the promotion hook": (
        "conflict",
        values(promotion__enabled=False),
        ("/training/bootstrapPromotion",),
    ),
    "promotion without training (the hook would wait for a training that never runs)": (
        "conflict",
        values(training__enabled=False),
        ("/training/enabled",),
    ),
    "alias mode without an InferenceService name (nothing could pin it)": (
        "conflict",
        values(global__inferenceService__name=""),
        ("/global/inferenceService/name",),
    ),
    # the templates' own `fail`
    "empty price range for helm test": (
        "template fail",
        values(tests__minPrice=500000, tests__maxPrice=100000),
        ("tests.minPrice (500000) must be below tests.maxPrice (100000)",),
    ),
}


def render_error(tmp_path: Path, bad: dict, api_versions: tuple[str, ...] = KSERVE_APIS) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = helm(*template_args((path,), api_versions=api_versions), check=False)
    assert result.returncode != 0, f"helm template accepted {bad}"
    assert result.stdout == "", "nothing may be rendered for bad values"
    return result.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_are_refused_naming_the_key(case: str, tmp_path: Path):
    _, bad, expected = CASES[case]
    error = render_error(tmp_path, bad)
    for text in expected:
        assert text in error, f"{case}: {text!r} not in\n{error}"


def test_missing_kserve_is_refused_with_what_to_install(tmp_path: Path):
    error = render_error(tmp_path, {}, api_versions=())
    assert "inference: the cluster has no serving.kserve.io/v1beta1/InferenceService" in error
    assert "Install KServe" in error and "inference.enabled=false" in error


def test_case_table_covers_every_kind():
    kinds = [kind for kind, _, _ in CASES.values()]
    print(
        f"bad-value cases: {len(CASES) + 1} ({', '.join(f'{k}: {kinds.count(k)}' for k in dict.fromkeys(kinds))})"
    )
    assert len(CASES) >= 20
    assert {"unknown key", "wrong type", "out of range", "bad enum", "conflict"} <= set(kinds)
    assert kinds.count("conflict") >= 5


def test_the_cases_render_once_fixed(tmp_path: Path):
    """Control: the same files with the bad key removed render, so each case fails for its own reason."""
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(values(inference__deploymentMode="Standard", global__gate__direction="maximize"))
    )
    assert helm(*template_args((good,))).returncode == 0
