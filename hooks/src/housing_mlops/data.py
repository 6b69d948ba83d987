"""The dataset under DVC: seed the S3 remote (`data push`) and fetch an exact version (`dvc pull`).

Both work in a scratch DVC workspace built from the repo's metadata (``.dvc/config`` + the ``.dvc``
file), so the repo is never modified and a container with a read-only root filesystem can pull.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from .errors import ConfigError, DataError, ServiceUnavailable
from .schema import REAL_MD5, md5_of, read_dataset, synthetic_dataset

log = logging.getLogger(__name__)

REAL_TARGET = "data/housing.csv"
SYNTHETIC_TARGET = "data/synthetic-housing.csv"
DEFAULT_DATA_URL = "https://raw.githubusercontent.com/ageron/handson-ml/master/datasets/housing/housing.csv"


@dataclass
class PulledData:
    path: Path
    md5: str
    remote_url: str
    synthetic: bool


def _dvc(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else "no output")
        raise ServiceUnavailable(f"dvc {args[0]} failed: {detail}")
    return result.stdout


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")


def _remote_url(repo: Path, override: str | None) -> str:
    if override:
        return override
    config = (repo / ".dvc" / "config").read_text()
    for line in config.splitlines():
        if line.strip().startswith("url ="):
            return line.split("=", 1)[1].strip()
    raise ConfigError(f"{repo}/.dvc/config has no remote url")


def scratch_workspace(repo: Path, remote_url: str | None, into: Path) -> str:
    """A no-SCM DVC workspace in ``into`` with the repo's config; returns the remote URL in force."""
    if not (repo / ".dvc" / "config").is_file():
        raise ConfigError(f"{repo} is not a DVC repository (no .dvc/config); set --repo or HOUSING_DVC_REPO")
    _dvc(["init", "--no-scm", "-q"], into)
    shutil.copyfile(repo / ".dvc" / "config", into / ".dvc" / "config")
    _dvc(["config", "--local", "core.no_scm", "true"], into)  # the repo's config was made with git
    url = _remote_url(repo, remote_url)
    _dvc(["remote", "modify", "--local", "storage", "url", url], into)
    if endpoint := _endpoint():
        _dvc(["remote", "modify", "--local", "storage", "endpointurl", endpoint], into)
    return url


def pull(repo: Path, target: str, remote_url: str | None, dest_dir: Path) -> PulledData:
    """`dvc pull` ``target`` (e.g. data/housing.csv) into ``dest_dir`` and verify its md5."""
    dvc_file = repo / f"{target}.dvc"
    if not dvc_file.is_file():
        raise DataError(
            f"{dvc_file} not found: is {target} tracked with DVC? (run `housing-mlops data push`)"
        )
    expected = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    work = dest_dir / "dvc"
    work.mkdir(parents=True, exist_ok=True)
    url = scratch_workspace(repo, remote_url, work)
    (work / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dvc_file, work / f"{target}.dvc")
    log.info("dvc pull %s (md5 %s) from %s", target, expected, url)
    _dvc(["pull", f"{target}.dvc"], work)
    path = work / target
    actual = md5_of(path)
    if actual != expected:
        raise DataError(f"{target}: md5 mismatch after dvc pull: expected {expected}, got {actual}")
    return PulledData(path=path, md5=actual, remote_url=url, synthetic=actual != REAL_MD5)


def _download(url: str, dest: Path) -> bool:
    try:
        response = requests.get(url, timeout=15)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.info("public source not reachable (%s)", type(exc).__name__)
        return False
    dest.write_bytes(response.content)
    return True


def push(
    repo: Path, source: Path | None, remote_url: str | None, allow_synthetic: bool = True
) -> tuple[str, str]:
    """Seed the DVC remote. Returns (target, md5) of what was pushed; target is what `train --data` takes.

    Source order: ``source``, $HOUSING_CSV, the public URL; else a synthetic dataset under its own .dvc file.
    """
    with tempfile.TemporaryDirectory(prefix="housing-dvc-") as tmp:
        work = Path(tmp)
        url = scratch_workspace(repo, remote_url, work)
        (work / "data").mkdir()
        candidate = work / REAL_TARGET
        origin = None
        explicit = source or (Path(os.environ["HOUSING_CSV"]) if os.environ.get("HOUSING_CSV") else None)
        if explicit is not None:
            if not explicit.is_file():
                raise DataError(f"dataset not found: {explicit}")
            read_dataset(explicit)  # schema check first: a wrong file gets a precise message
            shutil.copyfile(explicit, candidate)
            origin = str(explicit)
        elif _download(os.environ.get("HOUSING_DATA_URL", DEFAULT_DATA_URL), candidate):
            origin = "public source"
        if origin is not None:
            actual = md5_of(candidate)
            if actual != REAL_MD5:
                raise DataError(
                    f"{origin}: md5 {actual} does not match data/housing.csv.dvc ({REAL_MD5}); refusing to push it"
                )
            shutil.copyfile(repo / f"{REAL_TARGET}.dvc", work / f"{REAL_TARGET}.dvc")
            _dvc(["commit", "-f", f"{REAL_TARGET}.dvc"], work)
            _dvc(["push", f"{REAL_TARGET}.dvc"], work)
            log.info("pushed the real dataset (md5 %s, from %s) to %s", REAL_MD5, origin, url)
            return REAL_TARGET, REAL_MD5
        if not allow_synthetic:
            raise DataError("no dataset: pass a path, set HOUSING_CSV, or allow the synthetic dataset")
        log.warning("SYNTHETIC DATA: no real dataset available; pushing a generated one with the same schema")
        synthetic_dataset().to_csv(work / SYNTHETIC_TARGET, index=False)
        _dvc(["add", SYNTHETIC_TARGET], work)
        _dvc(["push", f"{SYNTHETIC_TARGET}.dvc"], work)
        shutil.copyfile(work / f"{SYNTHETIC_TARGET}.dvc", repo / f"{SYNTHETIC_TARGET}.dvc")
        md5 = md5_of(work / SYNTHETIC_TARGET)
        log.info("pushed the synthetic dataset (md5 %s) to %s as %s", md5, url, SYNTHETIC_TARGET)
        return SYNTHETIC_TARGET, md5
