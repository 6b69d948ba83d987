"""Model integrity (integrity.py): the training records the sha256 of every model file; fetch-model fetches only
from under the artifact root and refuses any file that is not the one recorded, leaving DEST empty."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from housing_mlops import integrity
from housing_mlops.errors import VERDICT_EXIT_CODES, IntegrityError
from mlflow import MlflowClient

INTEGRITY_EXIT = IntegrityError.exit_code
PROBE = "integrity-probe"  # a model of its own for hand-made versions: housing-model stays as trained
BUCKET = "mlflow"  # the local stack's artifact bucket (local.LocalConfig.bucket)


def s3():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def key_of(uri: str) -> str:
    assert uri.startswith(f"s3://{BUCKET}/"), uri
    return uri[len(f"s3://{BUCKET}/") :].rstrip("/")


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def candidate(stack, dvc_repo: Path, pushed: str) -> str:
    """A version of housing-model of its own (trained, never promoted): its files are changed in S3 and restored."""
    from housing_mlops.cli import main

    assert main(["train", "--repo", str(dvc_repo), "--data", pushed, "--max-iter", "3", "--trigger",
                 "pytest-integrity"]) == 0  # fmt: skip
    (found,) = MlflowClient().search_model_versions(
        "name='housing-model' and tags.trigger='pytest-integrity'"
    )
    return str(found.version)


@pytest.fixture
def model_files(candidate: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(the candidate's s3:// folder, {relative path: bytes}); every object under it restored afterwards."""
    client = MlflowClient()
    uri = client.get_model_version_download_uri("housing-model", candidate).rstrip("/")
    prefix = key_of(uri) + "/"
    listed = s3().list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    saved = {
        o["Key"][len(prefix) :]: s3().get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed
    }
    yield uri, saved
    now = {o["Key"] for o in s3().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}
    for key in now - {prefix + rel for rel in saved}:
        s3().delete_object(Bucket=BUCKET, Key=key)
    for rel, body in saved.items():
        s3().put_object(Bucket=BUCKET, Key=prefix + rel, Body=body)


def test_a_registered_version_carries_the_sha256_of_every_model_file(
    cli, candidate: str, model_files, tmp_path: Path
) -> None:
    """One tag on the version (in its create call) and the same on its run: {path: sha256} of every file of the
    model's artifact folder, exactly what is in S3."""
    _, saved = model_files
    version = MlflowClient().get_model_version("housing-model", candidate)
    recorded = json.loads(version.tags[integrity.MANIFEST_TAG])
    assert recorded == {rel: hashlib.sha256(body).hexdigest() for rel, body in saved.items()}
    assert {"MLmodel", "model.pkl", "requirements.txt"} <= set(recorded), sorted(recorded)
    assert len(version.tags[integrity.MANIFEST_TAG]) < integrity.MAX_MANIFEST_CHARS // 4
    run_tags = MlflowClient().get_run(version.run_id).data.tags
    assert run_tags[integrity.MANIFEST_TAG] == version.tags[integrity.MANIFEST_TAG]
    code, _, err = cli("fetch-model", f"mlflow://housing-model/{candidate}", str(tmp_path / "m"))
    assert code == 0, err
    assert f"every file's sha256 as tag {integrity.MANIFEST_TAG} of housing-model version {candidate}" in err
    assert integrity.manifest(tmp_path / "m") == {**recorded, ".model-version": integrity.file_digest(
        tmp_path / "m" / ".model-version")}  # fmt: skip


def _fetch_refused(cli, candidate: str, dest: Path) -> str:
    """Fetch the candidate into ``dest`` (holding a previous good fetch): refused with exit 7, DEST left empty."""
    code, _, err = cli("fetch-model", f"mlflow://housing-model/{candidate}", str(dest))
    assert code == INTEGRITY_EXIT, err
    assert dest.is_dir() and not any(dest.iterdir()), sorted(p.name for p in dest.rglob("*"))
    line = error_line(err)
    assert f"refusing version {candidate} (s3://{BUCKET}/" in line and f"{dest} left empty" in line, line
    return line


def test_a_file_changed_in_s3_after_registration_is_refused_naming_it(
    cli, candidate: str, model_files, tmp_path: Path
) -> None:
    uri, saved = model_files
    dest = tmp_path / "models"
    code, _, err = cli("fetch-model", f"mlflow://housing-model/{candidate}", str(dest))
    assert code == 0, err  # a good model was there
    expected = integrity.file_digest(dest / "model.pkl")
    tampered = saved["model.pkl"] + b"\n# not what the gate approved"
    s3().put_object(Bucket=BUCKET, Key=f"{key_of(uri)}/model.pkl", Body=tampered)
    line = _fetch_refused(cli, candidate, dest)
    actual = hashlib.sha256(tampered).hexdigest()
    assert f"model.pkl has sha256 {actual}, tag {integrity.MANIFEST_TAG} of housing-model version {candidate} " \
        f"records {expected}: the file was changed after registration" in line, line  # fmt: skip


def test_a_file_added_in_s3_is_refused(cli, candidate: str, model_files, tmp_path: Path) -> None:
    """Strict: a file the record does not list could be picked up by a loader (MLflow puts
    the folder's code/ on sys.path when MLmodel names it)."""
    uri, _ = model_files
    s3().put_object(Bucket=BUCKET, Key=f"{key_of(uri)}/code/sitecustomize.py", Body=b"import os\n")
    line = _fetch_refused(cli, candidate, tmp_path / "models")
    assert "code/sitecustomize.py not recorded in tag" in line and "could be loaded" in line, line


def test_a_file_deleted_in_s3_is_refused(cli, candidate: str, model_files, tmp_path: Path) -> None:
    uri, _ = model_files
    s3().delete_object(Bucket=BUCKET, Key=f"{key_of(uri)}/requirements.txt")
    line = _fetch_refused(cli, candidate, tmp_path / "models")
    assert "requirements.txt is missing: tag" in line, line


@pytest.fixture(scope="module")
def probe(candidate: str) -> Iterator[tuple[MlflowClient, str, str]]:
    """(client, the candidate's s3:// folder, its recorded manifest); the PROBE model deleted at the end. A version
    of PROBE registered from that folder without a run id has no record but what it is given."""
    client = MlflowClient()
    version = client.get_model_version("housing-model", candidate)
    client.create_registered_model(PROBE)
    try:
        folder = client.get_model_version_download_uri("housing-model", candidate).rstrip("/")
        yield client, folder, version.tags[integrity.MANIFEST_TAG]
    finally:
        client.delete_registered_model(PROBE)


@pytest.mark.parametrize(
    "source",
    [
        "s3://other-bucket/1/models/m-0/artifacts",
        "s3://mlflow-evil/1/models/m-0/artifacts",
        "s3://mlflow.evil/models",
    ],
    ids=["other-bucket", "bucket-name-prefix", "bucket-dot-suffix"],
)
def test_a_version_outside_the_artifact_root_is_refused_naming_the_uri(
    cli, probe, tmp_path: Path, source: str
) -> None:
    """The registry says where the files are; fetch-model goes only under HOUSING_ARTIFACT_ROOT (s3://mlflow
    here), even for a version carrying a valid record."""
    client, _, manifest = probe
    created = client.create_model_version(PROBE, source, tags={integrity.MANIFEST_TAG: manifest}).version
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{created}", str(tmp_path / "m"))
    line = error_line(err)
    assert code == INTEGRITY_EXIT, err
    assert f"model URI {source} lies outside the artifact root s3://mlflow" in line, line
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize("source", ["s3://mlflow/../other-bucket/models", "s3://mlflow/1/../../etc"])
def test_mlflow_refuses_to_register_a_source_with_dotdot(probe, source: str) -> None:
    """MLflow 3.17 itself refuses such a source (handlers._validate_non_local_source_contains_relative_paths);
    fetch-model would refuse it too (the s3:// cases below and test_check_under_root)."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="relative path references"):
        probe[0].create_model_version(PROBE, source, tags={integrity.MANIFEST_TAG: probe[2]})


@pytest.mark.parametrize(
    "uri",
    ["s3://other-bucket/x/MLmodel", "s3://mlflow/../x", "s3://mlflow//x", "s3://mlflow", "s3://MLFLOW/x",
     "s3://mlflow@other/x", "s3://mlflow/x?versionId=1"],
)  # fmt: skip
def test_an_s3_uri_given_by_hand_must_lie_under_the_root_too(cli, tmp_path: Path, uri: str) -> None:
    code, _, err = cli("fetch-model", uri, str(tmp_path / "m"), "--allow-unverified")
    assert code == INTEGRITY_EXIT and uri in error_line(err), err


@pytest.mark.parametrize(
    ("root", "uri", "ok"),
    [
        ("s3://mlflow", "s3://mlflow/1/models/m-1/artifacts", True),
        ("s3://mlflow/", "s3://mlflow/1/models/m-1/artifacts/", True),
        ("s3://models/team/mlflow", "s3://models/team/mlflow/1/m/artifacts", True),
        ("s3://models/team/mlflow", "s3://models/team/mlflow-evil/1/m/artifacts", False),
        ("s3://models/team/mlflow", "s3://models/team/mlflow", False),
        ("s3://models/team/mlflow", "s3://models/team/mlflow/../../other/m", False),
        ("s3://models/team/mlflow", "s3://models/team/mlflow/./m", False),
        ("s3://models/team/mlflow", "s3://models/team", False),
        ("s3://models/team/mlflow", "s3://models-evil/team/mlflow/m", False),
        ("s3://models/team/mlflow", "s3://models.evil/team/mlflow/m", False),
        ("s3://models/team/mlflow", "S3://models/team/mlflow/m", False),
        ("s3://models/team/mlflow", "mlflow-artifacts://models/team/mlflow/m", False),
        ("s3://models/team/mlflow", "s3://models/team/mlflow/m#x", False),
        ("s3://models/team/mlflow", "s3://models/team/mlflow/m\\..\\x", False),
        ("s3://models/team/mlflow", "s3://models:9000/team/mlflow/m", False),
    ],
)
def test_check_under_root(root: str, uri: str, ok: bool) -> None:
    if ok:
        assert integrity.check_under_root(uri, root) == uri
    else:
        with pytest.raises(IntegrityError, match="refusing to fetch"):
            integrity.check_under_root(uri, root)


@pytest.mark.parametrize("root", ["", "mlflow", "s3://", "s3://mlflow/../x", "s3://Bucket", "http://mlflow"])
def test_a_missing_or_malformed_artifact_root_is_a_config_error(root: str) -> None:
    from housing_mlops.errors import ConfigError

    with pytest.raises(ConfigError, match="artifact root"):
        integrity.parse_root(root)


def test_a_version_without_a_record_is_refused_unless_allowed(
    cli, probe, tmp_path: Path, monkeypatch
) -> None:
    """Versions registered before the record existed, or by hand without a run: refused (exit 7, saying how to
    allow it); --allow-unverified (HOUSING_ALLOW_UNVERIFIED) fetches them with a warning."""
    client, source, _ = probe
    bare = client.create_model_version(PROBE, source).version
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{bare}", str(tmp_path / "m"))
    line = error_line(err)
    assert code == INTEGRITY_EXIT, err
    assert f"{PROBE} version {bare} (no tag {integrity.MANIFEST_TAG} on it)" in line, line
    assert "--allow-unverified (HOUSING_ALLOW_UNVERIFIED=true)" in line, line
    monkeypatch.setenv("HOUSING_ALLOW_UNVERIFIED", "true")
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{bare}", str(tmp_path / "m"))
    assert code == 0 and (tmp_path / "m" / "MLmodel").is_file(), err
    assert "WARNING" in err and "UNVERIFIED" in err


def test_a_copy_registered_by_hand_from_the_run_is_verified_by_the_runs_record(
    cli, candidate: str, probe, model_files, tmp_path: Path, monkeypatch
) -> None:
    """What a person does in MLflow's UI/REST (`model-versions/create` with the version's source and run id): none
    of our version tags, so the training run's record applies, changed files still refused."""
    client = probe[0]
    version = client.get_model_version("housing-model", candidate)
    run_id = version.run_id
    # as the e2e's register_copy (tests/cluster/lib/registry.py) sends it: the source, the run id and, for a
    # logged model's source `models:/<model id>`, that id (MLflow refuses such a source without it)
    assert version.source.startswith("models:/"), version.source
    model_id = version.source.removeprefix("models:/").split("/")[0]
    copy = client.create_model_version(PROBE, version.source, run_id=run_id, model_id=model_id).version
    assert integrity.MANIFEST_TAG not in client.get_model_version(PROBE, copy).tags
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{copy}", str(tmp_path / "m"))
    assert code == 0, err
    assert f"as tag {integrity.MANIFEST_TAG} of run {run_id} (which registered {PROBE} version {copy})" in err
    uri, saved = model_files
    s3().put_object(Bucket=BUCKET, Key=f"{key_of(uri)}/MLmodel", Body=saved["MLmodel"] + b"\n")
    monkeypatch.setenv("HOUSING_ALLOW_UNVERIFIED", "true")  # allows a missing record, never a mismatch
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{copy}", str(tmp_path / "m"))
    assert code == INTEGRITY_EXIT and "MLmodel has sha256" in error_line(err), err
    assert not any((tmp_path / "m").iterdir())


GOOD = "ab" * 32


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{not json", "is not JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "must be a JSON object"),
        (json.dumps({"MLmodel": GOOD, "../../etc/passwd": GOOD}), "names '../../etc/passwd', not a path inside"),
        (json.dumps({"MLmodel": GOOD, "/etc/passwd": GOOD}), "names '/etc/passwd', not a path inside"),
        (json.dumps({"MLmodel": GOOD, "a/./b": GOOD}), "names 'a/./b', not a path inside"),
        (json.dumps({"MLmodel": "sha256:" + GOOD}), "is not a sha256"),
        (json.dumps({"MLmodel": GOOD.upper()}), "is not a sha256"),
        (json.dumps({"MLmodel": 1}), "is not a sha256"),
        (json.dumps({"model.pkl": GOOD}), "lists no MLmodel"),
        ("x" * 9000, "more than 8000"),
    ],
    ids=["bad-json", "a-list", "empty", "traversal", "absolute", "dot-segment", "prefixed", "uppercase", "number",
         "no-mlmodel", "too-long"],
)  # fmt: skip
def test_a_hostile_record_is_refused(cli, probe, tmp_path: Path, value: str, says: str) -> None:
    client, source, _ = probe
    bad = client.create_model_version(PROBE, source, tags={integrity.MANIFEST_TAG: value}).version
    dest = tmp_path / "m"
    code, _, err = cli("fetch-model", f"mlflow://{PROBE}/{bad}", str(dest), "--allow-unverified")
    line = error_line(err)
    assert code == INTEGRITY_EXIT and says in line, line
    assert f"tag {integrity.MANIFEST_TAG} of {PROBE} version {bad}" in line, line
    assert not dest.exists() or not any(dest.iterdir())


def test_integrity_is_a_verdict() -> None:
    """A retry gives the same answer: exit 7 is one of the codes the chart's Jobs never retry."""
    assert INTEGRITY_EXIT == 7 and INTEGRITY_EXIT in VERDICT_EXIT_CODES


def test_the_gate_never_loads_a_changed_model(cli, candidate: str, model_files) -> None:
    """The promotion hook scores candidate and champion in process: their files are checked against the record
    first (fetch.verified_copy), so a changed model.pkl is a verdict (exit 7), never unpickled, and no alias moves."""
    uri, saved = model_files
    s3().put_object(Bucket=BUCKET, Key=f"{key_of(uri)}/model.pkl", Body=saved["model.pkl"] + b"\n")
    code, _, err = cli("promote", "--version", candidate, "--alias", "integrity-gate", "--wait-timeout", "5")
    line = error_line(err)
    assert code == INTEGRITY_EXIT, err
    assert f"version {candidate} of 'housing-model' cannot be judged: model.pkl has sha256" in line, line
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias("housing-model", "integrity-gate")
