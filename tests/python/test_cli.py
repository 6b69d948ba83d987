"""CLI contract: env twins, --validate-only, unreachable MLflow, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import free_port


def test_every_flag_has_an_env_twin() -> None:
    import click
    from housing_mlops.cli import cli

    missing = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
                continue
            for param in command.params:
                if isinstance(param, click.Option) and not param.envvar and param.name != "help":
                    missing.append(f"{prefix}{name} --{param.name}")

    walk(cli, "")
    assert missing == []


def test_validate_only_reads_env(cli, monkeypatch) -> None:
    monkeypatch.setenv("HOUSING_GATE_MAX_REGRESSION_PCT", "2.5")
    monkeypatch.setenv("HOUSING_TRIGGER", "rel-3")
    code, out, _ = cli("--validate-only", "promote", "--tracking-uri", "http://mlflow:5000")
    assert code == 0
    params = json.loads(out)["params"]
    assert params["max_regression_pct"] == 2.5 and params["trigger"] == "rel-3"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "--tracking-uri", "http://x", "--direction", "sideways"], "'sideways' is not one of"),
        (["train", "--tracking-uri", "http://x", "--test-size", "0.9"], "0.9 is not in the range"),
        (["promote", "--tracking-uri", "http://x", "--max-regression-pct", "-1"], "-1.0 is not in the range"),
        (["resolve", "--tracking-uri", "http://x"], "give exactly one of --alias or --version"),
        (["promote", "--tracking-uri", "http://x", "--version", "1", "--trigger", "t"], "not both"),
    ],
)
def test_usage_errors_name_the_flag(cli, argv: list[str], message: str, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err


def test_missing_tracking_uri(cli, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = cli("check")
    assert code == 2 and "--tracking-uri" in err


@pytest.mark.parametrize(
    "command", [["promote"], ["resolve", "--alias", "production"], ["check"], ["rollback"]]
)
def test_unreachable_mlflow_bounded_backoff_then_one_line(command: list[str]) -> None:
    """A real subprocess, as a container runs it: bounded retries, one clear line, exit 1."""
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "housing_mlops.cli", *command, "--tracking-uri", dead, "--wait-timeout", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow at {dead}: gave up after ") and "in 3s" in last
    assert "Traceback" not in result.stderr
    assert elapsed < 60


def test_non_http_tracking_uri(cli) -> None:
    code, _, err = cli("check", "--tracking-uri", "file:///tmp/mlruns")
    assert code == 1 and "must be http(s)://" in err
