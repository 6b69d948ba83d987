"""train → register → promote (gate) → resolve → rollback, against the real local stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REAL_CSV
from mlflow import MlflowClient


def test_champion_is_registered_with_lineage(champion: str, pushed: str) -> None:
    client = MlflowClient()
    version = client.get_model_version("housing-model", champion)
    assert version.tags["trigger"] == "pytest-champion"
    assert version.tags["dataset.kind"] == ("real" if pushed == "data/housing.csv" else "synthetic")
    run = client.get_run(version.run_id)
    assert {"rmse", "mae", "r2"} <= set(run.data.metrics)
    assert run.data.tags["dataset.md5"] == version.tags["dataset.md5"]
    assert run.inputs.dataset_inputs[0].dataset.digest == version.tags["dataset.md5"]
    assert client.get_model_version_by_alias("housing-model", "production").version == champion


def test_signature_is_nine_raw_features(champion: str) -> None:
    import mlflow

    info = mlflow.models.get_model_info("models:/housing-model@production")
    inputs = {col["name"]: col["type"] for col in info.signature.inputs.to_dict()}
    assert len(inputs) == 9
    assert inputs["ocean_proximity"] == "string"
    assert {t for n, t in inputs.items() if n != "ocean_proximity"} == {"double"}
    assert all(col.required for col in info.signature.inputs.inputs)


@pytest.mark.skipif(not REAL_CSV.is_file(), reason="real dataset not on this machine")
def test_real_data_rmse_beats_the_original_recipe(champion: str) -> None:
    client = MlflowClient()
    run = client.get_run(client.get_model_version("housing-model", champion).run_id)
    rmse = run.data.metrics["rmse"]
    print(f"test RMSE on the real data: {rmse:.0f}")
    assert rmse < 46_000


def test_worse_model_is_rejected_and_alias_unchanged(cli, champion: str, dvc_repo: Path, pushed: str) -> None:
    code, out, _ = cli(
        "train", "--repo", str(dvc_repo), "--data", pushed, "--max-iter", "3", "--trigger", "worse"
    )
    assert code == 0, out
    worse = out.split("version=")[1].split()[0]
    code, _, err = cli("promote", "--trigger", "worse")
    assert code == 3
    assert f"rejected: version {worse} rejected for @production: rmse" in err
    assert len(err.strip().splitlines()[-1:]) == 1
    client = MlflowClient()
    assert client.get_model_version_by_alias("housing-model", "production").version == champion
    assert client.get_model_version("housing-model", worse).tags["gate.production"].startswith("rejected")


def test_gate_regression_allowance_and_absolute_bound(cli, champion: str) -> None:
    # The worst version (max-iter 3) passes with a huge allowance but not with an absolute bound.
    worst = max(MlflowClient().search_model_versions("name='housing-model'"), key=lambda v: int(v.version))
    code, _, err = cli("promote", "--version", worst.version, "--alias", "gate-test", "--threshold", "1")
    assert code == 3 and "fails the absolute bound <= 1" in err
    code, out, _ = cli("promote", "--version", worst.version, "--alias", "gate-test", "--threshold", "1e9")
    assert code == 0 and out.startswith("promoted")
    code, _, err = cli("promote", "--version", champion, "--alias", "gate-test", "--direction", "maximize")
    assert code == 3, err  # a lower rmse "regresses" a maximized metric


def test_promote_is_idempotent(cli, champion: str) -> None:
    code, out, _ = cli("promote", "--version", champion)
    assert code == 0
    assert out.startswith("already:")


def test_promote_and_rollback(cli, champion: str, dvc_repo: Path, pushed: str) -> None:
    code, out, _ = cli("train", "--repo", str(dvc_repo), "--data", pushed, "--trigger", "retrain")
    assert code == 0
    retrained = out.split("version=")[1].split()[0]
    code, out, _ = cli("promote", "--trigger", "retrain")  # same data and recipe: 0 % regression passes
    assert code == 0, out
    client = MlflowClient()
    assert client.get_model_version_by_alias("housing-model", "production").version == retrained
    assert client.get_model_version("housing-model", retrained).tags["previous_champion"] == champion

    code, out, _ = cli("rollback")
    assert code == 0
    assert out.strip() == f"rolled back: housing-model@production version {retrained} -> {champion}"
    assert client.get_model_version_by_alias("housing-model", "production").version == champion
    code, _, err = cli("rollback")
    assert code == 1
    assert "has no previous champion" in err


def test_resolve_prints_only_the_s3_uri(cli, champion: str) -> None:
    code, out, _ = cli("resolve", "--alias", "production")
    assert code == 0
    assert out.count("\n") == 1
    uri = out.strip()
    assert uri.startswith("s3://mlflow/") and uri.endswith("/artifacts") and "/models/m-" in uri
    code, by_version, _ = cli("resolve", "--version", champion)
    assert by_version == out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alias", "no-such-alias"], "model 'housing-model' has no alias 'no-such-alias'"),
        (["--version", "999"], "model 'housing-model' has no version 999"),
        (["--model-name", "nope", "--alias", "production"], "registered model 'nope' does not exist"),
    ],
)
def test_resolve_missing_things_fail_clearly(cli, champion: str, args: list[str], message: str) -> None:
    code, out, err = cli("resolve", *args)
    assert code == 1
    assert out == ""
    assert err.strip() == f"error: {message}"


def test_check_reports_alias(cli, champion: str) -> None:
    code, out, _ = cli("check")
    assert code == 0
    assert f"housing-model@production = version {champion}" in out
    code, _, err = cli("check", "--alias", "staging")
    assert code == 1 and "has no alias 'staging'" in err


def test_promote_waits_for_trigger_then_gives_up(cli, champion: str) -> None:
    code, _, err = cli("promote", "--trigger", "never-trained", "--wait-timeout", "1")
    assert code == 1
    assert "no version of 'housing-model' tagged trigger='never-trained' after 1s" in err
