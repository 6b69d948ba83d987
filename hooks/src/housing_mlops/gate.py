"""The quality gate's rule: candidate and champion re-scored on held-out rows neither was trained on; older data
never silently replaces newer.

The held-out set is the one the candidate's training run held out and logged (`HOLDOUT_PATH`, its sha256 in the
`HOLDOUT_SHA_TAG` tag). Each training run also logs what it was trained on (`TRAIN_ROWS_PATH`: one 64-bit hash
per training row, of the row's content, sha256 in `TRAIN_ROWS_SHA_TAG`), so the same row hashes equal in any
dataset version wherever it sits. The gate drops from the candidate's held-out rows every row the champion was
trained on (a model fits its training rows far better than unseen ones: scored on them, the champion would look
better than it is), then both models predict the rest and the gate's metric is computed from the predictions,
instead of comparing the metric each run logged about itself on its own split. A champion trained before the
training rows were logged is scored on all the held-out rows (the verdict says the overlap was not checked).
Versions trained before the held-out set existed fall back to the logged metrics, and only when both were trained
on the same dataset.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import registry
from .errors import ConfigError, DataError, HousingError, IntegrityError, NotFound
from .integrity import file_digest

log = logging.getLogger(__name__)

HOLDOUT_PATH = "holdout/holdout.parquet"  # artifact of the training run: the exact rows it held out
HOLDOUT_SHA_TAG = "holdout.sha256"  # run and version tag: the sha256 of that file's bytes
TRAIN_ROWS_PATH = "holdout/train_rows.npy"  # artifact of the training run: `row_hashes` of its training rows
TRAIN_ROWS_SHA_TAG = "train_rows.sha256"  # run and version tag: the sha256 of that file's bytes
PUSHED_AT_TAG = "dataset.pushed_at"  # version tag: when the dataset reached the DVC remote (ISO 8601 UTC)

# Fewer held-out rows than this left once the champion's training rows are dropped: the two scores are not
# compared (an rmse on a few dozen rows swings by several % from the draw alone, more than the regressions the gate
# is set to catch), only the absolute bound applies.
MIN_SHARED_ROWS = 200

__all__ = ["Gate", "Verdict", "judge", "prefer", "row_hashes"]


def row_hashes(frame) -> np.ndarray:
    """One uint64 per row of ``frame`` (features + target), from the row's content only: each number as
    ``repr(float(value))`` (41 and 41.0 read from a CSV are the same row; NaN is "nan"), the categorical as
    its text (missing: a separator no text holds), blake2b-64 of the fields joined. Position, index and dtype do not
    matter, so the same row in two dataset versions hashes equal."""
    import pandas as pd

    from .schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET

    numbers = [frame[c].to_numpy(dtype="float64").tolist() for c in (*NUMERIC_FEATURES, TARGET)]
    texts = [["\x00" if pd.isna(v) else str(v) for v in frame[c].tolist()] for c in CATEGORICAL_FEATURES]
    out = np.empty(len(frame), dtype="uint64")
    for i, fields in enumerate(zip(*numbers, *texts, strict=True)):
        line = "\x1f".join(repr(v + 0.0) if isinstance(v, float) else v for v in fields)  # + 0.0: -0.0 is 0.0
        out[i] = int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "little")
    return out


def _rmse(y, p) -> float:
    from sklearn.metrics import root_mean_squared_error

    return root_mean_squared_error(y, p)


def _mae(y, p) -> float:
    from sklearn.metrics import mean_absolute_error

    return mean_absolute_error(y, p)


def _r2(y, p) -> float:
    from sklearn.metrics import r2_score

    return r2_score(y, p)


# Each also logged by training (promote() reads the logged one first; versions without a held-out set use it).
METRICS: dict[str, Callable[..., float]] = {"rmse": _rmse, "mae": _mae, "r2": _r2}


@dataclass
class Gate:
    metric: str = "rmse"
    direction: str = "minimize"
    max_regression_pct: float = 0.0
    threshold: float | None = None
    allow_older_data: bool = False  # let a model trained on an older dataset than the champion's be judged

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown gate metric {self.metric!r}: the gate re-scores models with one of {', '.join(METRICS)}"
            )
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"gate direction must be minimize or maximize, not {self.direction!r}")
        if self.max_regression_pct < 0:
            raise ConfigError(f"max regression must be >= 0 %, not {self.max_regression_pct}")

    def judge(self, candidate: float, champion: float | None) -> tuple[bool, str]:
        """(passes, reason). Regression is how much worse the candidate is, in % of the champion."""
        better_is_lower = self.direction == "minimize"
        if self.threshold is not None:
            ok = candidate <= self.threshold if better_is_lower else candidate >= self.threshold
            if not ok:
                sign = "<=" if better_is_lower else ">="
                return (
                    False,
                    f"{self.metric} {candidate:.6g} fails the absolute bound {sign} {self.threshold:g}",
                )
        if champion is None:
            return True, f"{self.metric} {candidate:.6g}, no current champion"
        worse = (candidate - champion) if better_is_lower else (champion - candidate)
        pct = 100.0 * worse / abs(champion) if champion else (math.inf if worse > 0 else 0.0)
        verdict = f"{self.metric} {candidate:.6g} vs champion {champion:.6g} ({pct:+.2f}% regression"
        if pct > self.max_regression_pct:
            return False, f"{verdict} > {self.max_regression_pct:g}% allowed)"
        return True, f"{verdict} <= {self.max_regression_pct:g}% allowed)"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # what is recorded on the candidate (`gate.<alias>`) and printed
    candidate_score: float | None  # None: not scored (rejected for its older data first)
    champion_score: float | None  # None: no champion, or not comparable (absolute bound only)
    on: str  # which rows the scores come from


@dataclass(frozen=True)
class _Holdout:
    version: str
    x: object  # pandas DataFrame of the features
    y: np.ndarray
    hashes: np.ndarray  # `row_hashes` of each row

    def subset(self, keep: np.ndarray) -> _Holdout:
        return _Holdout(self.version, self.x[keep], self.y[keep], self.hashes[keep])


def _dataset(version) -> str:
    return version.tags.get("dataset.md5", "unknown")


def _label(version) -> str:
    """A dataset as people name it: md5 prefix and push date."""
    pushed = pushed_at(version)
    when = pushed.strftime("%Y-%m-%d %H:%M:%SZ") if pushed else "push date unknown"
    return f"{_dataset(version)[:8]} (pushed {when})"


def pushed_at(version) -> datetime | None:
    """When the version's dataset was pushed (tag `dataset.pushed_at`), or None for versions without the tag."""
    raw = version.tags.get(PUSHED_AT_TAG)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HousingError(
            f"version {version.version}: tag {PUSHED_AT_TAG}={raw[:60]!r} is not an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _older_data(candidate, champion) -> str | None:
    """Why the candidate's data is older than the champion's, or None (same, newer or unknown)."""
    if champion is None or _dataset(candidate) == _dataset(champion):
        return None
    ours, theirs = pushed_at(candidate), pushed_at(champion)
    if ours is None or theirs is None or ours >= theirs:
        return None
    return (
        f"version {candidate.version} was trained on dataset {_label(candidate)}, older than dataset "
        f"{_label(champion)} of champion version {champion.version}"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _expected_sha(version, tag: str = HOLDOUT_SHA_TAG) -> str | None:
    sha = version.tags.get(tag)
    if sha is None and version.run_id:
        sha = registry.client().get_run(version.run_id).data.tags.get(tag)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise HousingError(f"version {version.version}: tag {tag}={sha[:70]!r} is not a sha256")
    return sha


def _download(version, artifact: str, what: str, expected: str, tmp: str) -> Path:
    """``artifact`` of ``version``'s run, checked against the sha256 its training recorded."""
    import mlflow

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=artifact, dst_path=tmp)
        )
    except Exception as exc:  # MlflowException, botocore's ClientError, OSError...
        raise NotFound(
            f"version {version.version}: its {what} {artifact} (run {version.run_id}) cannot be "
            f"downloaded: {_one_line(exc)}"
        ) from exc
    actual = file_digest(local)
    if actual != expected:
        raise HousingError(
            f"version {version.version}: {what} {artifact} has sha256 {actual[:16]}…, its training "
            f"recorded {expected[:16]}…: the artifact was changed after training; refusing to judge on it"
        )
    return local


def load_holdout(version) -> _Holdout | None:
    """The rows ``version``'s training held out, verified against the sha256 it recorded; None for versions
    trained before the held-out set was logged."""
    import pandas as pd

    from .schema import FEATURES, NUMERIC_FEATURES, TARGET

    expected = _expected_sha(version)
    if expected is None:
        return None
    with tempfile.TemporaryDirectory(prefix="housing-gate-") as tmp:
        local = _download(version, HOLDOUT_PATH, "held-out set", expected, tmp)
        try:
            frame = pd.read_parquet(local)
        except Exception as exc:
            raise DataError(
                f"version {version.version}: held-out set {HOLDOUT_PATH} is not readable: {_one_line(exc)}"
            ) from exc
    missing = [c for c in (*FEATURES, TARGET) if c not in frame.columns]
    if missing or frame.empty:
        what = f"lacks columns {', '.join(missing)}" if missing else "has no rows"
        raise DataError(f"version {version.version}: held-out set {HOLDOUT_PATH} {what}")
    x = frame[FEATURES].copy()
    x[NUMERIC_FEATURES] = x[NUMERIC_FEATURES].astype("float64")
    return _Holdout(str(version.version), x, frame[TARGET].to_numpy(dtype="float64"), row_hashes(frame))


def load_train_rows(version) -> np.ndarray | None:
    """`row_hashes` of the rows ``version`` was trained on, verified against the sha256 its training recorded;
    None for versions trained before they were logged."""
    expected = _expected_sha(version, TRAIN_ROWS_SHA_TAG)
    if expected is None:
        return None
    with tempfile.TemporaryDirectory(prefix="housing-gate-") as tmp:
        local = _download(version, TRAIN_ROWS_PATH, "training-row hashes", expected, tmp)
        try:
            hashes = np.load(local, allow_pickle=False)
        except Exception as exc:
            raise DataError(
                f"version {version.version}: training-row hashes {TRAIN_ROWS_PATH} are not readable: "
                f"{_one_line(exc)}"
            ) from exc
    if hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise DataError(
            f"version {version.version}: training-row hashes {TRAIN_ROWS_PATH} hold {hashes.dtype} of shape "
            f"{hashes.shape}, not one uint64 per row"
        )
    return hashes


def score(name: str, version, holdout: _Holdout, metric: str) -> float:
    """``metric`` of ``version``'s model on ``holdout``. The model's files are checked against the sha256 its training
    recorded before it is loaded (`fetch.verified_copy`): a changed file is an `IntegrityError` (exit 7), never
    unpickled in the promotion hook."""
    import mlflow

    from .fetch import verified_copy

    with tempfile.TemporaryDirectory(prefix="housing-gate-model-") as tmp:
        try:
            local = verified_copy(name, version, Path(tmp) / "model")
        except IntegrityError as exc:
            raise IntegrityError(f"version {version.version} of {name!r} cannot be judged: {exc}") from None
        try:
            model = mlflow.pyfunc.load_model(str(local))
            predicted = np.asarray(model.predict(holdout.x), dtype="float64").reshape(-1)
        except Exception as exc:
            raise HousingError(
                f"version {version.version} of {name!r} cannot be re-scored on the held-out set of version "
                f"{holdout.version}: {_one_line(exc)}"
            ) from exc
    if predicted.shape != holdout.y.shape or not np.isfinite(predicted).all():
        raise HousingError(
            f"version {version.version} of {name!r} predicted {predicted.size} values (finite: "
            f"{bool(np.isfinite(predicted).all())}) for the {holdout.y.size} held-out rows"
        )
    return float(METRICS[metric](holdout.y, predicted))


def _logged(version, metric: str) -> float:
    metrics = registry.run_metrics(version.run_id)
    if metric not in metrics:
        raise NotFound(f"version {version.version} (run {version.run_id}) has no metric {metric!r}")
    return float(metrics[metric])


def _scores(
    name: str, candidate, champion, metric: str, rival: str = "champion "
) -> tuple[float, float | None, str]:
    """(candidate score, champion score or None when not comparable, on which rows).

    On the candidate's held-out rows that the champion was not trained on (``rival`` names the champion in the
    text); without a held-out set (trained before it was logged), the metrics each run logged, compared only when
    both runs trained on the same dataset."""
    holdout = load_holdout(candidate)
    if holdout is not None:
        return _rescored(name, candidate, champion, metric, holdout, rival)
    ours = _logged(candidate, metric)
    if champion is None:
        return ours, None, f"the metric version {candidate.version} logged (it has no held-out set recorded)"
    if _dataset(champion) == _dataset(candidate):
        return (
            ours,
            _logged(champion, metric),
            f"the metrics each version logged on its own split of dataset {_dataset(candidate)[:8]} "
            f"(version {candidate.version} has no held-out set recorded)",
        )
    return (
        ours,
        None,
        f"the metric version {candidate.version} logged, absolute bound only: it has no held-out set recorded "
        f"and {rival}version {champion.version} was trained on another dataset "
        f"({_dataset(champion)[:8]}, not {_dataset(candidate)[:8]})",
    )


def _rescored(name: str, candidate, champion, metric: str, holdout: _Holdout, rival: str):
    """`_scores` on the candidate's held-out set: without the rows the champion was trained on."""
    rows = f"held-out rows of version {candidate.version} (dataset {_dataset(candidate)[:8]}"
    total = len(holdout.y)
    if champion is None:
        return score(name, candidate, holdout, metric), None, f"the {total:,} {rows})"
    trained = load_train_rows(champion)
    if trained is None:
        return (
            score(name, candidate, holdout, metric),
            score(name, champion, holdout, metric),
            f"the {total:,} {rows}; overlap with {rival}version {champion.version}'s training rows not checked: "
            f"it was trained before {TRAIN_ROWS_PATH} was logged)",
        )
    seen = np.isin(holdout.hashes, trained)
    unseen, excluded = holdout.subset(~seen), int(seen.sum())
    kept = len(unseen.y)
    if kept < MIN_SHARED_ROWS:
        # The candidate never trained on its own held-out rows: all of them bound its score.
        return (
            score(name, candidate, holdout, metric),
            None,
            f"the {total:,} {rows}), absolute bound only: {rival}version {champion.version} was trained on "
            f"{excluded:,} of them, leaving {kept:,} to compare on, fewer than {MIN_SHARED_ROWS}",
        )
    return (
        score(name, candidate, unseen, metric),
        score(name, champion, unseen, metric),
        f"{kept:,} {rows}; {excluded:,} excluded: {rival}version {champion.version} trained on them)",
    )


def judge(name: str, alias: str, candidate, champion, gate: Gate) -> Verdict:
    """The gate's verdict on ``candidate`` against ``champion`` (None: no champion) for ``alias``."""
    older = _older_data(candidate, champion)
    if older and not gate.allow_older_data:
        return Verdict(False, f"{older} (--allow-older-data to judge it anyway)", None, None, "not scored")
    ours, theirs, on = _scores(name, candidate, champion, gate.metric)
    passed, reason = gate.judge(ours, theirs)
    if theirs is None and champion is not None:  # not comparable: `on` says why
        reason = reason.removesuffix(", no current champion")
    reason = f"{reason}, on {on}"
    if older:
        reason = f"{reason}; older data allowed: {older}"
    log.info("gate for @%s: version %s %s", alias, candidate.version, reason)
    return Verdict(passed, reason, ours, theirs, on)


def prefer(name: str, candidate, other, gate: Gate) -> tuple[bool, str]:
    """Whether ``candidate`` should hold the alias rather than ``other`` (two promotions raced), and why.

    The newer dataset wins; on the same (or undated) data, the better metric re-scored on the newer version's
    held-out rows that the older was not trained on (the rows `judge` would use with the newer as candidate; both
    processes of a race use the same rows, so they agree); then the newer version."""
    ours_at, theirs_at = pushed_at(candidate), pushed_at(other)
    if _dataset(candidate) != _dataset(other) and ours_at and theirs_at and ours_at != theirs_at:
        wins = ours_at > theirs_at
        return wins, f"dataset {_label(candidate)} vs {_label(other)}"
    newer, older = sorted((candidate, other), key=lambda v: int(v.version), reverse=True)
    new_score, old_score, on = _scores(name, newer, older, gate.metric, rival="")
    if old_score is None or new_score == old_score:
        return (
            candidate is newer,
            f"version {newer.version} is newer ({older.version} not comparable or tied)",
        )
    ours, theirs = (new_score, old_score) if candidate is newer else (old_score, new_score)
    better = ours < theirs if gate.direction == "minimize" else ours > theirs
    return better, f"{gate.metric} {ours:.6g} vs {theirs:.6g} on {on}"
