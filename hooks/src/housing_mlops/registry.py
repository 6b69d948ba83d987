"""MLflow access shared by the jobs: bounded waiting, version lookup, physical URIs."""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from .errors import ConfigError, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow's own client retries a refused connection ~7 times with exponential backoff (minutes).
# We wait for the server ourselves, with a visible bounded budget, then let each call fail fast.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def backoff(
    attempt: Callable[[], T],
    *,
    what: str,
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    first_delay: float = 0.5,
    max_delay: float = 8.0,
    log_level: int = logging.INFO,
) -> T:
    """Call ``attempt`` until it succeeds, retrying ``retry_on`` with exponential backoff up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except retry_on as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(
                    f"{what}: gave up after {tries} tries in {timeout:g}s ({exc})"
                ) from exc
            log.log(
                log_level,
                "%s: not yet (%s); retrying in %.1fs",
                what,
                type(exc).__name__,
                min(delay, remaining),
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay)


def _auth() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None


def check_http_url(url: str, what: str) -> str:
    """``url`` if it is an http(s) URL with a host (and a numeric port, if any); else a `ConfigError` naming
    ``what`` (the flag and its variable) and the value."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when the port is not a number in range
    except ValueError as exc:
        raise ConfigError(f"{what} {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be http(s)://host[:port], got {url!r}")
    del port
    return url


def wait_for_mlflow(tracking_uri: str, timeout: float) -> None:
    """Block until the tracking server answers /health and accepts our credentials."""
    if not tracking_uri:
        raise ConfigError("no MLflow tracking URI: set --tracking-uri or MLFLOW_TRACKING_URI")
    check_http_url(tracking_uri, "MLflow tracking URI (--tracking-uri, MLFLOW_TRACKING_URI)")
    base = tracking_uri.rstrip("/")

    def probe() -> None:
        health = requests.get(f"{base}/health", timeout=5)
        health.raise_for_status()
        # /health is public; a registry call tells whether the Host header and credentials are accepted.
        api = requests.get(
            f"{base}/api/2.0/mlflow/registered-models/search",
            params={"max_results": 1},
            auth=_auth(),
            timeout=10,
        )
        if api.status_code in (401, 403):
            raise ConfigError(
                f"MLflow at {base} refused our request ({api.status_code}: {api.text.strip()[:120]})"
            )
        api.raise_for_status()

    backoff(
        probe,
        what=f"MLflow at {base}",
        timeout=timeout,
        retry_on=(requests.ConnectionError, requests.Timeout, requests.HTTPError),
    )
    import mlflow

    mlflow.set_tracking_uri(base)
    mlflow.set_registry_uri(base)


def client():
    from mlflow import MlflowClient

    return MlflowClient()


# How each SQL backend words "another request inserted this row first" (PostgreSQL, SQLite, MySQL).
_INSERT_RACE = (
    "duplicate key value violates unique constraint",
    "UNIQUE constraint failed",
    "Duplicate entry",
)


def set_model_tag(name: str, key: str, value: str, *, version: str | None = None) -> None:
    """Set a tag of registered model ``name`` (or of its ``version``), even while another job sets the same new tag.

    MLflow's SQL store upserts a tag as "select, then insert or update", so two requests creating one tag at once
    make the slower one fail with a unique-key violation (measured: 6 threads, 20 new keys, several failures a run).
    That loser's write is retried: the row exists now, so it becomes an update, and last writer wins as it would
    have without the race.
    """
    from mlflow.exceptions import MlflowException

    c = client()
    for attempt in range(3):
        try:
            if version is None:
                c.set_registered_model_tag(name, key, value)
            else:
                c.set_model_version_tag(name, str(version), key, value)
            return
        except MlflowException as exc:
            if attempt == 2 or not any(race in str(exc) for race in _INSERT_RACE):
                raise
            log.info("tag %s of %s was created concurrently; writing it again", key, name)


class Starting(Exception):
    """MLflow answered a 404 with an empty body: what its server does for a few seconds while it starts (measured
    on our cluster after its pod was replaced; a real "not found" carries a JSON error)."""


STARTING_WAIT_S = 60.0


def _starting(exc: Exception) -> bool:
    return "failed with error code 404 != 200. Response body: ''" in str(exc)


def steady(call: Callable[[], T], what: str) -> T:
    """``call()`` (an MLflow client call), retried while MLflow answers as it does while starting."""

    def attempt() -> T:
        try:
            return call()
        except Exception as exc:
            if _starting(exc):
                from .reconciler import fresh_connections

                fresh_connections()
                raise Starting(str(exc)) from exc
            raise

    return backoff(attempt, what=what, timeout=STARTING_WAIT_S, retry_on=(Starting,))


def model_tags(name: str) -> dict[str, str]:
    """The registered model's tags; {} while it does not exist (a first install before any version)."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(steady(lambda: client().get_registered_model(name), f"MLflow: model {name!r}").tags)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


def get_version(name: str, *, alias: str | None = None, version: str | None = None):
    """The ModelVersion for ``alias`` or ``version`` of registered model ``name``, or NotFound."""
    return steady(lambda: _get_version(name, alias=alias, version=version), f"MLflow: model {name!r}")


def _get_version(name: str, *, alias: str | None = None, version: str | None = None):
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"registered model {name!r} does not exist") from exc
        raise
    try:
        if alias:
            return c.get_model_version_by_alias(name, alias)
        if version:
            return c.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            what = f"alias {alias!r}" if alias else f"version {version}"
            raise NotFound(f"model {name!r} has no {what}") from exc
        raise
    raise ConfigError("give an alias or a version")


def physical_uri(name: str, version: str) -> str:
    """The s3:// folder holding the model files of ``name`` version ``version`` (what KServe loads)."""
    uri = client().get_model_version_download_uri(name, str(version))
    if not uri.startswith("s3://"):
        raise ConfigError(
            f"model {name} v{version} is stored at {uri!r}, not s3://: run the MLflow server with "
            "--default-artifact-root s3://… --no-serve-artifacts so KServe can load it"
        )
    return uri.rstrip("/")


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(client().get_run(run_id).data.metrics)


def model_files_present(name: str, version: str) -> bool:
    """True when version ``version``'s artifact folder still holds an MLflow model (its MLmodel file); False when
    the folder is empty or has none. Any other failure (S3 unreachable, refused) raises ServiceUnavailable: a
    retry may fix it, so it must never be taken for a gone version."""
    import mlflow

    uri = physical_uri(name, version)
    try:
        listed = mlflow.artifacts.list_artifacts(artifact_uri=uri)
    except Exception as exc:  # boto/mlflow raise many types; none of them says the files are gone
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceUnavailable(
            f"cannot list the artifacts of {name!r} version {version} ({uri}): {first}"
        ) from exc
    return any(Path(f.path).name == "MLmodel" for f in listed)
