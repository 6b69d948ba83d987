"""The image locks (images/lock.sh, `make lock`): hashed, installed hash-checked, in step with the dev lock, and
the model's libraries the same in training (jobs) and serving. Fast and offline: reads files, runs uv on a wheel
it makes itself."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements.lock"
# Each image's lock (what its Dockerfile installs) and the test-only ones.
IMAGE_LOCKS = {
    "serving": ROOT / "images/serving/requirements.lock",
    "jobs": ROOT / "images/jobs/requirements.lock",
    "mlflow": ROOT / "images/mlflow/requirements.lock",
    "test-services": ROOT / "tests/images/services/requirements.lock",
    "mlserver-standin": ROOT / "images/mlserver-standin/requirements.lock",
}
BUILD_LOCK = ROOT / "images/common/build.lock"
# Compiled without the dev lock as constraints (MLServer needs an older starlette): only the model's libraries
# are held to the dev lock's versions.
STANDIN = "mlserver-standin"
# Libraries a served model touches: it is a cloudpickled scikit-learn estimator with NumPy preprocessing, loaded
# through mlflow's pyfunc (mlflow-skinny in serving, mlflow in jobs; same version), fed pandas/NumPy columns.
MODEL_LIBS = [
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "cloudpickle",
    "joblib",
    "threadpoolctl",
    "mlflow-skinny",
]


def _check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "images/common/check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


read_lock = _check_lock().read_lock


def entries(path: Path) -> dict[str, list[str]]:
    """name==version → its --hash values, from a `uv pip compile --generate-hashes` file."""
    out: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            current = line.split(" ", 1)[0].split(";", 1)[0]
            out[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return out


@pytest.mark.parametrize("name", [*IMAGE_LOCKS, "build"])
def test_every_pin_of_an_image_lock_has_hashes(name):
    path = IMAGE_LOCKS.get(name, BUILD_LOCK)
    pins = entries(path)
    assert len(pins) == len(read_lock(path)) > 0
    unhashed = [pin for pin, hashes in pins.items() if not hashes]
    assert not unhashed, f"{path.relative_to(ROOT)}: no hash for {unhashed}: make lock"
    bad = [h for hashes in pins.values() for h in hashes if not re.fullmatch(r"[0-9a-f]{64}", h)]
    assert not bad, bad
    assert "==" in path.read_text() and "make lock" in path.read_text().splitlines()[1]


@pytest.mark.parametrize("name", [n for n in IMAGE_LOCKS if n != STANDIN] + ["build"])
def test_image_locks_pin_the_dev_locks_versions(name):
    """The dev venv runs the tests on what the images hold: every pin of an image is the dev lock's (uv, which
    the dev venv installs with pip at the Makefile's version, aside)."""
    dev = read_lock(DEV_LOCK)
    pins = read_lock(IMAGE_LOCKS.get(name, BUILD_LOCK))
    differ = {p: (v, dev.get(p)) for p, v in pins.items() if dev.get(p) != v and p != "uv"}
    assert not differ, f"(image, dev lock) versions differ, make lock: {differ}"


@pytest.mark.parametrize("lock", ["dev", "jobs", "serving", STANDIN])
def test_the_model_libraries_are_the_same_in_training_and_serving(lock):
    """Train/serve parity: a model the jobs image trained loads and predicts the same in every serving image."""
    jobs = read_lock(IMAGE_LOCKS["jobs"])
    pins = read_lock(DEV_LOCK if lock == "dev" else IMAGE_LOCKS[lock])
    for lib in MODEL_LIBS:
        assert lib in jobs, f"{lib} not in the jobs lock"
        assert pins.get(lib) == jobs[lib], f"{lib}: {lock} has {pins.get(lib)}, jobs trains with {jobs[lib]}"
    # kserve requires pandas<3: pandas 2.x everywhere, so training and serving agree.
    assert int(jobs["pandas"].split(".")[0]) == 2
    # jobs has mlflow, serving mlflow-skinny: the same release.
    assert jobs["mlflow"] == jobs["mlflow-skinny"]


def test_the_model_libraries_cover_what_training_records():
    """train.SERVING_PACKAGES (the model's pip requirements) are all held to parity (mlflow as mlflow-skinny)."""
    tree = ast.parse((ROOT / "hooks/src/housing_mlops/train.py").read_text())
    recorded = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SERVING_PACKAGES"
    )
    missing = {"mlflow-skinny" if p == "mlflow" else p for p in recorded} - set(MODEL_LIBS)
    assert not missing


def test_serving_has_no_mlserver_and_current_web_stack():
    serving = read_lock(IMAGE_LOCKS["serving"])
    assert not {"mlserver", "mlserver-mlflow", "mlflow", "flask", "pyarrow"} & set(serving)
    assert serving["kserve"] == "0.21.0"
    # CVE-2025-54121 (fixed 0.47.2), CVE-2025-62727 (fixed 0.49.1): docs/security.md
    assert tuple(map(int, serving["starlette"].split(".")[:2])) >= (0, 49)


def test_the_builders_uv_is_the_makefiles():
    makefile = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)[1]
    assert read_lock(BUILD_LOCK)["uv"] == makefile
    assert f"uv=={makefile}" in (ROOT / "images/common/build.in").read_text()
    for dockerfile in [*ROOT.glob("images/*/Dockerfile"), ROOT / "tests/images/services/Dockerfile"]:
        assert f"ARG UV_VERSION={makefile}" in dockerfile.read_text(), dockerfile


def test_every_dockerfile_installs_its_own_lock_hash_checked():
    script = (ROOT / "images/common/install-venv.sh").read_text()
    assert re.search(r'"\$uv" pip sync --require-hashes .*"\$lock"', script)
    assert "pip install --no-cache-dir --disable-pip-version-check -q --require-hashes" in script
    for name, lock in IMAGE_LOCKS.items():
        dockerfile = lock.parent / "Dockerfile"
        text = dockerfile.read_text()
        assert f"COPY {lock.relative_to(ROOT)} /src/requirements.lock" in text, name
        assert (
            "install-venv.sh /src/requirements.lock\n" in text
            or "install-venv.sh /src/requirements.lock \\" in text
        )
        # The package itself (a folder, no hash to check) builds with hash-checked build constraints.
        if "/src/hooks" in text:
            assert "-b /src/common/build.lock /src/hooks" in text, name
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text()


# --- uv really refuses what the lock does not vouch for (offline: a wheel made here, no index) ---------------


def _wheel(folder: Path, name: str = "lockprobe", version: str = "1.0") -> Path:
    """A minimal valid wheel."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
    return path


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("uv is not in this venv (make venv installs it)")
    return found


@pytest.mark.parametrize(
    ("hash_line", "fails_with"),
    [
        ("right", None),
        ("wrong", "Hash mismatch"),
        ("none", "must have a hash"),
    ],
)
def test_uv_sync_require_hashes_refuses_a_file_the_lock_does_not_vouch_for(
    tmp_path, uv, hash_line, fails_with
):
    """The install line of install-venv.sh (`uv pip sync --require-hashes LOCK`) on a lock whose hash is right,
    wrong (one digit changed: a tampered or substituted file) or missing."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(_wheel(wheels).read_bytes()).hexdigest()
    if hash_line == "wrong":
        digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    lock = tmp_path / "requirements.lock"
    suffix = "" if hash_line == "none" else f" \\\n    --hash=sha256:{digest}"
    lock.write_text(f"lockprobe==1.0{suffix}\n")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    run = subprocess.run(
        [uv, "pip", "sync", "--require-hashes", "--no-index", "--find-links", str(wheels), "--no-cache",
         "--python", str(venv / "bin" / "python"), str(lock)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    installed = list((venv / "lib").glob("python*/site-packages/lockprobe"))
    if fails_with is None:
        assert run.returncode == 0, run.stderr
        assert installed
    else:
        assert run.returncode != 0
        assert fails_with in run.stderr, run.stderr
        assert not installed


INPUTS = {
    "serving": ROOT / "images/serving/requirements.in",
    "mlflow": ROOT / "images/mlflow/requirements.in",
    "test-services": ROOT / "tests/images/services/requirements.in",
    "mlserver-standin": ROOT / "images/mlserver-standin/requirements.in",
    "build": ROOT / "images/common/build.in",
}


def _requirements(name: str) -> list[str]:
    if name == "jobs":
        import tomllib

        return tomllib.loads((ROOT / "hooks/pyproject.toml").read_text())["project"]["dependencies"]
    lines = (line.split("#", 1)[0].strip() for line in INPUTS[name].read_text().splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("name", [*INPUTS, "jobs"])
def test_each_lock_satisfies_its_requirement_list(name):
    """A line added to a requirement list without `make lock` fails here, not in a Docker build."""
    from packaging.requirements import Requirement

    pins = read_lock(IMAGE_LOCKS.get(name, BUILD_LOCK))
    for line in _requirements(name):
        req = Requirement(line)
        pinned = pins.get(re.sub(r"[-_.]+", "-", req.name).lower())
        assert pinned and req.specifier.contains(pinned, prereleases=True), (
            f"{line}: lock has {pinned}: make lock"
        )
