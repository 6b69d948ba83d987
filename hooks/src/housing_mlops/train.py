"""`housing-mlops train`: dvc pull the exact dataset, fit, evaluate, log to MLflow, register a version."""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version as pkg_version
from pathlib import Path

import numpy as np
import pandas as pd

from . import data as data_mod
from . import features, integrity, registry
from . import gate as gating
from .errors import ConfigError, HousingError
from .integrity import file_digest
from .schema import CANONICAL_ROW, FEATURES, NUMERIC_FEATURES, TARGET, read_dataset

log = logging.getLogger(__name__)

# Serving installs exactly these (same lock as training), so a model trained here always loads there.
SERVING_PACKAGES = ["mlflow", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle"]


@dataclass
class TrainParams:
    test_size: float = 0.2
    random_state: int = 42
    max_iter: int = 200
    learning_rate: float = 0.1
    max_depth: int | None = 8


@dataclass
class TrainResult:
    run_id: str
    version: str
    metrics: dict[str, float]
    synthetic: bool


def split(frame: pd.DataFrame, test_size: float, random_state: int):
    from sklearn.model_selection import train_test_split

    x = frame[FEATURES].copy()
    x[NUMERIC_FEATURES] = x[NUMERIC_FEATURES].astype("float64")
    return train_test_split(
        x, frame[TARGET].astype("float64"), test_size=test_size, random_state=random_state
    )


def fit_and_evaluate(frame: pd.DataFrame, params: TrainParams):
    """Fit the pipeline on the training split; return (model, metrics, x_train)."""
    model, metrics, x_train, _ = fit_evaluate_holdout(frame, params)
    return model, metrics, x_train


def fit_evaluate_holdout(frame: pd.DataFrame, params: TrainParams):
    """`fit_and_evaluate`, plus the held-out rows it scored (features + target, original row index): the
    gate re-scores candidate and champion on them (gate.py)."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    x_train, x_test, y_train, y_test = split(frame, params.test_size, params.random_state)
    model = features.build_model(params.max_iter, params.learning_rate, params.max_depth, params.random_state)
    started = time.perf_counter()
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    predicted = model.predict(x_test)
    metrics = {
        "rmse": float(root_mean_squared_error(y_test, predicted)),
        "mae": float(mean_absolute_error(y_test, predicted)),
        "r2": float(r2_score(y_test, predicted)),
        "train_seconds": seconds,
        "n_train": float(len(x_train)),
        "n_test": float(len(x_test)),
    }
    return model, metrics, x_train, x_test.assign(**{TARGET: y_test})


def write_holdout(holdout: pd.DataFrame, folder: Path) -> tuple[Path, str]:
    """The held-out rows as Parquet (exact float64 values, NaN kept) and the sha256 of the file's bytes."""
    path = folder / Path(gating.HOLDOUT_PATH).name
    holdout.to_parquet(path, index=True)
    return path, file_digest(path)


def write_train_rows(train_rows: pd.DataFrame, folder: Path) -> tuple[Path, str]:
    """What the model was trained on, compactly: `gate.row_hashes` of the training rows (features + target),
    sorted, as a .npy of uint64, and the sha256 of the file's bytes. The gate leaves these rows out when this
    version is the champion scored on a newer candidate's held-out set."""
    path = folder / Path(gating.TRAIN_ROWS_PATH).name
    np.save(path, np.sort(gating.row_hashes(train_rows)), allow_pickle=False)
    return path, file_digest(path)


def export_kwargs(model, x_train: pd.DataFrame) -> dict:
    """How the model is exported (`mlflow.sklearn.log_model`/`save_model` keyword arguments).

    The sklearn flavor of `features.HousingModel` (NumPy preprocessing + flattened trees). The serving runtime
    (housing_mlops.runtime) checks a V2 request against the signature and feeds the model NumPy columns; any
    other MLflow runtime loads it as a plain pyfunc. bench/ measures this export against the original pyfunc one.
    """
    import cloudpickle
    from mlflow.models import infer_signature

    cloudpickle.register_pickle_by_value(features)  # the model carries its preprocessing code
    # Signature from complete rows only (NaN columns would become optional) and float64 numbers
    # (int64 would become `long` and reject the FP64 request).
    complete = x_train.dropna().head(200)
    return {
        "signature": infer_signature(complete, model.predict(complete)),
        "input_example": pd.DataFrame([CANONICAL_ROW]).astype({c: "float64" for c in NUMERIC_FEATURES}),
        "pip_requirements": [f"{p}=={pkg_version(p)}" for p in SERVING_PACKAGES],
        "serialization_format": "cloudpickle",
    }


def _git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _checkout(git_url: str, rev: str | None, into: Path) -> Path:
    """Shallow clone of the code/data revision to train from (the chart's `training.git` values)."""
    target = into / "src"
    args = (
        ["git", "clone", "--quiet", "--depth", "1"]
        + (["--branch", rev] if rev else [])
        + [git_url, str(target)]
    )
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError(
            f"git clone {git_url}@{rev or 'HEAD'} failed: {result.stderr.strip().splitlines()[-1:]}"
        )
    return target


def train(
    *,
    tracking_uri: str,
    model_name: str,
    experiment: str,
    repo: Path,
    target: str,
    remote_url: str | None,
    git_url: str | None,
    git_rev: str | None,
    trigger: str,
    params: TrainParams,
    wait_timeout: float,
    local_csv: Path | None = None,
    identity: str | None = None,
    data_md5: str | None = None,
) -> TrainResult:
    """Train and register a version. With ``identity`` (lifecycle.py) a READY version that carries it is reused
    instead, and a failure is recorded as a FAILED run tagged with it (so the promotion hook stops waiting)."""
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    if identity:
        from . import lifecycle

        existing = lifecycle.trained(model_name, identity)
        if existing is not None:
            log.info(
                "identity %s is already trained: version %s (run %s, trigger %s); reusing it, not retraining",
                identity, existing.version, existing.run_id, existing.tags.get("trigger", "?"),
            )  # fmt: skip
            metrics = registry.run_metrics(existing.run_id)
            return TrainResult(
                existing.run_id,
                str(existing.version),
                metrics,
                existing.tags.get("dataset.kind") == "synthetic",
            )
    started: list[str] = []  # the run id, once the run exists
    try:
        return _train(
            model_name=model_name, experiment=experiment, repo=repo, target=target, remote_url=remote_url,
            git_url=git_url, git_rev=git_rev, trigger=trigger, params=params, local_csv=local_csv,
            identity=identity, started=started, data_md5=data_md5,
        )  # fmt: skip
    except Exception as exc:
        if identity:
            _record_failure(experiment, identity, trigger, started, exc)
        raise


def _record_failure(experiment: str, identity: str, trigger: str, started: list[str], exc: Exception) -> None:
    """Best effort (MLflow may be what failed): a FAILED run tagged with the identity and the error."""
    import mlflow

    message = (str(exc) or type(exc).__name__).splitlines()[0][:500]
    try:
        client = registry.client()
        if started:
            client.set_tag(started[0], "error", message)
            client.set_terminated(started[0], status="FAILED")
            return
        mlflow.set_experiment(experiment)
        run = client.create_run(
            mlflow.get_experiment_by_name(experiment).experiment_id,
            tags={"identity": identity, "trigger": trigger, "error": message},
        )
        client.set_terminated(run.info.run_id, status="FAILED")
    except Exception as record_exc:  # the original error is what matters
        log.warning("could not record the failed training in MLflow (%s)", record_exc)


def _train(
    *,
    model_name: str,
    experiment: str,
    repo: Path,
    target: str,
    remote_url: str | None,
    git_url: str | None,
    git_rev: str | None,
    trigger: str,
    params: TrainParams,
    local_csv: Path | None,
    identity: str | None,
    started: list[str],
    data_md5: str | None = None,
) -> TrainResult:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="housing-train-") as tmp:
        scratch = Path(tmp)
        if git_url:
            repo = _checkout(git_url, git_rev, scratch)
        commit = git_rev or _git_commit(repo)
        if local_csv is not None:
            # --no-pull: for experiments only; the lineage says so.
            from .schema import md5_of

            pulled = data_mod.PulledData(
                local_csv, md5_of(local_csv), f"file://{local_csv}", True, data_mod.file_time(local_csv)
            )
        else:
            pulled = data_mod.pull(repo, target, remote_url, scratch, md5=data_md5)
        frame = read_dataset(pulled.path)
        if pulled.synthetic:
            log.warning("SYNTHETIC DATA: training on %s (md5 %s), not the real dataset", target, pulled.md5)
        log.info("training on %d rows (md5 %s)", len(frame), pulled.md5)
        model, metrics, x_train, holdout = fit_evaluate_holdout(frame, params)
        holdout_file, holdout_sha = write_holdout(holdout, scratch)
        train_rows_file, train_rows_sha = write_train_rows(frame.loc[x_train.index], scratch)
        log.info("held-out rmse=%.0f mae=%.0f r2=%.4f", metrics["rmse"], metrics["mae"], metrics["r2"])

        mlflow.set_experiment(experiment)
        tags = {
            "trigger": trigger,
            "dataset.md5": pulled.md5,
            "dataset.remote": pulled.remote_url,
            "dataset.kind": "synthetic" if pulled.synthetic else "real",
            "git.commit": commit,
            gating.HOLDOUT_SHA_TAG: holdout_sha,
            gating.TRAIN_ROWS_SHA_TAG: train_rows_sha,
            **({gating.PUSHED_AT_TAG: pulled.pushed_at} if pulled.pushed_at else {}),
            **({"identity": identity} if identity else {}),
        }
        with mlflow.start_run(tags=tags) as run:
            started.append(run.info.run_id)
            mlflow.log_params({**params.__dict__, "dataset_target": target, "rows": len(frame)})
            mlflow.log_metrics(metrics)
            dataset = mlflow.data.from_pandas(
                frame, source=f"{pulled.remote_url}#{target}", name="housing", digest=pulled.md5
            )
            mlflow.log_input(dataset, context="training")
            mlflow.log_artifact(str(holdout_file), artifact_path=str(Path(gating.HOLDOUT_PATH).parent))
            mlflow.log_artifact(str(train_rows_file), artifact_path=str(Path(gating.TRAIN_ROWS_PATH).parent))
            logged = mlflow.sklearn.log_model(model, name="model", **export_kwargs(model, x_train))
            files = model_manifest(logged, scratch / "logged-model")
            # on the run too: a version a person registers from this run or its logged model (MLflow's UI or REST
            # API; MLflow fills in the run id) has none of our version tags, and fetch-model falls back to the run's
            mlflow.set_tag(integrity.MANIFEST_TAG, files)
        version = _register(
            model_name, logged, run.info.run_id, {**tags, integrity.MANIFEST_TAG: files}, metrics
        )
    log.info("run %s registered as %s version %s", run.info.run_id, model_name, version)
    return TrainResult(run.info.run_id, version, metrics, pulled.synthetic)


def model_manifest(logged, into: Path) -> str:
    """The `integrity.MANIFEST_TAG` value of the model just logged: the sha256 of every file of its artifact folder,
    read back from the artifact store (MLflow saves the model in a temporary folder it deletes once uploaded)."""
    import mlflow

    uri = registry.client().get_logged_model(logged.model_id).artifact_location
    into.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    files = integrity.manifest(local)
    log.info("model files recorded (%s): %s", integrity.MANIFEST_TAG, ", ".join(sorted(files)))
    return integrity.encode(files)


def _register(name: str, logged, run_id: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
    """One create call carries the tags, so a version never exists half-tagged."""
    from mlflow.exceptions import MlflowException

    client = registry.client()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version_tags = {**tags, **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items() if np.isfinite(v)}}
    try:
        created = client.create_model_version(
            name,
            logged.model_uri,
            run_id=run_id,
            tags=version_tags,
            model_id=logged.model_id,
            await_creation_for=60,
        )
    except MlflowException as exc:
        raise HousingError(f"registering {name} from run {run_id} failed: {exc.message}") from exc
    return str(created.version)
