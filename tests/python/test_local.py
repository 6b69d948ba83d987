"""The local stack: idempotent up, status, and restarts that lose nothing."""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest
from housing_mlops import local
from mlflow import MlflowClient


def _pids(cfg: local.LocalConfig) -> dict[str, int]:
    return json.loads((cfg.state_dir / "stack.json").read_text())["pids"]


def test_up_is_idempotent(stack: local.LocalConfig) -> None:
    before = _pids(stack)
    assert set(before) >= {"postgresql", "s3", "mlflow"}
    local.up(stack)
    assert _pids(stack) == before
    assert all(state.startswith("up (started by up)") for state in local.status(stack).values())


def test_port_taken_by_a_stranger_is_reported(tmp_path: Path, stack: local.LocalConfig) -> None:
    # Another stack whose S3 port is the running MLflow's: not an S3 server, so up must refuse, not reuse it.
    other = local.LocalConfig(state_dir=tmp_path, pg_port=stack.pg_port, s3_port=stack.mlflow_port)
    try:
        local.up(other)
        raise AssertionError("up should have failed")
    except Exception as exc:
        assert f"port {stack.mlflow_port} is taken by something else: set HOUSING_LOCAL_S3_PORT" in str(exc)
    assert local.down(other) == []  # it started nothing, so it stops nothing
    assert local.status(stack)["postgresql"].startswith("up")


def test_restarting_postgres_and_s3_loses_nothing(
    stack: local.LocalConfig, champion: str, tmp_path: Path
) -> None:
    client = MlflowClient()
    versions = {v.version for v in client.search_model_versions("name='housing-model'")}
    alias = client.get_model_version_by_alias("housing-model", "production").version
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]}

    assert local.stop(stack, "s3") and local.stop(stack, "postgresql")
    assert local.status(stack)["s3"] == "down" and local.status(stack)["postgresql"] == "down"
    local.up(stack)

    assert {v.version for v in client.search_model_versions("name='housing-model'")} == versions
    assert client.get_model_version_by_alias("housing-model", "production").version == alias
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]} == keys
    import mlflow

    assert (
        Path(mlflow.artifacts.download_artifacts("models:/housing-model@production", dst_path=str(tmp_path)))
        / "MLmodel"
    ).is_file()


def test_mlflow_restart_upgrades_the_schema_only_when_mlflow_changed(
    stack: local.LocalConfig, caplog: pytest.LogCaptureFixture
) -> None:
    stamp = stack.state_dir / "mlflow-schema"
    installed = version("mlflow")
    assert stamp.read_text().strip() == installed  # written once the session's MLflow answered
    experiments = {e.name for e in MlflowClient().search_experiments()}

    with caplog.at_level(logging.INFO, logger="housing_mlops.local"):
        assert local.stop(stack, "mlflow")
        local.up(stack)
    assert "db upgrade" not in caplog.text  # same mlflow: the schema is current, no upgrade

    stamp.write_text("2.0.0\n")  # as if the database had been created by an older mlflow
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="housing_mlops.local"):
        assert local.stop(stack, "mlflow")
        local.up(stack)
    assert "mlflow: db upgrade (schema of 2.0.0)" in caplog.text
    assert stamp.read_text().strip() == installed
    assert {e.name for e in MlflowClient().search_experiments()} == experiments


def test_config_round_trips_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for auth in (False, True):
        cfg = local.LocalConfig(state_dir=tmp_path, pg_port=1, s3_port=2, mlflow_port=3, auth=auth)
        for key, value in cfg.to_env().items():
            monkeypatch.setenv(key, value)
        assert local.LocalConfig.from_env() == cfg
