#!/usr/bin/env bash
# Compile every image's lock, with hashes, from its requirement list (`make lock` runs this after compiling the
# dev lock, requirements.lock, which it takes as constraints): each image pins exactly the versions the dev
# venv and the tests run, and the model's libraries agree between jobs and serving (tests/images/test_locks.py).
#   images/lock.sh          (UV: the uv to run, default .venv/bin/uv)
# Inputs → locks (installed by images/common/install-venv.sh with `uv pip sync --require-hashes`):
#   images/serving/requirements.in          → images/serving/requirements.lock
#   hooks/pyproject.toml (dependencies)     → images/jobs/requirements.lock
#   images/mlflow/requirements.in           → images/mlflow/requirements.lock
#   tests/images/services/requirements.in   → tests/images/services/requirements.lock   (test-only image)
#   images/common/build.in                  → images/common/build.lock  (uv, packaging, setuptools of the builders)
#   images/mlserver-standin/requirements.in → images/mlserver-standin/requirements.lock (test-only; constrained
#     only by the model's libraries: MLServer needs an older starlette than the dev lock's)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
uv=${UV:-.venv/bin/uv}
# Images are Linux, Python 3.11, whatever machine compiles the locks; hashes cover every file of each version.
compile=("$uv" pip compile -q --generate-hashes --python-version 3.11 --python-platform linux
  --custom-compile-command "make lock")

"${compile[@]}" -c requirements.lock images/serving/requirements.in -o images/serving/requirements.lock
"${compile[@]}" -c requirements.lock hooks/pyproject.toml -o images/jobs/requirements.lock
"${compile[@]}" -c requirements.lock images/mlflow/requirements.in -o images/mlflow/requirements.lock
"${compile[@]}" -c requirements.lock tests/images/services/requirements.in -o tests/images/services/requirements.lock
"${compile[@]}" -c requirements.lock images/common/build.in -o images/common/build.lock

# The stand-in takes from the dev lock only what touches the model (the list tests/images/test_locks.py checks),
# as constraints on stdin (a stable name in the lock's annotations).
grep -E '^(scikit-learn|numpy|pandas|scipy|cloudpickle|joblib|threadpoolctl|mlflow|mlflow-skinny)==' requirements.lock \
  | "${compile[@]}" -c /dev/stdin images/mlserver-standin/requirements.in -o images/mlserver-standin/requirements.lock
