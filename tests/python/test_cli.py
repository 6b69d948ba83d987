"""CLI contract: env twins, --validate-only, unreachable MLflow, usage errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

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
        (["reconcile", "--tracking-uri", "http://x", "--isvc-name", "i"], "Missing option '--uri-prefix'"),
        (
            ["reconcile", "--tracking-uri", "http://x", "--uri-prefix", "mlflow://m:5000/"],
            "--isvc-name (HOUSING_ISVC_NAME) is required",
        ),
        (
            ["rollback", "--tracking-uri", "http://x", "--revision", "2"],
            "--release and --revision go together",
        ),
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
    "command",
    [
        ["promote"],
        ["resolve", "--alias", "production"],
        ["check"],
        ["rollback"],
        ["reconcile", "--isvc-name", "isvc", "--uri-prefix", "mlflow://mlflow:5000/"],
    ],
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


# --- every subcommand, bad environment values: one line naming the value, never a traceback ----------------

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")

# (command, environment, what the error line must name); {tmp} is the test's folder, {garbage} a file that is
# not a CSV, {bad_state} a state folder with a corrupt credentials.json and stack.json, {repo} a copy of the DVC
# metadata; {stack}: the running stack is needed (the error comes after MLflow answered).
BAD_ENV = [
    (["local", "up"], {"HOUSING_LOCAL_PG_PORT": "x"}, "HOUSING_LOCAL_PG_PORT='x'"),
    (["local", "up"], {"HOUSING_LOCAL_S3_PORT": "70000"}, "HOUSING_LOCAL_S3_PORT='70000'"),
    (["local", "up"], {"HOUSING_LOCAL_AUTH": "maybe"}, "HOUSING_LOCAL_AUTH='maybe'"),
    (["local", "up"], {"HOUSING_LOCAL_DIR": "{garbage}"}, "{garbage} is not a folder"),
    (["local", "up"], {"HOUSING_LOCAL_DIR": "{bad_state}"}, "{bad_state}/credentials.json is not valid JSON"),
    (["local", "status"], {"HOUSING_LOCAL_MLFLOW_PORT": "-1"}, "HOUSING_LOCAL_MLFLOW_PORT='-1'"),
    (
        ["local", "status"],
        {"HOUSING_LOCAL_DIR": "{bad_state}"},
        "{bad_state}/stack.json is not a JSON object",
    ),
    (["local", "down"], {"HOUSING_LOCAL_PG_PORT": "5432", "HOUSING_LOCAL_S3_PORT": "5432"}, "are both 5432"),
    (
        ["local", "destroy"],
        {"HOUSING_LOCAL_DESTROY": "perhaps"},
        "HOUSING_LOCAL_DESTROY (for '--yes'): 'perhaps'",
    ),
    (["local", "destroy", "--yes"], {"HOUSING_LOCAL_DIR": "/"}, "HOUSING_LOCAL_DIR='/'"),
    (["check"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:notaport"}, "'http://127.0.0.1:notaport'"),
    (["resolve", "--alias", "production"], {"MLFLOW_TRACKING_URI": "http://[::1"}, "'http://[::1'"),
    (
        ["promote"],
        {"HOUSING_GATE_DIRECTION": "sideways"},
        "HOUSING_GATE_DIRECTION (for '--direction'): 'sideways'",
    ),
    (
        ["promote", "--revision", "1"],
        {"HOUSING_RELEASE": "No/Such_Release", "HOUSING_IDENTITY": "a" * 16, "HOUSING_INSTALL_ID": "i1"},
        "'No/Such_Release'",
    ),
    (
        ["promote", "--revision", "1"],
        {"HOUSING_INSTALL_ID": "Not-An-Id", "HOUSING_RELEASE": "ml/housing", "HOUSING_IDENTITY": "a" * 16},
        "install id must be 1-12 lowercase letters or digits, got 'Not-An-Id'",
    ),
    (["rollback"], {"HOUSING_WAIT_TIMEOUT": "soon"}, "HOUSING_WAIT_TIMEOUT (for '--wait-timeout'): 'soon'"),
    (
        ["rollback", "--release", "ml/housing"],
        {"HOUSING_REVISION": "latest"},
        "HOUSING_REVISION (for '--revision'): 'latest'",
    ),
    (
        ["reconcile"],
        {
            "HOUSING_ISVC_NAME": "isvc",
            "HOUSING_URI_PREFIX": "mlflow://m:5000/",
            "MLFLOW_TRACKING_URI": "ftp://x",
        },
        "'ftp://x'",
    ),
    (
        ["reconcile"],
        {"HOUSING_URI_PREFIX": "http://mlflow:5000", "HOUSING_ISVC_NAME": "isvc"},
        "--uri-prefix (HOUSING_URI_PREFIX) must look like mlflow://<host:port>/, got 'http://mlflow:5000'",
    ),
    (
        ["reconcile"],
        {
            "HOUSING_RECONCILE_INTERVAL": "0.1",
            "HOUSING_ISVC_NAME": "isvc",
            "HOUSING_URI_PREFIX": "mlflow://m/",
        },
        "HOUSING_RECONCILE_INTERVAL (for '--interval'): 0.1",
    ),
    (
        ["reconcile"],
        {"HOUSING_HEALTH_PORT": "healthz", "HOUSING_ISVC_NAME": "isvc", "HOUSING_URI_PREFIX": "mlflow://m/"},
        "HOUSING_HEALTH_PORT (for '--health-port'): 'healthz'",
    ),
    (["train"], {"HOUSING_DATA_MD5": "nothex"}, "'nothex'"),
    (["train"], {"HOUSING_NO_PULL": "{garbage}", "{stack}": ""}, "{garbage}: not a readable CSV"),
    (["train"], {"HOUSING_DVC_REPO": "{tmp}", "{stack}": ""}, "{tmp}/data/housing.csv.dvc not found"),
    (["fetch-model", "mlflow://housing-model@production", "{tmp}/m"], {"MLFLOW_TRACKING_URI": "x"}, "'x'"),
    (
        ["fetch-model", "mlflow://housing-model/pinned", "{tmp}/m"],
        {"HOUSING_PINNED_VERSION": ""},
        "HOUSING_PINNED_VERSION, is empty",
    ),
    (
        ["fetch-model", "mlflow://housing-model/pinned", "{tmp}/m"],
        {"HOUSING_PINNED_VERSION": "seven"},
        "HOUSING_PINNED_VERSION) must be a number, got 'seven'",
    ),
    (
        ["fetch-model", "mlflow://housing-model/1", "{tmp}/m"],
        {"HOUSING_ARTIFACT_ROOT": ""},
        "no artifact root (--artifact-root, HOUSING_ARTIFACT_ROOT)",
    ),
    (
        ["fetch-model", "mlflow://housing-model/1", "{tmp}/m"],
        {"HOUSING_ARTIFACT_ROOT": "mlflow/models"},
        "must be s3://<bucket>[/<prefix>], got 'mlflow/models'",
    ),
    (
        ["fetch-model", "mlflow://housing-model/1", "{tmp}/m"],
        {"HOUSING_ALLOW_UNVERIFIED": "maybe"},
        "HOUSING_ALLOW_UNVERIFIED (for '--allow-unverified'): 'maybe'",
    ),
    (["infer"], {"HOUSING_INFER_URL": "garbage"}, "'garbage'"),
    (
        ["infer", "--url", "http://127.0.0.1:1"],
        {"HOUSING_TIMEOUT": "0"},
        "HOUSING_TIMEOUT (for '--timeout'): 0",
    ),
    (["predict-batch", "{garbage}"], {"HOUSING_OUT": "{tmp}/no/such/out.json"}, "{tmp}/no/such/out.json"),
    (["predict-batch", "{garbage}"], {"{stack}": ""}, "{garbage}: not a readable CSV"),
    (
        ["data", "push"],
        {"HOUSING_CSV": "{garbage}", "HOUSING_DVC_REPO": "{repo}"},
        "{garbage}: not a readable CSV",
    ),
    (["data", "push"], {"HOUSING_CSV": "{tmp}", "HOUSING_DVC_REPO": "{repo}"}, "dataset not found: {tmp}"),
    (["data", "push"], {"HOUSING_DVC_REPO": "{tmp}"}, "{tmp} is not a DVC repository"),
    (
        ["serve", "{tmp}"],
        {"HOUSING_SERVE_HTTP_PORT": "http"},
        "HOUSING_SERVE_HTTP_PORT (for '--http-port'): 'http'",
    ),
    (
        ["serve", "{tmp}"],
        {"HOUSING_SERVE_MAX_BODY_BYTES": "0"},
        "HOUSING_SERVE_MAX_BODY_BYTES (for '--max-body-bytes'): 0 is not in the range x>=1",
    ),
    (
        ["serve", "{tmp}"],
        {"HOUSING_SERVE_TIMEOUT_SECONDS": "0"},
        "HOUSING_SERVE_TIMEOUT_SECONDS (for '--timeout'): 0.0 is not in the range x>0",
    ),
    (
        ["serve", "{tmp}"],
        {"HOUSING_SERVE_LOAD_LATER": "x"},
        "HOUSING_SERVE_LOAD_LATER (for '--load-later'): 'x'",
    ),
    (
        ["check"],
        {"HOUSING_VERBOSE": "loud", "MLFLOW_TRACKING_URI": "http://x"},
        "HOUSING_VERBOSE (for '-v' / '--verbose')",
    ),
]


def one_line_error(code: int, err: str) -> str:
    """The error line of a failed run; fails unless it is the only line besides log lines, and no traceback."""
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def bad_files(tmp_path: Path, dvc_repo: Path) -> dict[str, str]:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\xff\xfe not a CSV at all")
    bad_state = tmp_path / "state"
    bad_state.mkdir(mode=0o700)
    for name, text in (("credentials.json", "{not json"), ("stack.json", "[1, 2]")):
        (bad_state / name).write_text(text)
        (bad_state / name).chmod(0o600)
    return {"tmp": str(tmp_path), "garbage": str(garbage), "bad_state": str(bad_state), "repo": str(dvc_repo)}


@pytest.mark.parametrize(
    ("argv", "env", "named"), BAD_ENV, ids=[f"{' '.join(c[0])}-{next(iter(c[1]))}" for c in BAD_ENV]
)
def test_bad_environment_values_give_one_line_naming_them(
    cli, monkeypatch, request, bad_files, argv: list[str], env: dict[str, str], named: str
) -> None:
    if "{stack}" in env:
        request.getfixturevalue("stack")  # MLflow answers: the bad value is what fails
    else:
        monkeypatch.setenv(
            "MLFLOW_TRACKING_URI", "http://127.0.0.1:1"
        )  # nothing there: fails before it matters
    monkeypatch.setenv("HOUSING_LOCAL_DIR", bad_files["tmp"] + "/unused-state")  # never the checkout's .local
    monkeypatch.delenv("HOUSING_CSV", raising=False)
    monkeypatch.setenv("HOUSING_DATA_URL", "http://127.0.0.1:9/offline")
    # fetch-model checks this one first
    monkeypatch.setenv("HOUSING_ARTIFACT_ROOT", "s3://mlflow")
    for key, value in env.items():
        if key != "{stack}":
            monkeypatch.setenv(key, value.format(**bad_files))
    monkeypatch.chdir(bad_files["tmp"])
    short_wait = argv[0] in WAITS and "HOUSING_WAIT_TIMEOUT" not in env
    code, _, err = cli(
        *[a.format(**bad_files) for a in argv], *(["--wait-timeout", "2"] if short_wait else [])
    )
    line = one_line_error(code, err)
    assert named.format(**bad_files) in line, line


WAITS = {
    "check",
    "resolve",
    "promote",
    "rollback",
    "reconcile",
    "train",
    "fetch-model",
    "infer",
    "predict-batch",
}


def test_bad_environment_cases_cover_every_subcommand() -> None:
    import click
    from housing_mlops.cli import cli as group

    def leaves(command: click.Command, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        if isinstance(command, click.Group):
            return set().union(*(leaves(c, (*prefix, n)) for n, c in command.commands.items()))
        return {prefix}

    def command_of(argv: list[str]) -> tuple[str, ...]:
        path, command = (), group
        for token in argv:
            if not isinstance(command, click.Group) or token not in command.commands:
                break
            path, command = (*path, token), command.commands[token]
        return path

    assert leaves(group, ()) == {command_of(argv) for argv, _, _ in BAD_ENV}


def test_the_issue_examples_as_real_processes(tmp_path: Path, bad_files) -> None:
    """As a person or a container runs them: the console script, the demo (`make demo`)."""
    script = str(Path(sys.executable).with_name("housing-mlops"))
    cases = [
        ([script, "local", "up"], {"HOUSING_LOCAL_PG_PORT": "x"}, "HOUSING_LOCAL_PG_PORT='x'"),
        (
            [script, "local", "up"],
            {"HOUSING_LOCAL_DIR": bad_files["bad_state"]},
            "credentials.json is not valid JSON",
        ),
        ([sys.executable, "-m", "housing_mlops.demo"], {"HOUSING_LOCAL_SERVE_PORT": "80a"}, "'80a'"),
    ]
    for argv, env, named in cases:
        result = subprocess.run(
            argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        lines = [line for line in result.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert len(lines) == 1 and named in lines[0], result.stderr
