"""`make demo`: the whole pipeline on the local stack, through the same code the chart's jobs run.

local up → data push → train (dvc pull) → promote (gate) → fetch-model → serve (V2 model server) → infer.
Leaves the stack and the model server running; `make down` stops them. Timings go to .local/demo-timings.json.

What does not depend on each other overlaps (bench/ measures the time to the first prediction): the data push
runs while MLflow starts (it needs only S3), the training code is imported while MLflow finishes starting, and
the model server starts (without the model) while the model trains, then loads it once fetched (SIGHUP).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from . import data, local, registry
from .cli import main as cli_main
from .errors import ConfigError, HousingError
from .infer import wait_ready

log = logging.getLogger("housing_mlops.demo")


class Stages:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str, title: str | None = None) -> Iterator[None]:
        """Time the block as stage ``name``; print ``title`` first when given."""
        if title:
            print(f"\n==> {title}", flush=True)
        t = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t, 2)

    def run(self, name: str, argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> int:
        """Stage ``name``: `housing-mlops ARGV`, in process."""
        with self.timed(name, f"housing-mlops {' '.join(argv)}"):
            code = cli_main(argv)
        if code not in ok_codes:
            raise SystemExit(f"demo: step {name!r} failed with exit code {code}")
        return code


def serve_in_background(cfg: local.LocalConfig, model_dir: Path, port: int) -> subprocess.Popen:
    """The model server without the model yet (`serve --load-later`): it starts while the model trains;
    `load_model` then has it load the model (bench/: the serve stage went from ~4 s to the model load alone).
    Returns its process."""
    local.stop(cfg, local.SERVER)
    with local.open_log(cfg, local.SERVER) as logfile:  # private, never through a symlink
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("housing-mlops")),
                "serve",
                str(model_dir),
                "--load-later",
                "--http-port",
                str(port),
                "--grpc-port",
                str(port + 1),
                "--metrics-port",
                str(port + 2),
            ],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    local.register(cfg, local.SERVER, proc.pid)
    return proc


def alive(proc: subprocess.Popen, log: Path) -> None:
    """Raise (not retried) if the server process has exited: its log's last lines say why."""
    if proc.poll() is not None:
        try:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        except OSError:
            tail = []
        raise HousingError(
            f"the model server exited with code {proc.returncode}; the end of {log}:\n" + "\n".join(tail)
        )


def load_model(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until the server started by `serve_in_background` answers, then have it load the fetched model (SIGHUP:
    the server has no load API on its port); `wait_ready` then waits for it. A server that died stops the wait."""

    def live() -> None:
        alive(proc, log)
        requests.get(f"{url}/v2/health/live", timeout=5).raise_for_status()

    registry.backoff(
        live,
        what=f"the model server at {url}",
        timeout=timeout,
        retry_on=(requests.ConnectionError, requests.Timeout, requests.HTTPError),
        first_delay=0.1,
        max_delay=0.25,
    )
    os.kill(proc.pid, signal.SIGHUP)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    stages = Stages()
    cfg = local.LocalConfig.from_env()
    port = local.env_port("HOUSING_LOCAL_SERVE_PORT", 8080)
    if port > 65533:  # the server takes port, port + 1 (gRPC) and port + 2 (metrics)
        raise ConfigError(f"HOUSING_LOCAL_SERVE_PORT={port}: the demo also needs the next two ports")
    with stages.timed("local_up", "housing-mlops local up"):
        local.start(cfg)  # PostgreSQL and S3 answer; MLflow is starting
    os.environ.update(cfg.client_env())

    with stages.timed("data_push", "housing-mlops data push"):
        target, _md5 = data.push(Path("."), None, None)  # what `data push` runs; we need the target back
    with stages.timed("mlflow_ready"):
        import mlflow.sklearn  # noqa: F401  (what `train` imports first, while MLflow finishes starting)

        local.wait_mlflow(cfg)
    model_dir = local.private_dir(cfg, "models") / "production"
    url = f"http://127.0.0.1:{port}"
    server = serve_in_background(
        cfg, model_dir, port
    )  # starts while the model trains; loads in the serve stage
    server_log = cfg.state_dir / "logs" / f"{local.SERVER}.log"
    stages.run("train", ["train", "--data", target, "--trigger", f"make-demo-{int(time.time())}"])
    # Exit 3 = the gate kept the current champion: the demo then serves that one.
    gate = stages.run("promote", ["promote"], ok_codes=(0, 3))
    stages.run("fetch_model", ["fetch-model", "mlflow://housing-model@production", str(model_dir)])
    with stages.timed("serve", "housing-mlops serve (in the background): load the model"):
        load_model(url, server, server_log, 180)
        wait_ready(url, "housing-model", 180, poll=0.25)
        alive(server, server_log)
    stages.run("infer", ["infer", "--url", url])
    total = round(time.perf_counter() - stages.started, 2)
    timings = {
        "stages": stages.times,
        "time_to_first_prediction_s": total,
        "gate": "rejected" if gate == 3 else "ok",
    }
    (cfg.state_dir / "demo-timings.json").write_text(json.dumps(timings, indent=2))
    print(f"\nDone in {total:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.times.items()))
    print(f"MLflow UI:  {cfg.mlflow_url}")
    print(f"V2 model:   {url}/v2/models/housing-model  (POST .../infer: JSON or binary tensors)")
    print(f"V2 gRPC:    127.0.0.1:{port + 1}  (tritonclient.grpc; docs/cli.md)")
    print(f"Metrics:    http://127.0.0.1:{port + 2}/metrics")
    print("Stop with:  make down")


if __name__ == "__main__":
    try:
        main()
    except HousingError as exc:  # one line, as the CLI prints it
        sys.exit(f"demo: error: {exc}")
    except OSError as exc:
        sys.exit(f"demo: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
