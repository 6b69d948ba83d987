"""Real services for the pipeline tests, started once per session on free loopback ports."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from housing_mlops import local
from housing_mlops.cli import main as cli_main
from housing_mlops.infer import wait_ready
from housing_mlops.schema import CANONICAL_REQUEST

ROOT = Path(__file__).resolve().parents[2]
REAL_CSV = ROOT.parent / "shared" / "data" / "housing.csv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cli:
    """Runs `housing-mlops` in-process (same entry point as the console script) and keeps its output."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capfd.readouterr()
        code = cli_main(list(argv))
        out, err = self.capfd.readouterr()
        return code, out, err


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capfd)


def state_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A new folder for a stack's state. As root, PostgreSQL runs as an OS user of the stack's, which must be able
    to enter the folders above it: `local up` changes none of them (it names the one in the way), so the test
    opens pytest's own temporary folders (0700) for entering, not listing (o+x)."""
    path = tmp_path_factory.mktemp(name)
    if os.geteuid() == 0:
        base = tmp_path_factory.getbasetemp()
        for folder in (base.parent, base):
            folder.chmod(folder.stat().st_mode | 0o001)
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.LocalConfig]:
    """PostgreSQL + S3 + MLflow on free ports, torn down (and deleted, its OS user too) at the end."""
    state = state_folder(tmp_path_factory, "stack")
    cfg = local.LocalConfig(
        state_dir=state, pg_port=free_port(), s3_port=free_port(), mlflow_port=free_port()
    )
    saved = dict(os.environ)
    try:
        env = local.up(cfg)
        os.environ.update(env)
        os.environ.pop("HOUSING_CSV", None)
        yield cfg
    finally:
        local.destroy(cfg)
        os.environ.clear()
        os.environ.update(saved)


def request_without(name: str) -> dict:
    """The canonical V2 request without input ``name``."""
    return {"inputs": [i for i in CANONICAL_REQUEST["inputs"] if i["name"] != name]}


def request_changed(name: str, **fields) -> dict:
    """The canonical V2 request with input ``name``'s fields replaced (a deep copy)."""
    body = copy.deepcopy(CANONICAL_REQUEST)
    for item in body["inputs"]:
        if item["name"] == name:
            item.update(fields)
    return body


def copy_dvc_metadata(repo: Path) -> Path:
    """Copy the project's DVC metadata (.dvc/config, data/housing.csv.dvc) into ``repo``: tests never write
    into the checkout."""
    shutil.copytree(
        ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    (repo / "data").mkdir()
    shutil.copy(ROOT / "data" / "housing.csv.dvc", repo / "data" / "housing.csv.dvc")
    return repo


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's DVC metadata."""
    return copy_dvc_metadata(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def pushed(stack: local.LocalConfig, dvc_repo: Path) -> str:
    """The DVC target the remote holds: the real dataset when this machine has it, else synthetic."""
    from housing_mlops import data

    source = REAL_CSV if REAL_CSV.is_file() else None
    target, _ = data.push(dvc_repo, source, None)
    return target


@pytest.fixture(scope="session")
def champion(stack: local.LocalConfig, dvc_repo: Path, pushed: str) -> str:
    """Version 1, trained with the default recipe through dvc pull and promoted to @production."""
    assert cli_main(["train", "--repo", str(dvc_repo), "--data", pushed, "--trigger", "pytest-champion"]) == 0
    assert cli_main(["promote", "--version", "1"]) == 0
    return "1"


@dataclass(frozen=True)
class Serving:
    """Where the served model answers: REST base URL, gRPC and metrics ports, the model folder, the server's pid."""

    url: str
    grpc_port: int
    metrics_port: int
    model_dir: Path
    pid: int


@contextmanager
def model_server(
    model_dir: Path, log: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[Serving]:
    """`housing-mlops serve MODEL_DIR OPTIONS` (as KServe starts the server) on free loopback ports, until the
    model answers ready; stopped (TERM to its process group) on exit."""
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "housing_mlops.cli", "serve", str(model_dir), "--http-port", str(port),
         "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), *options],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, "housing-model", 240)
        yield Serving(url, grpc_port, metrics_port, model_dir, proc.pid)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


@pytest.fixture(scope="session")
def serving(
    stack: local.LocalConfig, champion: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serving]:
    """The model server (started as KServe starts it, default settings) on the fetched @production model."""
    model_dir = tmp_path_factory.mktemp("serving") / "model"
    assert cli_main(["fetch-model", "mlflow://housing-model@production", str(model_dir)]) == 0
    with model_server(model_dir, stack.state_dir / "model-server.log") as server:
        yield server


@pytest.fixture(scope="session")
def served(serving: Serving) -> str:
    """The served model's REST base URL."""
    return serving.url
