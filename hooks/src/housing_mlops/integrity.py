"""Model integrity: the bytes a predictor loads are the bytes the training registered, from where they must be.

At registration the training records the sha256 of every file of the model's artifact folder (`manifest`) as one
tag, `MANIFEST_TAG`, on the model version (in its one create call) and on the training run. `fetch-model` checks
the folder it downloaded against it (`verify`) before anything is moved where the server loads from, and fetches
only from under the configured artifact root (`check_under_root`). Whoever can write the artifact bucket but not
the registry can then make a predictor refuse to start, never run their code.

The manifest is one tag holding compact JSON, ``{"<path relative to the model folder>": "<sha256 hex>", …}`` with
sorted keys: one value is read and written atomically, it says which files exist (so an added file is seen, not
only a changed one), and any file name fits (tag keys allow only ``[\\w .:/-]``). A model is 7-8 files, about 650
characters; the limit is the tighter of MLflow's run-tag value (8,000 characters; version tags take 100,000).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .errors import ConfigError, IntegrityError

MANIFEST_TAG = "model.files.sha256"  # version and run tag: {"<relative path>": "<sha256>", …} (compact JSON)
MAX_MANIFEST_CHARS = 8000  # MLflow's run-tag value limit (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of ``path``'s bytes (read in chunks: a model file may be large)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its path relative to it (POSIX); a symlink or special file is refused."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise IntegrityError(f"{folder}: {rel} is not a regular file or folder; refusing to load it")
        if path.is_file():
            found[rel] = path
    return found


def manifest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (the model's artifact folder)."""
    files = _files(folder)
    if "MLmodel" not in files:
        raise IntegrityError(f"{folder} holds no MLmodel at its root: not an MLflow model folder")
    return {rel: file_digest(path) for rel, path in files.items()}


def encode(files: dict[str, str]) -> str:
    """The tag value: compact JSON, keys sorted, checked as `decode` will check it."""
    value = json.dumps(files, sort_keys=True, separators=(",", ":"))
    decode(value, "the manifest being recorded")
    return value


def _safe_path(rel: object) -> bool:
    """A relative POSIX path that stays inside the folder: no `..`, `.` or empty segment, no root, no backslash."""
    return (
        isinstance(rel, str)
        and 0 < len(rel) <= 1024
        and not rel.startswith("/")
        and "\\" not in rel
        and "\x00" not in rel
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    )


def decode(value: str, where: str) -> dict[str, str]:
    """The manifest a tag holds; `IntegrityError` naming ``where`` (which tag of which version or run) when it is not
    one: bad JSON, not an object, a path that leaves the folder, a value that is not a sha256, no MLmodel."""
    if len(value) > MAX_MANIFEST_CHARS:
        raise IntegrityError(
            f"{where} is {len(value)} characters, more than {MAX_MANIFEST_CHARS}: not a manifest"
        )
    try:
        files = json.loads(value)
    except ValueError as exc:
        raise IntegrityError(f"{where} is not JSON ({exc}): refusing to trust the model's files") from None
    if not isinstance(files, dict) or not files:
        raise IntegrityError(f"{where} must be a JSON object {{path: sha256}}, got {value[:80]!r}")
    for rel, sha in files.items():
        if not _safe_path(rel):
            raise IntegrityError(f"{where} names {str(rel)[:120]!r}, not a path inside the model folder")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise IntegrityError(
                f"{where}: {rel}'s value {str(sha)[:80]!r} is not a sha256 (64 lowercase hex)"
            )
    if "MLmodel" not in files:
        raise IntegrityError(f"{where} lists no MLmodel: not the manifest of an MLflow model")
    return files


def verify(folder: Path, expected: dict[str, str], where: str) -> None:
    """``folder`` holds exactly the files of ``expected`` with their sha256, else `IntegrityError` naming the first
    file that differs (changed: both digests; missing; not recorded: a file that could be loaded, so refused)."""
    found = _files(folder)
    for rel in sorted(expected):
        if rel not in found:
            raise IntegrityError(f"{rel} is missing: {where} records it (sha256 {expected[rel]})")
        actual = file_digest(found[rel])
        if actual != expected[rel]:
            raise IntegrityError(
                f"{rel} has sha256 {actual}, {where} records {expected[rel]}: the file was changed after registration"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise IntegrityError(
            f"{', '.join(extra[:5])}{' …' if len(extra) > 5 else ''} not recorded in {where}: a file added after "
            "registration could be loaded"
        )


def parse_root(root: str) -> tuple[str, list[str]]:
    """(bucket, prefix segments) of an artifact root ``s3://<bucket>[/<prefix>]``; `ConfigError` if it is not one
    (or is empty)."""
    what = "artifact root (--artifact-root, HOUSING_ARTIFACT_ROOT)"
    if not root:
        raise ConfigError(
            f"no {what}: set it to the s3://<bucket>/<prefix> your MLflow stores artifacts under (the server's "
            "--default-artifact-root); fetch-model loads nothing from elsewhere"
        )
    bucket, segments = _split_s3(root.rstrip("/"))
    if bucket is None or segments is None:
        raise ConfigError(f"{what} must be s3://<bucket>[/<prefix>], got {root!r}")
    return bucket, segments


def _split_s3(uri: str) -> tuple[str | None, list[str] | None]:
    """(bucket, key segments) of a plain s3:// URI; (None, None) for anything else: another scheme, a bucket
    with user, port or characters S3 does not allow, a query or fragment, an empty, `.` or `..` segment."""
    if not uri.startswith("s3://"):
        return None, None
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or any(c in uri for c in "?#\\\x00"):
        return None, None
    segments = key.rstrip("/").split("/") if key.rstrip("/") else []
    if any(part in ("", ".", "..") for part in segments):
        return None, None
    return bucket, segments


def check_under_root(uri: str, root: str) -> str:
    """``uri`` if it lies strictly under the artifact root ``root`` (same bucket exactly, whole prefix segments),
    else `IntegrityError` naming both: a registry that returns any other URI is not followed."""
    bucket, prefix = parse_root(root)
    got_bucket, segments = _split_s3(uri)
    if got_bucket is None or segments is None:
        raise IntegrityError(
            f"model URI {uri!r} is not a plain s3://<bucket>/<key> (no `..`, `.` or empty segment, query or "
            f"fragment): refusing to fetch it; the artifact root is {root}"
        )
    if got_bucket != bucket or segments[: len(prefix)] != prefix or len(segments) <= len(prefix):
        raise IntegrityError(
            f"model URI {uri} lies outside the artifact root {root} (--artifact-root, HOUSING_ARTIFACT_ROOT): "
            "refusing to fetch a model from anywhere else"
        )
    return uri


def recorded(name: str, version) -> tuple[dict[str, str] | None, str]:
    """(manifest, where it was read) for ``version`` (an MLflow ModelVersion) of model ``name``: its own
    `MANIFEST_TAG`, else its training run's (a version a person registered from that run: the same run, none of our
    version tags; the files it names must still match, so pointing such a version elsewhere fails closed).
    (None, what was looked at) when neither carries one."""
    from mlflow.exceptions import MlflowException

    from . import registry

    where = f"tag {MANIFEST_TAG} of {name} version {version.version}"
    value = version.tags.get(MANIFEST_TAG)
    if value is None and version.run_id:
        try:
            run = registry.steady(
                lambda: registry.client().get_run(version.run_id), f"MLflow: run {version.run_id}"
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            value = run.data.tags.get(MANIFEST_TAG)
            where = f"tag {MANIFEST_TAG} of run {version.run_id} (which registered {name} version {version.version})"
    if value is None:
        looked = f" or its run {version.run_id}" if version.run_id else ""
        return None, f"{name} version {version.version} (no tag {MANIFEST_TAG} on it{looked})"
    return decode(value, where), where
