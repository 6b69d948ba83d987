"""The quality gate (gate.py) against the real local MLflow and S3: candidate and champion re-scored on the
candidate's held-out rows, older data refused unless allowed, a changed held-out artifact refused.

Its own registered model and DVC target (data/gate.csv in a copy of the DVC metadata), so the other tests'
versions, aliases and `latest` markers are untouched. Two dataset versions are pushed a second apart: "old" and
"new" (overlapping slices of the real dataset, or of a synthetic one on machines without it; in tmp only).
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import pandas as pd
import pytest
from conftest import REAL_CSV, copy_dvc_metadata
from housing_mlops import data
from housing_mlops import gate as gating
from housing_mlops.promote import Gate
from housing_mlops.schema import FEATURES, TARGET, synthetic_dataset
from mlflow import MlflowClient
from sklearn.metrics import root_mean_squared_error

MODEL = "gate-model"
TARGET_FILE = "data/gate.csv"


def _log_here() -> None:
    """The CLI points logging at the stderr of the test that ran it; tests calling gate.py directly log to fd 2."""
    logging.basicConfig(level=logging.INFO, stream=sys.__stderr__, force=True)


@pytest.fixture(autouse=True)
def _log_to_this_tests_stderr() -> None:
    _log_here()


@dataclass(frozen=True)
class Trained:
    old_md5: str
    new_md5: str
    good_old: str  # version trained on the old dataset, 40 iterations
    weak_new: str  # version trained on the new dataset, 3 iterations


def _train(cli, repo: Path, md5: str, max_iter: int, trigger: str) -> str:
    code, out, err = cli(
        "train", "--model-name", MODEL, "--experiment", "gate", "--repo", str(repo), "--data", TARGET_FILE,
        "--data-md5", md5, "--max-iter", str(max_iter), "--trigger", trigger,
    )  # fmt: skip
    assert code == 0, err
    return out.split("version=")[1].split()[0]


@pytest.fixture(scope="module")
def datasets(stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(DVC repo, md5 of "old", md5 of "new"), both pushed to the stack's DVC remote, "new" a second later."""
    folder = tmp_path_factory.mktemp("gate")
    repo = copy_dvc_metadata(folder / "repo")
    frame = pd.read_csv(REAL_CSV) if REAL_CSV.is_file() else synthetic_dataset(rows=8000, seed=5)
    frame = frame.sample(n=min(len(frame), 8000), random_state=3).reset_index(drop=True)
    md5s = []
    for name, rows in (("old", slice(0, 6000)), ("new", slice(2000, 8000))):
        csv = folder / f"{name}.csv"
        frame.iloc[rows].to_csv(csv, index=False)
        md5s.append(data.push(repo, csv, None, target=TARGET_FILE)[1])
        time.sleep(1.2)  # S3 LastModified has second resolution: "new" is strictly newer
    return repo, md5s[0], md5s[1]


_trained: list[Trained] = []  # trained once per module, by the first test that needs it (through the CLI)


@pytest.fixture
def trained(cli, datasets: tuple[Path, str, str]) -> Trained:
    if not _trained:
        repo, old, new = datasets
        _trained.append(
            Trained(
                old,
                new,
                good_old=_train(cli, repo, old, 40, "gate-good-old"),
                weak_new=_train(cli, repo, new, 3, "gate-weak-new"),
            )
        )
        _log_here()
    return _trained[0]


def _version(version: str):
    return MlflowClient().get_model_version(MODEL, version)


def _holdout(version: str, into: Path) -> tuple[pd.DataFrame, pd.Series, Path]:
    v = _version(version)
    path = Path(
        mlflow.artifacts.download_artifacts(
            run_id=v.run_id, artifact_path=gating.HOLDOUT_PATH, dst_path=str(into)
        )
    )
    frame = pd.read_parquet(path)
    return frame[FEATURES], frame[TARGET], path


def _rmse_of(version: str, x: pd.DataFrame, y: pd.Series) -> float:
    model = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    return float(root_mean_squared_error(y, model.predict(x)))


def _promote(cli, version: str, alias: str, *extra: str):
    return cli("promote", "--model-name", MODEL, "--version", version, "--alias", alias, *extra)


def test_rescoring_equals_sklearn_on_the_downloaded_holdout(trained: Trained, tmp_path: Path) -> None:
    """(a) The gate's number for a model is sklearn's rmse of that model on the held-out artifact, which holds
    exactly the rows training held out (same rmse as the run logged, same count), with the recorded sha256."""
    v = trained.good_old
    x, y, path = _holdout(v, tmp_path)
    version = _version(v)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == version.tags[gating.HOLDOUT_SHA_TAG]
    direct = _rmse_of(v, x, y)
    logged = MlflowClient().get_run(version.run_id).data.metrics
    assert len(y) == logged["n_test"]
    assert direct == pytest.approx(logged["rmse"], rel=1e-9)
    verdict = gating.judge(MODEL, "self", version, version, Gate())
    assert verdict.candidate_score == pytest.approx(direct, rel=1e-12)
    assert verdict.champion_score == verdict.candidate_score and verdict.passed
    assert f"held-out set of version {v} ({len(y)} rows of dataset {trained.old_md5[:8]})" in verdict.on


def test_older_data_is_rejected_unless_allowed(cli, trained: Trained) -> None:
    """(b) Champion on the new dataset; a better candidate on the old one is refused (exit 3, both datasets
    named), and judged (and promoted) with --allow-older-data."""
    assert _promote(cli, trained.weak_new, "older")[0] == 0
    new_at = _version(trained.weak_new).tags[gating.PUSHED_AT_TAG]
    old_at = _version(trained.good_old).tags[gating.PUSHED_AT_TAG]
    assert old_at < new_at, (old_at, new_at)
    code, _, err = _promote(cli, trained.good_old, "older")
    assert code == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"rejected: version {trained.good_old} rejected for @older: "), line
    for md5, at in ((trained.old_md5, old_at), (trained.new_md5, new_at)):
        assert f"{md5[:8]} (pushed {at[:10]} {at[11:19]}Z)" in line, line
    assert "--allow-older-data" in line
    assert MlflowClient().get_model_version_by_alias(MODEL, "older").version == trained.weak_new

    code, out, err = _promote(cli, trained.good_old, "older", "--allow-older-data")
    assert code == 0 and out.startswith("promoted:"), err
    tag = _version(trained.good_old).tags["gate.older"]
    assert tag.startswith("passed: rmse") and "older data allowed" in tag, tag
    print(f"{line}\nthen with --allow-older-data: {tag}")


def test_a_champion_on_other_data_is_scored_on_the_candidates_holdout(
    cli, trained: Trained, tmp_path: Path
) -> None:
    """(c) Champion trained on the old dataset, candidate (weaker) on the new one: both are scored on the
    candidate's held-out rows and the candidate is rejected; before, the comparison was skipped (it passed)."""
    assert _promote(cli, trained.good_old, "cross")[0] == 0
    code, _, err = _promote(cli, trained.weak_new, "cross")
    assert code == 3, err
    assert f"on the held-out set of version {trained.weak_new}" in err, err
    print(err.strip().splitlines()[-1])
    x, y, _ = _holdout(trained.weak_new, tmp_path)
    tags = _version(trained.weak_new).tags
    assert float(tags["gate.cross.champion_score"]) == pytest.approx(
        _rmse_of(trained.good_old, x, y), rel=1e-12
    )
    assert float(tags["gate.cross.candidate_score"]) == pytest.approx(
        _rmse_of(trained.weak_new, x, y), rel=1e-12
    )
    assert tags["gate.cross"].startswith("rejected: rmse")


def test_racing_promotions_prefer_newer_data_then_the_better_rescored_metric(trained: Trained) -> None:
    """`_settle`'s tie-break: the newer dataset wins whatever the metric; on one dataset, the better metric on
    the newer version's held-out rows, the same answer whichever of the two asks."""
    good, weak = _version(trained.good_old), _version(trained.weak_new)
    assert gating.prefer(MODEL, weak, good, Gate())[0] is True
    assert gating.prefer(MODEL, good, weak, Gate())[0] is False
    undated = [_version(v) for v in (trained.good_old, trained.weak_new)]
    for v in undated:
        v.tags.pop(gating.PUSHED_AT_TAG)  # as versions trained before the tag: the metric decides
    ours, why = gating.prefer(MODEL, undated[0], undated[1], Gate())
    assert ours is True and f"on the held-out set of version {trained.weak_new}" in why, why
    assert gating.prefer(MODEL, undated[1], undated[0], Gate())[0] is False


def test_a_changed_holdout_is_refused(cli, trained: Trained, stack) -> None:
    """(d) The held-out artifact overwritten in S3 after training: the gate refuses to judge on it."""
    run = MlflowClient().get_run(_version(trained.weak_new).run_id)
    bucket, _, prefix = run.info.artifact_uri[len("s3://") :].partition("/")
    key = f"{prefix}/{gating.HOLDOUT_PATH}"
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    frame = pd.read_parquet(io.BytesIO(original))
    frame[TARGET] = frame[TARGET] * 0.5  # easier targets: the kind of change that would sway a verdict
    s3.put_object(Bucket=bucket, Key=key, Body=frame.to_parquet())
    try:
        code, out, err = _promote(cli, trained.weak_new, "tampered")
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert code == 1 and out == "", err
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"error: version {trained.weak_new}: held-out set {gating.HOLDOUT_PATH} has sha256 "
    )
    assert "changed after training" in line
    print(line)
    assert "gate.tampered" not in _version(trained.weak_new).tags
    assert "tampered" not in MlflowClient().get_registered_model(MODEL).aliases


def test_an_unknown_metric_is_one_config_error(cli, stack) -> None:
    """(e) Named, with the metrics the gate can compute, before anything is contacted or changed."""
    code, out, err = cli("promote", "--model-name", MODEL, "--metric", "accuracy", "--alias", "never")
    assert code == 1 and out == ""
    assert err.strip() == (
        "error: unknown gate metric 'accuracy': the gate re-scores models with one of rmse, mae, r2"
    )


@pytest.fixture(scope="module")
def legacy(stack):
    """Cheap versions without a held-out set (as trained before it was logged): runs with a chosen rmse."""
    client = MlflowClient()
    found = client.get_experiment_by_name("gate-legacy")
    experiment = found.experiment_id if found else client.create_experiment("gate-legacy")
    client.create_registered_model("gate-legacy")

    def make(rmse: float, md5: str, **tags: str):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "rmse", rmse)
        client.set_terminated(run.info.run_id)
        return client.create_model_version(
            "gate-legacy",
            f"s3://{stack.bucket}/gate-legacy/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={"dataset.md5": md5, **tags},
            await_creation_for=30,
        )

    return make


def test_versions_without_a_holdout_fall_back_to_logged_metrics(legacy) -> None:
    same, other = "1" * 32, "2" * 32
    champion = legacy(100.0, same)
    verdict = gating.judge("gate-legacy", "p", legacy(105.0, same), champion, Gate())
    assert not verdict.passed and verdict.champion_score == 100.0
    assert "on the metrics each version logged on its own split of dataset 11111111" in verdict.reason
    verdict = gating.judge("gate-legacy", "p", legacy(105.0, other), champion, Gate())
    assert verdict.passed and verdict.champion_score is None
    assert (
        "absolute bound only" in verdict.reason
        and "another dataset (11111111, not 22222222)" in verdict.reason
    )


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({gating.PUSHED_AT_TAG: "yesterday"}, "tag dataset.pushed_at='yesterday' is not an ISO 8601 time"),
        ({gating.HOLDOUT_SHA_TAG: "nope"}, "tag holdout.sha256='nope' is not a sha256"),
        ({gating.HOLDOUT_SHA_TAG: "a" * 64}, f"its held-out set {gating.HOLDOUT_PATH} (run "),
    ],
)
def test_bad_gate_tags_name_what_is_wrong(legacy, cli, tags: dict[str, str], message: str) -> None:
    champion = legacy(100.0, "3" * 32, **{gating.PUSHED_AT_TAG: "2024-01-01T00:00:00Z"})
    candidate = legacy(90.0, "4" * 32, **tags)
    alias = f"bad{candidate.version}"
    assert (
        cli("promote", "--model-name", "gate-legacy", "--version", champion.version, "--alias", alias)[0] == 0
    )
    code, _, err = cli(
        "promote", "--model-name", "gate-legacy", "--version", candidate.version, "--alias", alias
    )
    line = err.strip().splitlines()[-1]
    assert code == 1 and line.startswith(f"error: version {candidate.version}") and message in line, err
