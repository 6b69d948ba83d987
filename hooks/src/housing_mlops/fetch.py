"""`housing-mlops fetch-model URI DEST`: the KServe storage-initializer contract for mlflow:// and s3://."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from . import registry
from .errors import ConfigError, HousingError, NotFound

log = logging.getLogger(__name__)

VERSION_FILE = ".model-version"  # the registered model version fetched into DEST (mlflow:// URIs)

_MODEL = r"(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+|pinned))/?$"
# mlflow://<server>/<model>/pinned (what the chart renders: the exact version comes from the predictor pod's pin
# annotation, PINNED_ENV; the URI names its tracking server, so a release's storage container never answers for
# another's), mlflow://[<server>/]<model>/<version>, or mlflow://[<server>/]<model>@<alias> (by hand)
MLFLOW_URI = re.compile(rf"^mlflow://(?:(?P<server>[^/@]+)/)?{_MODEL}")
PINNED = "pinned"


def _authority(url: str) -> str:
    """host[:port] of an http(s) URL, with the scheme's default port made explicit."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.hostname}:{port}"


def to_s3(
    uri: str, tracking_uri: str, wait_timeout: float, pinned: str | None = None
) -> tuple[str, str | None]:
    """Map ``uri`` to (s3 uri, version or None), waiting up to ``wait_timeout`` s for a missing alias. ``pinned``:
    the version a `…/pinned` URI stands for (the chart's storage container passes the pod's pin annotation:
    the reconciler writes it on the InferenceService, KServe copies it to every predictor pod)."""
    if uri.startswith("s3://"):
        return uri, None
    match = MLFLOW_URI.match(uri)
    if not match:
        raise ConfigError(
            f"unsupported model URI {uri!r}: use mlflow://[<server>/]<model>/pinned (the pod's pinned version), "
            "mlflow://[<server>/]<model>/<version>, mlflow://[<server>/]<model>@<alias> or s3://…"
        )
    if match["server"]:
        named = match["server"] if ":" in match["server"] else f"{match['server']}:80"
        if not tracking_uri.startswith(("http://", "https://")) or _authority(tracking_uri) != named:
            raise ConfigError(
                f"{uri} names MLflow server {match['server']}, but this storage initializer tracks "
                f"{tracking_uri or '(no MLFLOW_TRACKING_URI)'}: it would fetch another release's model"
            )
    name, alias, version = match["name"], match["alias"], match["version"]
    if version == PINNED:
        version = (pinned or "").strip()
        if not version:
            raise NotFound(
                f"{uri}: this predictor pod carries no pinned version (--pinned-version, HOUSING_PINNED_VERSION, is "
                "empty: the InferenceService has no housing-mlops.io/model-version annotation yet); the release's "
                "reconciler pins it once the alias exists, and KServe then starts pods that carry it"
            )
        if not version.isdigit():
            raise ConfigError(
                f"pinned version (--pinned-version, HOUSING_PINNED_VERSION) must be a number, got {version!r}"
            )
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            found = registry.get_version(name, alias=alias, version=version)
            return registry.physical_uri(name, str(found.version)), str(found.version)
        except NotFound as exc:
            # On first install the predictor starts before promotion has set the alias.
            if not alias or time.monotonic() >= deadline:
                raise NotFound(f"{exc} (waited {wait_timeout:g}s)" if alias else str(exc)) from exc
            log.info("%s: waiting for the alias to be set", exc)
            time.sleep(min(10.0, max(0.5, deadline - time.monotonic())))


def fetch(
    uri: str, dest: Path, tracking_uri: str, wait_timeout: float, pinned: str | None = None
) -> tuple[str, str | None]:
    """Download the model folder so that DEST/MLmodel exists. Returns (s3 uri, version)."""
    s3_uri, version = to_s3(uri, tracking_uri, wait_timeout, pinned)
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    # Download beside DEST, then move in: DEST never holds a half-written model.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=s3_uri, dst_path=tmp))
        except Exception as exc:  # boto/mlflow raise many types; all mean "could not download"
            raise HousingError(f"downloading {s3_uri} failed: {str(exc).splitlines()[0]}") from exc
        root = next((p.parent for p in sorted(local.rglob("MLmodel"), key=lambda p: len(p.parts))), None)
        if root is None:
            raise NotFound(f"{s3_uri} holds no MLmodel: not an MLflow model")
        for entry in dest.iterdir():
            if entry.name != Path(tmp).name:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for entry in root.iterdir():
            os.replace(entry, dest / entry.name)
    if version:  # the serving runtime names it in every answer (model_version)
        (dest / VERSION_FILE).write_text(f"{version}\n")
    log.info("fetched %s%s into %s", s3_uri, f" (version {version})" if version else "", dest)
    return s3_uri, version
