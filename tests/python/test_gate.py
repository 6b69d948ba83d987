"""The quality gate (gate.py) against the real local MLflow and S3: candidate and champion re-scored on the
candidate's held-out rows the champion was not trained on, older data refused unless allowed, a changed held-out
or training-rows artifact refused.

Its own registered model and DVC target (data/gate.csv in a copy of the DVC metadata), so the other tests'
versions, aliases and `latest` markers are untouched. Dataset versions are pushed a second apart: "old" and "new"
(overlapping slices of the real dataset, or of a synthetic one on machines without it), then "full" (the whole
dataset), "trimmed" (full minus its last 640 rows, as the cluster's scheduled retrain) and "small" (mostly rows
"full"'s training used); all in tmp only.
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
import numpy as np
import pandas as pd
import pytest
from conftest import REAL_CSV, copy_dvc_metadata
from housing_mlops import data
from housing_mlops import gate as gating
from housing_mlops.promote import Gate
from housing_mlops.schema import FEATURES, NUMERIC_FEATURES, TARGET, read_dataset, synthetic_dataset
from housing_mlops.train import TrainParams, split
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
    into.mkdir(parents=True, exist_ok=True)
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


def _rows(x: pd.DataFrame, y: pd.Series) -> list[tuple]:
    """Each row's values as a tuple (NaN as None), for matching rows by content without gate.py's hashes."""
    frame = x.assign(**{TARGET: y})[[*FEATURES, TARGET]].astype({c: "float64" for c in NUMERIC_FEATURES})
    return [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]


def _training_rows(version: str, csv: Path, into: Path) -> pd.DataFrame:
    """The rows ``version`` was trained on, worked out without its hashes: its dataset minus its held-out rows
    (the held-out artifact keeps the dataset's row index)."""
    held, _, _ = _holdout(version, into)
    return read_dataset(csv).drop(index=held.index)


def _trained_on(
    version: str, x: pd.DataFrame, y: pd.Series, into: Path, csv: Path | None = None
) -> np.ndarray:
    """Which of the rows (x, y) ``version`` was trained on, matched by content against its training rows (from
    ``csv``, its dataset; default: the training rows' hashes it logged, checked against gate.row_hashes)."""
    v = _version(version)
    into.mkdir(parents=True, exist_ok=True)
    if csv is None:
        path = Path(
            mlflow.artifacts.download_artifacts(
                run_id=v.run_id, artifact_path=gating.TRAIN_ROWS_PATH, dst_path=str(into)
            )
        )
        assert hashlib.sha256(path.read_bytes()).hexdigest() == v.tags[gating.TRAIN_ROWS_SHA_TAG]
        return np.isin(gating.row_hashes(x.assign(**{TARGET: y})), np.load(path))
    training = _training_rows(version, csv, into)
    seen = set(_rows(training[FEATURES], training[TARGET]))
    return np.array([row in seen for row in _rows(x, y)])


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
    # Its own training rows and held-out rows are disjoint: nothing excluded.
    assert verdict.on == (
        f"{len(y):,} held-out rows of version {v} (dataset {trained.old_md5[:8]}; 0 excluded: champion version "
        f"{v} trained on them)"
    )


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
    candidate's held-out rows the champion did not train on, and the candidate is rejected; before the held-out
    rows were re-scored, the comparison was skipped (it passed)."""
    assert _promote(cli, trained.good_old, "cross")[0] == 0
    code, _, err = _promote(cli, trained.weak_new, "cross")
    assert code == 3, err
    assert f"held-out rows of version {trained.weak_new} (dataset {trained.new_md5[:8]}; " in err, err
    assert f"excluded: champion version {trained.good_old} trained on them)" in err, err
    print(err.strip().splitlines()[-1])
    x, y, _ = _holdout(trained.weak_new, tmp_path / "candidate")
    unseen = ~_trained_on(trained.good_old, x, y, tmp_path / "champion")
    assert (
        0 < (~unseen).sum() < len(y)
    )  # "old" and "new" overlap: some held-out rows were champion training rows
    tags = _version(trained.weak_new).tags
    assert float(tags["gate.cross.champion_score"]) == pytest.approx(
        _rmse_of(trained.good_old, x[unseen], y[unseen]), rel=1e-12
    )
    assert float(tags["gate.cross.candidate_score"]) == pytest.approx(
        _rmse_of(trained.weak_new, x[unseen], y[unseen]), rel=1e-12
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
    assert ours is True and f"held-out rows of version {trained.weak_new} (dataset" in why, why
    assert f"excluded: version {trained.good_old} trained on them" in why, why
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


@dataclass(frozen=True)
class Retrained:
    full_csv: Path
    full: str  # champion: trained on the whole dataset (training defaults, as the cluster)
    trimmed: str  # candidate: the same, on the whole dataset minus its last 640 rows, pushed later
    small: str  # candidate on "small": few held-out rows the champion did not train on


_retrained: list[Retrained] = []


@pytest.fixture
def retrained(cli, datasets: tuple[Path, str, str], tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    """The cluster's scheduled retrain: "full", then "trimmed" and "small" pushed later; each trained once."""
    if not _retrained:
        repo = datasets[0]
        folder = tmp_path_factory.mktemp("retrain")
        frame = pd.read_csv(REAL_CSV) if REAL_CSV.is_file() else synthetic_dataset(rows=20640, seed=5)
        full = folder / "full.csv"
        frame.to_csv(full, index=False)
        # "small": 1,500 of the rows "full"'s training will fit on (its split is deterministic) and 100 others.
        fitted = split(read_dataset(full), TrainParams.test_size, TrainParams.random_state)[0].index
        small = frame.loc[fitted[:1500].union(frame.index.difference(fitted)[:100])]
        md5s = {}
        for name, rows in (("full", frame), ("trimmed", frame.iloc[:-640]), ("small", small)):
            csv = folder / f"{name}.csv"
            rows.to_csv(csv, index=False)
            md5s[name] = data.push(repo, csv, None, target=TARGET_FILE)[1]
            time.sleep(1.2)  # each strictly newer than the one before
        defaults = TrainParams.max_iter
        _retrained.append(
            Retrained(
                full,
                full=_train(cli, repo, md5s["full"], defaults, "gate-full"),
                trimmed=_train(cli, repo, md5s["trimmed"], defaults, "gate-trimmed"),
                small=_train(cli, repo, md5s["small"], defaults, "gate-small"),
            )
        )
        _log_here()
    return _retrained[0]


def _pct(candidate: float, champion: float) -> float:
    return 100.0 * (candidate - champion) / champion


def test_the_champion_is_scored_only_on_rows_it_did_not_train_on(
    cli, retrained: Retrained, tmp_path: Path
) -> None:
    """(a) Champion trained on the whole dataset, candidate (same training) on it minus 640 rows, pushed later.
    Many of the candidate's held-out rows are champion training rows: on all of them the champion looks far
    better than it is and the candidate was rejected; without them (matched here by content, from the CSV) the
    two are about as good, and the candidate passes (--max-regression-pct 5, the kind cluster's)."""
    champion, candidate = retrained.full, retrained.trimmed
    assert _promote(cli, champion, "retrain")[0] == 0
    code, out, err = _promote(cli, candidate, "retrain", "--max-regression-pct", "5")
    x, y, _ = _holdout(candidate, tmp_path / "candidate")
    seen = _trained_on(champion, x, y, tmp_path / "champion", csv=retrained.full_csv)
    kept, excluded = int((~seen).sum()), int(seen.sum())
    tag = _version(candidate).tags["gate.retrain"]
    rmse = {
        (who, rows): _rmse_of(v, x[m], y[m])
        for who, v in (("candidate", candidate), ("champion", champion))
        for rows, m in (("all", np.ones(len(y), bool)), ("unseen", ~seen))
    }
    before, after = (_pct(rmse["candidate", r], rmse["champion", r]) for r in ("all", "unseen"))
    print(
        f"candidate v{candidate} held-out rows: {len(y):,}, of which champion v{champion} training rows: "
        f"{excluded:,}, left: {kept:,}\n"
        f"champion rmse on all of them {rmse['champion', 'all']:.0f}, on the {kept:,} unseen ones "
        f"{rmse['champion', 'unseen']:.0f}; candidate {rmse['candidate', 'all']:.0f} / "
        f"{rmse['candidate', 'unseen']:.0f}; regression {before:+.2f}% before, {after:+.2f}% now\n{tag}"
    )
    assert code == 0 and out.startswith("promoted:"), err
    assert excluded > len(y) / 3 and kept >= gating.MIN_SHARED_ROWS, (excluded, kept)
    assert tag.startswith("passed: rmse") and tag.endswith(
        f", on {kept:,} held-out rows of version {candidate} (dataset "
        f"{_version(candidate).tags['dataset.md5'][:8]}; {excluded:,} excluded: champion version {champion} "
        "trained on them)"
    ), tag
    tags = _version(candidate).tags
    assert float(tags["gate.retrain.champion_score"]) == pytest.approx(rmse["champion", "unseen"], rel=1e-12)
    assert float(tags["gate.retrain.candidate_score"]) == pytest.approx(
        rmse["candidate", "unseen"], rel=1e-12
    )
    # The rule before: all the held-out rows, where the champion's training rows flatter it.
    assert Gate(max_regression_pct=5).judge(rmse["candidate", "all"], rmse["champion", "all"])[0] is False
    assert before > 5 >= after
    # The artifact holds exactly the champion's training rows, hashed.
    training = _training_rows(champion, retrained.full_csv, tmp_path / "again")
    path = Path(
        mlflow.artifacts.download_artifacts(
            run_id=_version(champion).run_id, artifact_path=gating.TRAIN_ROWS_PATH, dst_path=str(tmp_path)
        )
    )
    assert np.array_equal(np.load(path), np.sort(gating.row_hashes(training)))
    # A race between the two (undated): prefer compares them on the same rows.
    undated = [_version(v) for v in (champion, candidate)]
    for v in undated:
        v.tags.pop(gating.PUSHED_AT_TAG)
    ours, why = gating.prefer(MODEL, undated[1], undated[0], Gate())
    assert f"on {kept:,} held-out rows of version {candidate} " in why, why
    assert ours is (rmse["candidate", "unseen"] < rmse["champion", "unseen"]), why


def test_a_champion_without_training_rows_is_scored_on_all_held_out_rows(retrained: Retrained) -> None:
    """A champion trained before the training rows were logged: all the candidate's held-out rows, as before,
    and the verdict says the overlap was not checked."""
    champion, candidate = _version(retrained.full), _version(retrained.trimmed)
    client = MlflowClient()
    sha = champion.tags.pop(gating.TRAIN_ROWS_SHA_TAG)
    client.delete_tag(champion.run_id, gating.TRAIN_ROWS_SHA_TAG)
    try:
        verdict = gating.judge(MODEL, "legacy", candidate, champion, Gate(max_regression_pct=5))
    finally:
        client.set_tag(champion.run_id, gating.TRAIN_ROWS_SHA_TAG, sha)
    print(verdict.reason)
    held = MlflowClient().get_run(candidate.run_id).data.metrics["n_test"]
    assert verdict.on.startswith(f"the {int(held):,} held-out rows of version {candidate.version} (dataset ")
    assert verdict.on.endswith(
        f"; overlap with champion version {champion.version}'s training rows not checked: it was trained before "
        f"{gating.TRAIN_ROWS_PATH} was logged)"
    )
    assert verdict.champion_score is not None and not verdict.passed  # flattered by its training rows


def test_too_few_unseen_rows_leave_the_absolute_bound_only(retrained: Retrained, tmp_path: Path) -> None:
    """(b) A candidate whose held-out rows are mostly the champion's training rows: fewer than MIN_SHARED_ROWS
    left, so the scores are not compared; the candidate's score on all its held-out rows meets the bound."""
    champion, candidate = _version(retrained.full), _version(retrained.small)
    x, y, _ = _holdout(retrained.small, tmp_path / "candidate")
    seen = _trained_on(retrained.full, x, y, tmp_path / "champion", csv=retrained.full_csv)
    kept, excluded = int((~seen).sum()), int(seen.sum())
    assert kept < gating.MIN_SHARED_ROWS <= len(y), (kept, len(y))
    ours = _rmse_of(retrained.small, x, y)
    for threshold, passed in ((ours * 1.01, True), (ours * 0.99, False)):
        verdict = gating.judge(MODEL, "small", candidate, champion, Gate(threshold=threshold))
        print(verdict.reason)
        assert verdict.passed is passed and verdict.champion_score is None
        assert verdict.candidate_score == pytest.approx(ours, rel=1e-12)
        assert verdict.on == (
            f"the {len(y):,} held-out rows of version {candidate.version} (dataset "
            f"{candidate.tags['dataset.md5'][:8]}), absolute bound only: champion version {champion.version} was "
            f"trained on {excluded:,} of them, leaving {kept:,} to compare on, fewer than {gating.MIN_SHARED_ROWS}"
        )
        assert "no current champion" not in verdict.reason
    assert gating.judge(MODEL, "small", candidate, champion, Gate()).passed  # no bound: nothing to fail


def test_a_changed_training_rows_artifact_is_refused(cli, retrained: Retrained, stack) -> None:
    """(c) The champion's training-row hashes overwritten in S3 after training (rows dropped, as if it had not
    trained on them): the gate refuses to judge, one line naming the champion's version."""
    assert _promote(cli, retrained.full, "rows-tampered")[0] == 0
    run = MlflowClient().get_run(_version(retrained.full).run_id)
    bucket, _, prefix = run.info.artifact_uri[len("s3://") :].partition("/")
    key = f"{prefix}/{gating.TRAIN_ROWS_PATH}"
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    forged = io.BytesIO()
    np.save(forged, np.load(io.BytesIO(original))[::2])
    s3.put_object(Bucket=bucket, Key=key, Body=forged.getvalue())
    try:
        code, out, err = _promote(cli, retrained.trimmed, "rows-tampered")
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert code == 1 and out == "", err
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"error: version {retrained.full}: training-row hashes {gating.TRAIN_ROWS_PATH} has sha256 "
    ), line
    assert "changed after training" in line
    print(line)
    assert "gate.rows-tampered" not in _version(retrained.trimmed).tags
    assert MlflowClient().get_model_version_by_alias(MODEL, "rows-tampered").version == retrained.full


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
