"""The dataset under DVC: seed the S3 remote (`data push`) and fetch an exact version (`dvc pull`).

Both work in a scratch DVC workspace built from the repo's metadata (``.dvc/config`` + the ``.dvc``
file), so the repo is never modified and a container with a read-only root filesystem can pull.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests
import yaml

from .errors import ConfigError, DataError, ServiceUnavailable
from .schema import REAL_MD5, md5_of, read_dataset, synthetic_dataset

log = logging.getLogger(__name__)
# No usage reports from DVC: the jobs run in clusters and CI without outside network.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REAL_TARGET = "data/housing.csv"
SYNTHETIC_TARGET = "data/synthetic-housing.csv"
DEFAULT_DATA_URL = "https://raw.githubusercontent.com/ageron/handson-ml/master/datasets/housing/housing.csv"


@dataclass
class PulledData:
    path: Path
    md5: str
    remote_url: str
    synthetic: bool
    pushed_at: str | None = None  # when the remote received this md5 (ISO 8601 UTC); None: unknown


class _Collect(logging.Handler):
    """Keeps the first error DVC logs, as one line: its message and the exception behind it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.first:
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            root = exc
            while root.__cause__ is not None or root.__context__ is not None:
                root = root.__cause__ or root.__context__
            text = f"{text}: {type(root).__name__}: {root}".strip(": ")
        self.first = " ".join(text.split())[:300]


class _Workspace:
    """A no-SCM DVC repo in a scratch folder, driven through DVC's Python API (one import, no subprocesses)."""

    def __init__(self, repo: Path, remote_url: str | None, into: Path) -> None:
        from dvc.repo import Repo

        if not (repo / ".dvc" / "config").is_file():
            raise ConfigError(
                f"{repo} is not a DVC repository (no .dvc/config); set --repo or HOUSING_DVC_REPO"
            )
        self.root = into
        Repo.init(str(into), no_scm=True).close()
        shutil.copyfile(repo / ".dvc" / "config", into / ".dvc" / "config")
        self.remote_url = _remote_url(repo, remote_url)
        with Repo(str(into), uninitialized=True) as scratch:
            remote = scratch.config["core"].get("remote", "storage")
            with scratch.config.edit("local") as conf:
                conf["core"]["no_scm"] = True  # the repo's config was made with git
                settings = conf["remote"].setdefault(remote, {})
                settings["url"] = self.remote_url
                if endpoint := _endpoint():
                    settings["endpointurl"] = endpoint
        self.repo = Repo(str(into))

    def run(self, what: str, call, *args, **kwargs):
        """Call DVC; its own error logs (tracebacks included) become the cause in our one-line error."""
        from dvc.exceptions import DvcException

        errors = _Collect()
        # DVC and its libraries (dvc_data, s3fs…) log tracebacks through DVC's own handlers and the root
        # logger: during the call, both feed only our collector.
        dvc_log, root = logging.getLogger("dvc"), logging.getLogger()
        saved = (dvc_log.handlers[:], dvc_log.propagate, root.handlers[:])
        dvc_log.handlers, dvc_log.propagate, root.handlers = [], True, [errors]
        try:
            return call(*args, **kwargs)
        except DvcException as exc:
            cause = errors.first or (str(exc.__cause__) if exc.__cause__ else "")
            raise ServiceUnavailable(f"dvc {what} failed: {exc}" + (f" ({cause})" if cause else "")) from exc
        finally:
            dvc_log.handlers, dvc_log.propagate, root.handlers = saved

    def __enter__(self) -> _Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.repo.close()


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")


def _remote_url(repo: Path, override: str | None) -> str:
    if override:
        return override
    config = (repo / ".dvc" / "config").read_text()
    for line in config.splitlines():
        if line.strip().startswith("url ="):
            return line.split("=", 1)[1].strip()
    raise ConfigError(f"{repo}/.dvc/config has no remote url")


MD5_LEN = 32


def _dvc_out(dvc_file: Path) -> tuple[str, str]:
    """(md5, kind) recorded in a .dvc file; kind is "synthetic" for generated data (meta.kind), else "real"."""
    meta = yaml.safe_load(dvc_file.read_text()) or {}
    try:
        md5 = meta["outs"][0]["md5"]
    except (KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{dvc_file}: not a DVC file with an md5 (outs[0].md5)") from exc
    kind = (meta.get("meta") or {}).get("kind", "real")
    return md5, kind


def check_md5(md5: str | None) -> str | None:
    if md5 is not None and (len(md5) != MD5_LEN or any(c not in "0123456789abcdef" for c in md5)):
        raise ConfigError(f"dataset md5 must be 32 lowercase hex characters, got {md5!r}")
    return md5


def pull(
    repo: Path, target: str, remote_url: str | None, dest_dir: Path, md5: str | None = None
) -> PulledData:
    """`dvc pull` ``target`` (e.g. data/housing.csv) into ``dest_dir`` and verify its md5.

    The version is the one ``<target>.dvc`` in ``repo`` records, or ``md5`` (a version pushed since, e.g. the
    chart's `training.data.md5`): DVC's cache is content-addressed, so a .dvc naming that md5 pulls it.
    """
    dvc_file = repo / f"{target}.dvc"
    work = dest_dir / "dvc"
    work.mkdir(parents=True, exist_ok=True)
    (work / target).parent.mkdir(parents=True, exist_ok=True)
    if md5 == LATEST:
        md5 = latest_md5(repo, target, remote_url)
        log.info("the newest pushed version of %s is md5 %s", target, md5)
    if md5 is not None:
        check_md5(md5)
        expected, kind = md5, "real"
        if dvc_file.is_file() and _dvc_out(dvc_file) == (md5, "synthetic"):
            kind = "synthetic"
        out = {"outs": [{"md5": md5, "hash": "md5", "path": Path(target).name}], "meta": {"kind": kind}}
        pinned = yaml.safe_dump(out, sort_keys=False)
    elif not dvc_file.is_file():
        raise DataError(
            f"{dvc_file} not found: is {target} tracked with DVC? (run `housing-mlops data push`)"
        )
    else:
        expected, kind = _dvc_out(dvc_file)
        if kind == "real" and target == SYNTHETIC_TARGET:
            kind = "synthetic"  # written before .dvc files carried meta.kind
        pinned = dvc_file.read_text()
    with _Workspace(repo, remote_url, work) as ws:
        url = ws.remote_url
        (work / f"{target}.dvc").write_text(pinned)
        log.info("dvc pull %s (md5 %s) from %s", target, expected, url)
        ws.run("pull", ws.repo.pull, targets=[str(work / f"{target}.dvc")])
    path = work / target
    actual = md5_of(path)
    if actual != expected:
        raise DataError(f"{target}: md5 mismatch after dvc pull: expected {expected}, got {actual}")
    return PulledData(
        path=path, md5=actual, remote_url=url, synthetic=kind == "synthetic", pushed_at=pushed_at(url, actual)
    )


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_time(path: Path) -> str:
    """A local file's mtime as `pushed_at` (`--no-pull` CSVs: their `dataset.kind` says what they are)."""
    return _iso(datetime.fromtimestamp(path.stat().st_mtime, UTC))


def cache_key(remote_url: str, md5: str) -> str:
    """Where DVC 3 stores ``md5`` under ``remote_url``: <remote>/files/md5/<2>/<30>."""
    return f"{remote_url.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"


def pushed_at(remote_url: str, md5: str) -> str | None:
    """When the DVC remote received ``md5`` (S3 LastModified of its cache object; a local remote's mtime),
    ISO 8601 UTC: the gate refuses a model trained on older data than the champion's. None when unreadable."""
    check_md5(md5)
    where = cache_key(remote_url, md5)
    try:
        if where.startswith("s3://"):
            bucket, _, key = where[len("s3://") :].partition("/")
            return _iso(_s3().head_object(Bucket=bucket, Key=key)["LastModified"])
        if "://" not in where or where.startswith("file://"):
            return file_time(Path(where.removeprefix("file://")))
    except Exception as exc:  # botocore's ClientError, OSError: the training still has its data
        log.warning("could not read when %s was pushed (%s): the gate cannot compare its age", where, exc)
        return None
    log.warning(
        "remote %s is neither S3 nor local: the gate cannot compare the age of md5 %s", remote_url, md5
    )
    return None


def _download(url: str, dest: Path) -> bool:
    try:
        response = requests.get(url, timeout=15)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.info("public source not reachable (%s)", type(exc).__name__)
        return False
    dest.write_bytes(response.content)
    return True


def push(
    repo: Path,
    source: Path | None,
    remote_url: str | None,
    allow_synthetic: bool = True,
    target: str = REAL_TARGET,
) -> tuple[str, str]:
    """Version a dataset like `dvc add` + `dvc push`. Returns (target, md5); target is what `train --data` takes.

    Source order: ``source``, $HOUSING_CSV, the public URL (which must be the real dataset); else a synthetic
    dataset under its own .dvc file. Any schema-valid CSV is a new version: its md5 is pushed and, when it differs
    from ``<target>.dvc`` in ``repo``, that file is rewritten (commit it, or pin the md5 in the chart's
    `training.data.md5`). Nothing is pushed or written for a file that fails the schema.
    """
    with (
        tempfile.TemporaryDirectory(prefix="housing-dvc-") as tmp,
        _Workspace(repo, remote_url, Path(tmp)) as ws,
    ):
        work = Path(tmp)
        url = ws.remote_url
        candidate = work / target
        candidate.parent.mkdir(parents=True, exist_ok=True)
        origin = None
        explicit = source or (Path(os.environ["HOUSING_CSV"]) if os.environ.get("HOUSING_CSV") else None)
        if explicit is not None:
            if not explicit.is_file():
                raise DataError(f"dataset not found: {explicit}")
            read_dataset(explicit)  # schema check first: a wrong file gets a precise message
            shutil.copyfile(explicit, candidate)
            origin = str(explicit)
        elif _download(os.environ.get("HOUSING_DATA_URL", DEFAULT_DATA_URL), candidate):
            origin = "public source"
            actual = md5_of(candidate)
            if actual != REAL_MD5:  # a truncated or altered download, not a new version
                raise DataError(
                    f"{origin}: md5 {actual} is not the real dataset's ({REAL_MD5}); refusing to push it"
                )
            read_dataset(candidate)
        if origin is not None:
            md5 = _version(ws, repo, work, target, "real")
            log.info("pushed %s (md5 %s, from %s) to %s", target, md5, origin, url)
            return target, md5
        if not allow_synthetic:
            raise DataError("no dataset: pass a path, set HOUSING_CSV, or allow the synthetic dataset")
        log.warning("SYNTHETIC DATA: no real dataset available; pushing a generated one with the same schema")
        (work / SYNTHETIC_TARGET).parent.mkdir(parents=True, exist_ok=True)
        synthetic_dataset().to_csv(work / SYNTHETIC_TARGET, index=False)
        md5 = _version(ws, repo, work, SYNTHETIC_TARGET, "synthetic")
        log.info("pushed the synthetic dataset (md5 %s) to %s as %s", md5, url, SYNTHETIC_TARGET)
        return SYNTHETIC_TARGET, md5


LATEST = "latest"  # `--data-md5 latest`: the version `data push` pushed last to the remote


def _latest_key(remote_url: str, target: str) -> tuple[str, str]:
    """(bucket, key) of the marker naming the newest pushed version of ``target``: <remote>/latest/<target>."""
    if not remote_url.startswith("s3://"):
        raise ConfigError(f"--data-md5 latest needs an s3:// DVC remote, not {remote_url!r}")
    bucket, _, prefix = remote_url[len("s3://") :].partition("/")
    return bucket, "/".join(p for p in (prefix.strip("/"), "latest", target) if p)


def _s3():
    import boto3

    return boto3.client("s3", endpoint_url=_endpoint())


def _mark_latest(remote_url: str, target: str, md5: str) -> None:
    if not remote_url.startswith("s3://"):
        log.info("remote %s is not S3: no `latest` marker for %s", remote_url, target)
        return
    bucket, key = _latest_key(remote_url, target)
    _s3().put_object(Bucket=bucket, Key=key, Body=f"{md5}\n".encode())


def latest_md5(repo: Path, target: str, remote_url: str | None) -> str:
    """The md5 `data push` pushed last for ``target`` (to the repo's remote, or ``remote_url``)."""
    url = _remote_url(repo, remote_url)
    bucket, key = _latest_key(url, target)
    try:
        body = _s3().get_object(Bucket=bucket, Key=key)["Body"].read().decode().strip()
    except Exception as exc:  # botocore raises ClientError, EndpointConnectionError, ...
        raise DataError(f"no pushed version of {target} in {url} (s3://{bucket}/{key}: {exc})") from exc
    return check_md5(body) or ""


def _version(ws: _Workspace, repo: Path, work: Path, target: str, kind: str) -> str:
    """dvc add + push ``target`` in the scratch workspace; (re)write ``repo``'s .dvc when the md5 is new."""
    ws.run("add", ws.repo.add, [str(work / target)])
    dvc = work / f"{target}.dvc"
    content = yaml.safe_load(dvc.read_text())
    content["meta"] = {"kind": kind}  # DVC keeps a .dvc file's `meta` as is
    dvc.write_text(yaml.safe_dump(content, sort_keys=False))
    ws.run("push", ws.repo.push, targets=[str(dvc)])
    md5 = content["outs"][0]["md5"]
    _mark_latest(ws.remote_url, target, md5)
    mine = repo / f"{target}.dvc"
    if mine.is_file() and _dvc_out(mine)[0] == md5:
        return md5
    try:
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dvc, mine)
    except OSError as exc:
        raise DataError(
            f"{target} md5 {md5} is pushed, but {mine} cannot be written ({exc}); "
            f"write it yourself:\n{dvc.read_text()}"
        ) from exc
    log.info(
        "wrote %s (md5 %s): commit it to make it the default version, or pin training.data.md5", mine, md5
    )
    return md5
