"""`housing-mlops fetch-model URI DEST`: the KServe storage-initializer contract for mlflow:// and s3://.

Nothing reaches DEST unverified (integrity.py): the URI must lie under the artifact root, and the downloaded
folder must hold exactly the files, with the sha256, that the version's training recorded. A version without that
record (registered before it existed, or an s3:// URI, which names no version) is refused unless
``allow_unverified``. On an integrity failure DEST is left empty, so no server loads anything from it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from . import integrity, registry
from .errors import ConfigError, HousingError, IntegrityError, NotFound

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


@dataclass(frozen=True)
class Source:
    """Where a model URI leads: the s3:// folder, the registered version (None for an s3:// URI), the manifest its
    training recorded (None: no record) and where that record was read (for messages)."""

    s3_uri: str
    version: str | None
    expected: dict[str, str] | None
    record: str


def to_s3(uri: str, tracking_uri: str, wait_timeout: float, pinned: str | None = None) -> Source:
    """Map ``uri`` to its `Source`, waiting up to ``wait_timeout`` s for a missing alias. ``pinned``:
    the version a `…/pinned` URI stands for (the chart's storage container passes the pod's pin annotation:
    the reconciler writes it on the InferenceService, KServe copies it to every predictor pod)."""
    if uri.startswith("s3://"):
        return Source(
            uri, None, None, f"{uri} (an s3:// URI names no registered version, so no record of its files)"
        )
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
            expected, record = integrity.recorded(name, found)
            return Source(
                registry.physical_uri(name, str(found.version)), str(found.version), expected, record
            )
        except NotFound as exc:
            # On first install the predictor starts before promotion has set the alias.
            if not alias or time.monotonic() >= deadline:
                raise NotFound(f"{exc} (waited {wait_timeout:g}s)" if alias else str(exc)) from exc
            log.info("%s: waiting for the alias to be set", exc)
            time.sleep(min(10.0, max(0.5, deadline - time.monotonic())))


def fetch(
    uri: str,
    dest: Path,
    tracking_uri: str,
    wait_timeout: float,
    pinned: str | None = None,
    *,
    artifact_root: str,
    allow_unverified: bool = False,
) -> tuple[str, str | None]:
    """Download the model folder so that DEST/MLmodel exists, verified (module docstring). Returns (s3 uri,
    version). An `IntegrityError` leaves DEST empty."""
    integrity.parse_root(artifact_root)  # a ConfigError before anything is asked or touched
    source = None
    try:
        source = to_s3(uri, tracking_uri, wait_timeout, pinned)
        _fetch(source, dest, artifact_root, allow_unverified)
    except IntegrityError as exc:
        _empty(dest)
        what = uri if source is None else source.s3_uri
        if source is not None and source.version:
            what = f"version {source.version} ({source.s3_uri})"
        raise IntegrityError(f"refusing {what}: {exc}; nothing fetched, {dest} left empty") from None
    log.info(
        "fetched %s%s into %s, %s",
        source.s3_uri,
        f" (version {source.version})" if source.version else "",
        dest,
        f"every file's sha256 as {source.record} records"
        if source.expected
        else "UNVERIFIED (--allow-unverified)",
    )
    return source.s3_uri, source.version


def _empty(dest: Path, keep: str | None = None) -> None:
    if dest.is_dir():
        for entry in dest.iterdir():
            if entry.name != keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def verified_copy(name: str, version, dest: Path) -> Path:
    """The model of ``version`` (a ModelVersion of ``name``) downloaded into the empty folder ``dest`` and checked
    against its record, for a job that loads it in process (the gate scores candidate and champion). A version
    without a record is copied as it is, with a warning (versions trained before the record existed stay
    judgeable); the artifact root is fetch-model's check (a job has none configured)."""
    expected, record = integrity.recorded(name, version)
    source = Source(registry.physical_uri(name, str(version.version)), str(version.version), expected, record)
    _fetch(source, dest, None, allow_unverified=True)
    return dest


def _fetch(source: Source, dest: Path, artifact_root: str | None, allow_unverified: bool) -> None:
    import mlflow

    s3_uri = (
        source.s3_uri if artifact_root is None else integrity.check_under_root(source.s3_uri, artifact_root)
    )
    if source.expected is None:
        if not allow_unverified:
            raise IntegrityError(
                f"{source.record}: there is no record of its files' sha256 to check them against (registered "
                "before housing-mlops recorded them, or by hand without the training run that did); retrain it, or "
                "accept it unverified with --allow-unverified (HOUSING_ALLOW_UNVERIFIED=true)"
            )
        log.warning("UNVERIFIED: %s; its files are used unchecked", source.record)
    dest.mkdir(parents=True, exist_ok=True)
    # Download beside DEST, verify, then move in: DEST never holds a half-written or unverified model.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=s3_uri, dst_path=tmp))
        except Exception as exc:  # boto/mlflow raise many types; all mean "could not download"
            raise HousingError(f"downloading {s3_uri} failed: {str(exc).splitlines()[0]}") from exc
        if source.expected is not None:
            integrity.verify(local, source.expected, source.record)
            root = local  # the record names MLmodel at the folder's root
        else:
            root = next((p.parent for p in sorted(local.rglob("MLmodel"), key=lambda p: len(p.parts))), None)
            if root is None:
                raise NotFound(f"{s3_uri} holds no MLmodel: not an MLflow model")
        _empty(dest, keep=Path(tmp).name)
        for entry in root.iterdir():
            os.replace(entry, dest / entry.name)
    if source.version:  # the serving runtime names it in every answer (model_version)
        (dest / VERSION_FILE).write_text(f"{source.version}\n")
