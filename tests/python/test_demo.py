"""`make demo`'s pipeline (python -m housing_mlops.demo) end to end on its own stack, twice: from a fresh state
folder, then after `local down` on the same state (the schema stamp skips `mlflow db upgrade`). Times are
recorded, not asserted (bench/ reports them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import REAL_CSV, copy_dvc_metadata, free_port, state_folder
from housing_mlops import local
from housing_mlops.schema import CANONICAL_REQUEST

STAGES = ["local_up", "data_push", "mlflow_ready", "train", "promote", "fetch_model", "serve", "infer"]


def test_demo_fresh_then_restarted(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    state = state_folder(tmp_path_factory, "demo-state")
    repo = copy_dvc_metadata(tmp_path / "repo")
    cfg = local.LocalConfig(
        state_dir=state, pg_port=free_port(), s3_port=free_port(), mlflow_port=free_port()
    )
    serve_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "HOUSING_"))},
        **cfg.to_env(),
        "HOUSING_LOCAL_SERVE_PORT": str(serve_port),
        **({"HOUSING_CSV": str(REAL_CSV)} if REAL_CSV.is_file() else {}),
    }
    try:
        for run in ("fresh", "restart"):
            result = subprocess.run(
                [sys.executable, "-m", "housing_mlops.demo"],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, f"{run}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            timings = json.loads((state / "demo-timings.json").read_text())
            assert list(timings["stages"]) == STAGES
            assert timings["time_to_first_prediction_s"] >= sum(timings["stages"].values()) - 0.5
            assert "db upgrade" not in result.stdout + result.stderr  # fresh: created; restart: current
            answer = requests.post(
                f"http://127.0.0.1:{serve_port}/v2/models/housing-model/infer",
                json=CANONICAL_REQUEST,
                timeout=30,
            )
            assert answer.status_code == 200 and answer.json()["outputs"][0]["data"][0] > 0
            # it announces gRPC and metrics beside REST, and the metrics endpoint answers
            assert f"V2 gRPC:    127.0.0.1:{serve_port + 1}" in result.stdout
            metrics = requests.get(f"http://127.0.0.1:{serve_port + 2}/metrics", timeout=30)
            assert metrics.status_code == 200 and "housing_inference_requests_total" in metrics.text
            creds = json.loads((state / "credentials.json").read_text())
            secrets = [v for k, v in creds.items() if k != "mlflow_admin_username"]
            assert not [s for s in secrets if s in result.stdout + result.stderr]  # printed nowhere
            print(f"demo {run}: {timings['time_to_first_prediction_s']} s {timings['stages']}")
            if run == "fresh":
                assert set(local.down(cfg)) == {local.SERVER, "mlflow", "s3", "postgresql"}
        # the second run trained version 2 and the gate judged it against version 1
        assert timings["gate"] in ("ok", "rejected")
    finally:
        local.destroy(cfg)
