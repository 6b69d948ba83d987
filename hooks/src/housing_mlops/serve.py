"""`housing-mlops serve MODEL_DIR`: the model server started the way KServe's ServingRuntime starts it
(`python -m housing_mlops.server MODEL_DIR`, settings in HOUSING_SERVE_* variables: server.Settings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

# What bench/ measured as fastest on a 2-core node; the chart's ServingRuntime sets the same. An environment
# variable of the same name overrides each.
TUNING = {
    # One-row predictions: BLAS/OpenMP thread pools only add wake-up latency and spin under CPU contention
    # (the server's own inference threads are HOUSING_SERVE_WORKERS).
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def serving_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The variables the server process gets: the tuning (unless set) and its settings."""
    return {**{name: os.environ.get(name, value) for name, value in TUNING.items()}, **settings_env}


def argv(model_dir: Path, *, check: bool = True) -> list[str]:
    if check and not (model_dir / "MLmodel").is_file():
        raise ConfigError(f"{model_dir} has no MLmodel: run `housing-mlops fetch-model` first")
    return [sys.executable, "-m", "housing_mlops.server", str(model_dir)]
