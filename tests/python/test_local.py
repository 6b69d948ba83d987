"""The local stack: idempotent up, status, restarts that lose nothing, and locked down for a shared machine (S3
admin API and anonymous requests refused, PostgreSQL password-only, private state, no symlink followed, no
secret printed, an older state migrated, `destroy` removing its OS user)."""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import boto3
import psycopg2
import pytest
import requests
from conftest import free_port, state_folder
from housing_mlops import local
from housing_mlops.errors import ConfigError
from mlflow import MlflowClient

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other OS users")
NOBODY = pwd.getpwnam("nobody")


def _pids(cfg: local.LocalConfig) -> dict[str, int]:
    return json.loads((cfg.state_dir / "stack.json").read_text())["pids"]


def test_up_is_idempotent(stack: local.LocalConfig) -> None:
    before = _pids(stack)
    assert set(before) >= {"postgresql", "s3", "mlflow"}
    local.up(stack)
    assert _pids(stack) == before
    assert all(state.startswith("up (started by up)") for state in local.status(stack).values())


def test_port_taken_by_a_stranger_is_reported(
    tmp_path_factory: pytest.TempPathFactory, stack: local.LocalConfig
) -> None:
    # Another stack pointed at this one's PostgreSQL: it refuses the other stack's password (no sharing by mistake).
    other = local.LocalConfig(
        state_dir=state_folder(tmp_path_factory, "other"),
        pg_port=stack.pg_port,
        s3_port=free_port(),
        mlflow_port=free_port(),
    )
    try:
        with pytest.raises(
            ConfigError, match=f"PostgreSQL on 127.0.0.1:{stack.pg_port} refuses this stack's login"
        ):
            local.up(other)
        assert local.down(other) == []  # it started nothing, so it stops nothing
        # Its S3 port is the running MLflow's: not our S3 server, so it must refuse, not reuse it.
        other.s3_port = stack.mlflow_port
        with pytest.raises(
            ConfigError,
            match=f"port {stack.mlflow_port} is taken by something else: set HOUSING_LOCAL_S3_PORT",
        ):
            local.start_s3(other, local.StackState())
    finally:
        local.destroy(other)
    assert local.status(stack)["postgresql"].startswith("up")


def test_restarting_postgres_and_s3_loses_nothing(
    stack: local.LocalConfig, champion: str, tmp_path: Path
) -> None:
    client = MlflowClient()
    versions = {v.version for v in client.search_model_versions("name='housing-model'")}
    alias = client.get_model_version_by_alias("housing-model", "production").version
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]}

    assert local.stop(stack, "s3") and local.stop(stack, "postgresql")
    assert local.status(stack)["s3"] == "down" and local.status(stack)["postgresql"] == "down"
    local.up(stack)

    assert {v.version for v in client.search_model_versions("name='housing-model'")} == versions
    assert client.get_model_version_by_alias("housing-model", "production").version == alias
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]} == keys
    import mlflow

    assert (
        Path(mlflow.artifacts.download_artifacts("models:/housing-model@production", dst_path=str(tmp_path)))
        / "MLmodel"
    ).is_file()


def test_mlflow_restart_upgrades_the_schema_only_when_mlflow_changed(
    stack: local.LocalConfig, caplog: pytest.LogCaptureFixture
) -> None:
    stamp = stack.state_dir / "mlflow-schema"
    installed = version("mlflow")
    assert stamp.read_text().strip() == installed  # written once the session's MLflow answered
    experiments = {e.name for e in MlflowClient().search_experiments()}

    with caplog.at_level(logging.INFO, logger="housing_mlops.local"):
        assert local.stop(stack, "mlflow")
        local.up(stack)
    assert "db upgrade" not in caplog.text  # same mlflow: the schema is current, no upgrade

    stamp.write_text("2.0.0\n")  # as if the database had been created by an older mlflow
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="housing_mlops.local"):
        assert local.stop(stack, "mlflow")
        local.up(stack)
    assert "mlflow: db upgrade (schema of 2.0.0)" in caplog.text
    assert stamp.read_text().strip() == installed
    assert {e.name for e in MlflowClient().search_experiments()} == experiments


def test_config_round_trips_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for auth in (False, True):
        cfg = local.LocalConfig(state_dir=tmp_path, pg_port=1, s3_port=2, mlflow_port=3, auth=auth)
        for key, value in cfg.to_env().items():
            monkeypatch.setenv(key, value)
        assert local.LocalConfig.from_env() == cfg


# --- locked down for a shared machine (docs/security.md, "Local stack") -------------------------------------


def _objects(stack: local.LocalConfig) -> dict[str, set[str]]:
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    return {
        b["Name"]: {o["Key"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])}
        for b in s3.list_buckets()["Buckets"]
    }


def test_s3_admin_api_and_anonymous_requests_are_refused(stack: local.LocalConfig, pushed: str) -> None:
    before = _objects(stack)
    assert before[stack.data_bucket]  # the DVC remote holds the dataset: something to lose
    # moto's admin API, no credentials: emptying every bucket, dumping them, turning the signature check off
    for method, path in [
        ("POST", "/moto-api/reset"),
        ("GET", "/moto-api/data.json"),
        ("POST", "/moto-api/reset-auth"),
        ("GET", "/moto-api/"),
    ]:
        answer = requests.request(method, f"{stack.s3_url}{path}", timeout=10)
        assert answer.status_code == 403, (method, path)
        assert answer.json() == {"error": "moto's admin API is disabled on this server"}
    # S3 itself without a signature (another OS user without the secret; a web page): refused, S3's way
    for method, path in [
        ("GET", "/"),
        ("GET", f"/{stack.bucket}"),
        ("DELETE", f"/{stack.data_bucket}/{next(iter(before[stack.data_bucket]))}"),
        ("POST", f"/{stack.data_bucket}?delete"),
    ]:
        answer = requests.request(method, f"{stack.s3_url}{path}", timeout=10)
        assert answer.status_code == 403 and "<Code>AccessDenied</Code>" in answer.text, (method, path)
    # a web page: no CORS preflight, no Access-Control-* header on any answer, another Host (DNS rebinding) refused
    preflight = requests.options(
        f"{stack.s3_url}/{stack.bucket}",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "DELETE"},
        timeout=10,
    )
    assert preflight.status_code == 403
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    rebound = requests.get(
        f"{stack.s3_url}/{stack.bucket}", headers={"Host": f"evil.example:{stack.s3_port}"}, timeout=10
    )
    assert rebound.status_code == 403 and "not this server's loopback name" in rebound.json()["error"]
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    s3.meta.events.register(
        "before-sign.s3", lambda request, **_: request.headers.add_header("Origin", "http://evil.example")
    )
    signed = s3.list_objects_v2(Bucket=stack.bucket)["ResponseMetadata"]["HTTPHeaders"]
    assert not [h for h in signed if h.lower().startswith("access-control-")]
    # only S3 is served: another AWS service (signed with our key, here IAM) is refused
    iam = boto3.client("iam", endpoint_url=stack.s3_url, region_name="us-east-1")
    with pytest.raises(Exception, match="only S3 is served here"):
        iam.list_users()
    assert _objects(stack) == before


def test_postgres_refuses_a_login_without_the_password(
    stack: local.LocalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # no ~/.pgpass either
    over_tcp = {"host": "127.0.0.1", "port": stack.pg_port, "user": "postgres", "dbname": "mlflow"}
    over_socket = {**over_tcp, "host": str(stack.state_dir / "pg" / "sock")}
    for where in (over_tcp, over_socket):
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(**where, connect_timeout=10)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(**where, password="guess", connect_timeout=10)
    # the stack's own password (what MLflow gets as PGPASSWORD) works
    psycopg2.connect(**over_tcp, password=stack.credentials()["pg_password"], connect_timeout=10).close()
    assert not local._hba_trusts(stack.state_dir / "pg" / "data")


def _stack_paths(stack: local.LocalConfig) -> list[Path]:
    """Everything the stack keeps (tests write their own logs beside it)."""
    paths = [stack.state_dir / f for f in local.STATE_FILES if (stack.state_dir / f).exists()]
    for name in local.STATE_DIRS:
        if (stack.state_dir / name).exists():
            paths += [stack.state_dir / name, *(stack.state_dir / name).rglob("*")]
    return paths


def test_state_is_readable_by_no_other_os_user(stack: local.LocalConfig) -> None:
    folder = stack.state_dir.stat()
    if os.geteuid() == 0:  # PostgreSQL's OS user may enter (to reach its data), not list
        assert stat.S_IMODE(folder.st_mode) == 0o710
        assert folder.st_gid == pwd.getpwnam(stack.pg_os_user).pw_gid
    else:
        assert stat.S_IMODE(folder.st_mode) == 0o700
    paths = _stack_paths(stack)
    assert {p.name for p in paths} >= {
        "credentials.json",
        "env",
        "stack.json",
        "s3.log",
        "snapshot.pickle",
        "PG_VERSION",
    }
    for path in paths:
        st = path.lstat()
        if stat.S_ISSOCK(st.st_mode):  # PostgreSQL's socket, in its 0700 folder
            continue
        assert not stat.S_ISLNK(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{path}: {stat.S_IMODE(st.st_mode):04o}"
    assert stat.S_IMODE((stack.state_dir / "logs").stat().st_mode) == 0o700  # was 0777 without the sticky bit


@ROOT_ONLY
def test_other_os_users_are_refused_at_the_door(stack: local.LocalConfig) -> None:
    """What the modes mean, tried as another user and as PostgreSQL's own OS user."""
    pg_user = pwd.getpwnam(stack.pg_os_user)
    for who in (NOBODY, pg_user):
        as_them = {
            "user": who.pw_uid,
            "group": who.pw_gid,
            "extra_groups": [],
            "capture_output": True,
            "text": True,
        }
        listing = subprocess.run(["ls", str(stack.state_dir)], **as_them)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, who.pw_name
        for path in ("credentials.json", "env", "logs/s3.log", "s3/snapshot.pickle", "pg-password.sha256"):
            read = subprocess.run(["cat", str(stack.state_dir / path)], **as_them)
            assert read.returncode != 0 and "Permission denied" in read.stderr, (who.pw_name, path)


def test_up_prints_where_the_secrets_are_not_what_they_are(stack: local.LocalConfig) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "housing_mlops.cli", "local", "up"],
        env={**os.environ, **stack.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    creds = stack.credentials()
    for key in ("s3_secret", "pg_password", "flask_secret_key", "mlflow_admin_password"):
        assert creds[key] not in result.stdout + result.stderr, key
    assert result.stdout.endswith(f". {stack.env_file}\n")
    # `eval "$(housing-mlops local up)"` still gives a shell everything, from the 0600 file
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf %s "$AWS_SECRET_ACCESS_KEY"', "_", result.stdout],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shell.stdout == creds["s3_secret"]


def test_symlinks_in_the_state_are_refused_not_followed(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    victim = tmp_path / "someone-elses-file"
    victim.write_text("keep\n")
    victim.chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ports = {"pg_port": free_port(), "s3_port": free_port(), "mlflow_port": free_port()}

    def refused(cfg: local.LocalConfig, message: str, planted: Path | None = None) -> None:
        try:
            with pytest.raises(ConfigError, match=message):
                local.up(cfg)
        finally:
            if planted is not None:
                assert planted.is_symlink()  # left as it was: not replaced, not written through
                planted.unlink()
            local.destroy(cfg)
        assert victim.read_text() == "keep\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644

    link = tmp_path / "state-link"
    link.symlink_to(elsewhere)
    refused(local.LocalConfig(state_dir=link, **ports), "is a symbolic link: the local stack keeps its state")
    assert list(elsewhere.iterdir()) == []
    for name in ("credentials.json", "stack.json", "logs/s3.log", "env"):
        state = state_folder(tmp_path_factory, "symlinked")
        (state / name).parent.mkdir(exist_ok=True)
        (state / name).symlink_to(victim)
        refused(
            local.LocalConfig(state_dir=state, **ports),
            "is a symbolic link: refusing to follow it",
            state / name,
        )
    if os.geteuid() == 0:  # a folder someone else prepared (e.g. in /tmp) is not taken over
        theirs = state_folder(tmp_path_factory, "theirs")
        os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
        refused(
            local.LocalConfig(state_dir=theirs, **ports), f"belongs to uid {NOBODY.pw_uid}, not to this user"
        )


def test_an_older_state_is_migrated_and_destroy_removes_it_all(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A state left by an older version (PostgreSQL trusting every login, loose modes, its data owned by the OS
    user all stacks shared), then a lost credentials.json: `up` tightens, sets the password and keeps every run;
    `destroy` removes the stack's files and OS user and nothing else."""
    state = state_folder(tmp_path_factory, "older")
    cfg = local.LocalConfig(
        state_dir=state, pg_port=free_port(), s3_port=free_port(), mlflow_port=free_port()
    )
    other_tool = state / "e2e" / "setup.env"  # `.local` also holds other tools' files
    other_tool.parent.mkdir()
    other_tool.write_text("KEEP=1\n")
    data = state / "pg" / "data"

    def no_password_login() -> str:
        try:
            psycopg2.connect(
                host="127.0.0.1", port=cfg.pg_port, user="postgres", dbname="mlflow", password=""
            )
        except psycopg2.OperationalError as exc:
            return str(exc)
        return "logged in"

    try:
        local.up(cfg)
        client = MlflowClient(tracking_uri=cfg.mlflow_url)
        experiment = client.create_experiment("made-before-migration")
        s3 = boto3.client("s3", endpoint_url=cfg.s3_url, **_keys(cfg))
        s3.put_object(Bucket=cfg.bucket, Key="before/marker", Body=b"1")
        # running, as an older version left it: refused with what to do
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        with pytest.raises(ConfigError, match=r"still lets anyone in without a password.*local down"):
            local.up(cfg)
        assert set(local.down(cfg)) == {"postgresql", "s3", "mlflow"}
        # stopped, as an older version left it
        (state / "pg-password.sha256").unlink()
        state.chmod(0o755)
        (state / "logs").chmod(0o777)
        (state / "stack.json").chmod(0o644)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{NOBODY.pw_uid}:{NOBODY.pw_gid}", str(state / "pg")], check=True)
        local.up(cfg)
        assert "no password supplied" in no_password_login()
        assert not local._hba_trusts(data)
        assert client.get_experiment(experiment).name == "made-before-migration"
        assert stat.S_IMODE(state.stat().st_mode) in (0o700, 0o710)
        assert stat.S_IMODE((state / "logs").stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "stack.json").stat().st_mode) == 0o600
        if os.geteuid() == 0:
            assert data.stat().st_uid == pwd.getpwnam(cfg.pg_os_user).pw_uid
        # credentials.json lost: new secrets, the cluster gets the new password, nothing else lost
        old = cfg.credentials()
        local.down(cfg)
        (state / "credentials.json").unlink()
        local.up(cfg)
        new = cfg.credentials()
        assert new["pg_password"] != old["pg_password"] and new["s3_secret"] != old["s3_secret"]
        assert "no password supplied" in no_password_login()
        assert client.get_experiment(experiment).name == "made-before-migration"
        s3 = boto3.client("s3", endpoint_url=cfg.s3_url, **_keys(cfg))
        assert s3.get_object(Bucket=cfg.bucket, Key="before/marker")["Body"].read() == b"1"
    finally:
        removed = local.destroy(cfg)
    assert other_tool.read_text() == "KEEP=1\n" and sorted(p.name for p in state.iterdir()) == ["e2e"]
    assert str(state / "credentials.json") in removed
    if os.geteuid() == 0:
        assert f"OS user {cfg.pg_os_user}" in removed
        with pytest.raises(KeyError):
            pwd.getpwnam(cfg.pg_os_user)


def _keys(cfg: local.LocalConfig) -> dict[str, str]:
    env = cfg.client_env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
