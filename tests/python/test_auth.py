"""Credentials end to end on a throwaway stack that enforces them (LocalConfig(auth=True), as prod runs):
MLflow with `--app-name basic-auth` and an S3 server that checks request signatures. Jobs authenticate with
MLFLOW_TRACKING_USERNAME/PASSWORD and AWS keys from their environment (the chart sets both from Secrets);
anonymous or wrong credentials get one clear line and a non-zero exit, and change nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
import requests
from conftest import copy_dvc_metadata, free_port, state_folder
from housing_mlops import local
from housing_mlops.schema import synthetic_dataset

MODEL = "housing-model"
SEARCH = "/api/2.0/mlflow/registered-models/search"


@pytest.fixture(scope="module")
def auth_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[local.LocalConfig, dict[str, str]]]:
    state = state_folder(tmp_path_factory, "auth-stack")
    cfg = local.LocalConfig(
        state_dir=state, pg_port=free_port(), s3_port=free_port(), mlflow_port=free_port(), auth=True
    )
    try:
        yield cfg, local.up(cfg)
    finally:
        local.destroy(cfg)


@pytest.fixture
def job(auth_stack, monkeypatch: pytest.MonkeyPatch, cli):
    """Runs the CLI as a job of the auth stack (its environment + overrides; None unsets), in-process."""
    _, env = auth_stack
    before = mlflow.get_tracking_uri()

    def run(*argv: str, **overrides: str | None) -> tuple[int, str, str]:
        # In-process, unlike the chart's one-process jobs: boto3's default session keeps the first credentials it
        # resolved from the environment (another module's stack's keys) and MLflow caches S3 clients. Start
        # from neither, as a fresh process does.
        from mlflow.store.artifact.s3_artifact_repo import _cached_get_s3_client

        _cached_get_s3_client.cache_clear()
        with monkeypatch.context() as m:
            m.setattr(boto3, "DEFAULT_SESSION", None)
            m.delenv("HOUSING_CSV", raising=False)
            m.setenv("HOUSING_DATA_URL", "http://127.0.0.1:9/offline")  # never the network
            for key, value in {**env, **overrides}.items():
                if value is None:
                    m.delenv(key, raising=False)
                else:
                    m.setenv(key, value)
            return cli(*argv)

    yield run
    mlflow.set_tracking_uri(before)  # the session stack's, for the modules that follow
    mlflow.set_registry_uri(before)
    for handler in logging.root.handlers[:]:  # the CLI's handler writes to this test's (closed) capture
        logging.root.removeHandler(handler)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's DVC metadata, copied (the synthetic push writes its .dvc file here)."""
    return copy_dvc_metadata(tmp_path_factory.mktemp("auth-repo"))


def test_secrets_stay_out_of_argv_and_are_owner_only(auth_stack) -> None:
    cfg, env = auth_stack
    password, s3_secret = env["MLFLOW_TRACKING_PASSWORD"], env["AWS_SECRET_ACCESS_KEY"]
    assert len(s3_secret) >= 30 and len(password) >= 20  # generated, not well-known ones
    pids = local._load_state(cfg).pids
    for name in ("s3", "mlflow"):
        cmdline = Path(f"/proc/{pids[name]}/cmdline").read_bytes().decode()
        assert password not in cmdline and s3_secret not in cmdline, name
    assert "basic-auth" in Path(f"/proc/{pids['mlflow']}/cmdline").read_bytes().decode()
    for path in (cfg.state_dir / "credentials.json", cfg.state_dir / "env"):
        assert path.stat().st_mode & 0o077 == 0, path
    assert password not in (cfg.state_dir / "mlflow-auth.ini").read_text()


def test_anonymous_and_wrong_password_are_refused(auth_stack) -> None:
    cfg, env = auth_stack
    user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    assert requests.get(f"{cfg.mlflow_url}/health", timeout=10).status_code == 200  # probes stay public
    assert requests.get(f"{cfg.mlflow_url}{SEARCH}", timeout=10).status_code == 401
    assert (
        requests.get(f"{cfg.mlflow_url}{SEARCH}", auth=(user, password + "x"), timeout=10).status_code == 401
    )
    assert requests.get(f"{cfg.mlflow_url}{SEARCH}", auth=(user, password), timeout=10).status_code == 200
    # a write without credentials is refused too (not only reads)
    response = requests.post(
        f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/create", json={"name": "intruder"}, timeout=10
    )
    assert response.status_code == 401
    names = requests.get(f"{cfg.mlflow_url}{SEARCH}", auth=(user, password), timeout=10).json()
    assert "intruder" not in {m["name"] for m in names.get("registered_models", [])}


def run_job(env: dict[str, str], *argv: str, **overrides: str) -> tuple[int, str]:
    """`housing-mlops ARGV` in its own process with the stack's environment + overrides: (exit code, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "housing_mlops.cli", *argv],
        env={**os.environ, **env, "HOUSING_DATA_URL": "http://127.0.0.1:9/offline", **overrides},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr


def registry_state(auth_stack) -> tuple[set[str], str | None]:
    """(versions, @production) read over REST as the admin."""
    cfg, env = auth_stack
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    found = requests.get(
        f"{cfg.mlflow_url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'"},
        auth=auth,
        timeout=10,
    ).json()
    alias = requests.get(
        f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "production"},
        auth=auth,
        timeout=10,
    )
    current = alias.json()["model_version"]["version"] if alias.status_code == 200 else None
    return {v["version"] for v in found.get("model_versions", [])}, current


@pytest.fixture(scope="module")
def pipeline(auth_stack, repo: Path) -> dict[str, str]:
    """Filled by the first test: what the authenticated pipeline produced."""
    return {}


def test_jobs_with_credentials_run_the_whole_pipeline(
    job, auth_stack, repo: Path, pipeline, tmp_path
) -> None:
    """train (artifacts to the signed S3) -> promote -> fetch-model, all authenticated."""
    csv = tmp_path / "small.csv"
    synthetic_dataset(rows=2000, seed=3).to_csv(csv, index=False)
    code, _, err = job("train", "--no-pull", str(csv), "--max-iter", "5", "--trigger", "auth-e2e")
    assert code == 0, err
    code, _, err = job("promote", "--trigger", "auth-e2e")
    assert code == 0, err
    code, _, err = job("fetch-model", f"mlflow://{MODEL}@production", str(tmp_path / "model"))
    assert code == 0, err
    assert (tmp_path / "model" / "MLmodel").is_file()
    versions, current = registry_state(auth_stack)
    assert versions == {"1"} and current == "1"
    pipeline["trained"] = "1"


@pytest.mark.parametrize(
    ("who", "overrides"),
    [
        ("anonymous", {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}),
        ("wrong password", {"MLFLOW_TRACKING_PASSWORD": "guess"}),
    ],
)
@pytest.mark.parametrize(
    "command", [["check"], ["promote", "--version", "1", "--alias", "other"], ["rollback"]]
)
def test_jobs_without_mlflow_credentials_fail_in_one_line(
    job, auth_stack, who: str, overrides, command
) -> None:
    before = registry_state(auth_stack)
    code, _, err = job(*command, "--wait-timeout", "5", **overrides)
    assert code == 1, (who, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: MLflow at http://127.0.0.1:") and "refused our request (401" in last, last
    assert "Traceback" not in err
    assert registry_state(auth_stack) == before


def test_wrong_s3_keys_fail_clearly_and_change_nothing(auth_stack, repo: Path, pipeline, tmp_path) -> None:
    _, env = auth_stack
    if "trained" not in pipeline:
        pytest.fail("needs the pipeline test's model")
    before = registry_state(auth_stack)
    # training as the chart runs it, in its own process: dvc pull first (the remote refuses the key)
    code, err = run_job(
        env, "train", "--repo", str(repo), "--data", "data/housing.csv", "--trigger", "bad-s3",
        AWS_SECRET_ACCESS_KEY="not-the-secret",
    )  # fmt: skip
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: dvc pull failed"), last
    pipeline["dvc_stderr"] = err
    assert registry_state(auth_stack) == before  # no version registered, alias untouched

    # S3's own words for each refusal (its error code, or the code's message)
    for name, override in (
        ("signature we calculated does not match", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),
        ("Access Key Id you provided does not exist", {"AWS_ACCESS_KEY_ID": "AKIAWRONG"}),
    ):
        dest = tmp_path / name.split()[0]
        # a real process, as the storage initializer runs (in-process, boto3 clients outlive an env change)
        code, err = run_job(env, "fetch-model", f"mlflow://{MODEL}@production", str(dest), **override)
        assert code == 1
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: downloading s3://mlflow/") and name in last, last
        assert "Traceback" not in err
        assert not (dest / "MLmodel").exists()
    # control: the right keys still work (the refusals above are about the keys, nothing else)
    code, err = run_job(env, "fetch-model", f"mlflow://{MODEL}@production", str(tmp_path / "ok"))
    assert code == 0, err
    assert (tmp_path / "ok" / "MLmodel").is_file()


def test_wrong_s3_keys_print_no_traceback(pipeline) -> None:
    if "dvc_stderr" not in pipeline:
        pytest.fail("needs test_wrong_s3_keys_fail_clearly_and_change_nothing")
    assert "Traceback" not in pipeline["dvc_stderr"]
    assert "Forbidden" in pipeline["dvc_stderr"].strip().splitlines()[-1]
