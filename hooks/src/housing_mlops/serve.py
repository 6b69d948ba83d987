"""`housing-mlops serve MODEL_DIR`: MLServer started the way KServe's ServingRuntime starts it
(`python -m housing_mlops.server MODEL_DIR`: `mlserver start` plus our V2 REST infer path, server.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

# MLServer's MLflow runtime with 400s for bad requests and a pandas-free path for our models (runtime.py).
IMPLEMENTATION = "housing_mlops.runtime.HousingRuntime"

# Runtime settings that bench/ measured as fastest on a 2-core node; the chart's ServingRuntime sets the same.
# An environment variable of the same name overrides each.
TUNING = {
    # Inference in the server process: no hop to a worker process and back (bench/: p50 and throughput both
    # better than 1 or 2 workers on 2 cores). Scale with replicas. HousingRuntime turns request errors into
    # V2 JSON 400s, which MLServer's own error handling only does for errors raised in a worker.
    "MLSERVER_PARALLEL_WORKERS": "0",
    # No per-request access log line (the default `debug` is true).
    "MLSERVER_DEBUG": "false",
    # One-row predictions: thread pools only add wake-up latency and spin under CPU contention.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def serving_env(
    model_dir: Path,
    model_name: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    *,
    load_at_startup: bool = True,
) -> dict[str, str]:
    """The variables KServe sets for an MLServer runtime (plus the ports, which tests vary)."""
    return {
        **{name: os.environ.get(name, value) for name, value in TUNING.items()},
        "MLSERVER_MODEL_NAME": model_name,
        "MLSERVER_MODEL_IMPLEMENTATION": IMPLEMENTATION,
        "MLSERVER_MODEL_URI": str(model_dir),
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        "MLSERVER_LOAD_MODELS_AT_STARTUP": "true" if load_at_startup else "false",
        "MLSERVER_HOST": os.environ.get("MLSERVER_HOST", "127.0.0.1"),
        # Prometheus' multiprocess files, else written to the current directory.
        "MLSERVER_METRICS_DIR": os.environ.get("MLSERVER_METRICS_DIR", str(model_dir.parent / ".metrics")),
    }


def argv(model_dir: Path, *, check: bool = True) -> list[str]:
    if check and not (model_dir / "MLmodel").is_file():
        raise ConfigError(f"{model_dir} has no MLmodel: run `housing-mlops fetch-model` first")
    return [sys.executable, "-m", "housing_mlops.server", str(model_dir)]
