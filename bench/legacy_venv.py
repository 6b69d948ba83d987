"""The venv bench/'s MLServer contenders (`legacy`, `stock`) run in: today's runtime before issue 22, MLServer 1.7.1
+ mlserver-mlflow from the test-only stand-in image's hashed lock (images/mlserver-standin/requirements.lock), built
once into .local/bench/legacy-venv the way the images install theirs (images/common/install-venv.sh: `uv pip sync
--require-hashes`, setuptools from build.lock as the only build backend). Named by its lock's content: a changed
lock (or interpreter) rebuilds it, the same one is reused.

MLServer cannot live in the project's venv (it pins starlette<0.47; kserve needs starlette>=1.3.1), hence a venv
of its own. `$HOUSING_BENCH_LEGACY_PYTHON` names another interpreter instead (bench/run.py).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "images" / "mlserver-standin" / "requirements.lock"
BUILD_LOCK = ROOT / "images" / "common" / "build.lock"
VENV = ROOT / ".local" / "bench" / "legacy-venv"
UV = ROOT / ".venv" / "bin" / "uv"
STAMP = ".housing-bench-lock"  # in the venv: the identity it was built for
CHECK = "import mlserver, mlserver_mlflow"


def identity(lock: Path = LOCK, python: str = sys.executable) -> str:
    """What the venv is built from: the lock's sha256 and the interpreter's version."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    return f"{digest} python{sys.version_info.major}.{sys.version_info.minor} {Path(python).name}"


def _run(argv: list[str], timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    lines = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"exit {done.returncode}"


def ensure(
    venv: Path = VENV, lock: Path = LOCK, uv: Path = UV, timeout: float = 600
) -> tuple[str | None, str]:
    """(the venv's python, "") once the venv holds exactly ``lock``, or (None, why it could not be built)."""
    python = venv / "bin" / "python"
    want = identity(lock)
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text() == want and _run([str(python), "-c", CHECK], 120)[0]:
        return str(python), ""
    if not uv.is_file():
        return None, f"cannot build the MLServer venv: no uv at {uv} (make venv)"
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    ok, why = _run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], 120)
    if not ok:
        return None, f"cannot build the MLServer venv ({venv}): uv venv: {why}"
    sync = [str(uv), "pip", "sync", "-q", "--require-hashes", "--python", str(python), "-b", str(BUILD_LOCK)]
    ok, why = _run([*sync, str(lock)], timeout)
    if not ok:  # no package index: what uv's cache holds may be enough
        ok, offline_why = _run([*sync, "--offline", str(lock)], timeout)
        why = f"{why}; offline: {offline_why}" if not ok else ""
    if not ok:
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"cannot build the MLServer venv from {lock.relative_to(ROOT)}: uv pip sync: {why}"
    ok, why = _run([str(python), "-c", CHECK], 120)
    if not ok:
        return None, f"the MLServer venv ({venv}) cannot `{CHECK}`: {why}"
    stamp.write_text(want)
    return str(python), ""


if __name__ == "__main__":
    found, reason = ensure()
    print(found or reason)
    sys.exit(0 if found else 1)
