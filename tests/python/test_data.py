"""data push / dvc pull: real, synthetic, md5 mismatch, malformed CSV."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import boto3
import pandas as pd
import pytest
from conftest import REAL_CSV, copy_dvc_metadata
from housing_mlops import data
from housing_mlops.errors import ConfigError, DataError
from housing_mlops.schema import REAL_MD5, md5_of, synthetic_dataset
from mlflow import MlflowClient


def _objects(stack) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    return {o["Key"] for o in s3.list_objects_v2(Bucket=stack.data_bucket).get("Contents", [])}


@pytest.mark.skipif(not REAL_CSV.is_file(), reason="real dataset not on this machine")
def test_real_dataset_round_trips_through_dvc(stack, dvc_repo: Path, pushed: str, tmp_path: Path) -> None:
    assert pushed == "data/housing.csv"
    assert f"dvc/files/md5/{REAL_MD5[:2]}/{REAL_MD5[2:]}" in _objects(stack)
    pulled = data.pull(dvc_repo, "data/housing.csv", None, tmp_path)
    assert pulled.md5 == REAL_MD5 and not pulled.synthetic
    assert len(pd.read_csv(pulled.path)) == 20640


def _second_version(path: Path) -> None:
    """Another version of the dataset: the real one minus its last 640 rows (or a synthetic one offline)."""
    frame = pd.read_csv(REAL_CSV) if REAL_CSV.is_file() else synthetic_dataset(rows=3000, seed=11)
    frame.iloc[: len(frame) - 640].to_csv(path, index=False)


def test_a_new_csv_is_a_new_dataset_version(cli, stack, dvc_repo: Path, pushed: str, tmp_path: Path) -> None:
    """`data push CSV` versions any schema-valid CSV like dvc add + push: the .dvc is rewritten with its md5,
    training on it records that md5 (not "synthetic"), and the old version stays pullable (audit item 1)."""
    repo = copy_dvc_metadata(tmp_path / "repo")
    before = (repo / "data" / "housing.csv.dvc").read_text()
    second = tmp_path / "housing-v2.csv"
    _second_version(second)
    md5 = md5_of(second)
    code, out, err = cli("data", "push", str(second), "--repo", str(repo))
    assert code == 0, err
    assert out.strip() == f"target=data/housing.csv md5={md5}"
    written = (repo / "data" / "housing.csv.dvc").read_text()
    assert md5 in written and written != before and "kind: real" in written
    assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}" in _objects(stack)
    pulled = data.pull(repo, "data/housing.csv", None, tmp_path / "pull")
    assert pulled.md5 == md5 and not pulled.synthetic

    code, out, err = cli(
        "train", "--repo", str(repo), "--max-iter", "20", "--model-name", "housing-v2", "--trigger", "v2"
    )
    assert code == 0, err
    version = MlflowClient().get_model_version("housing-v2", out.split("version=")[1].split()[0])
    assert version.tags["dataset.md5"] == md5 and version.tags["dataset.kind"] == "real"

    # the untouched repo still records the first version; --data-md5 (the chart's training.data.md5) pins v2
    pinned = data.pull(dvc_repo, pushed, None, tmp_path / "pinned", md5=md5)
    assert pinned.md5 == md5 and not pinned.synthetic
    first = data.pull(repo, "data/housing.csv", None, tmp_path / "first", md5=md5_of_dvc(dvc_repo, pushed))
    assert first.md5 == md5_of_dvc(dvc_repo, pushed)
    # `latest` (the scheduled retrain's training.schedule.dataVersion): the version pushed last, v2
    newest = data.pull(dvc_repo, "data/housing.csv", None, tmp_path / "latest", md5="latest")
    assert newest.md5 == md5


def test_latest_needs_an_s3_remote_and_a_push(tmp_path: Path, stack) -> None:
    with pytest.raises(ConfigError, match="--data-md5 latest needs an s3:// DVC remote"):
        data._latest_key("/srv/dvc", "data/housing.csv")
    repo = copy_dvc_metadata(tmp_path / "repo")
    with pytest.raises(DataError, match=r"no pushed version of data/never\.csv in s3://"):
        data.latest_md5(repo, "data/never.csv", None)


def md5_of_dvc(repo: Path, target: str) -> str:
    return data._dvc_out(repo / f"{target}.dvc")[0]


@pytest.mark.parametrize(
    ("md5", "message"),
    [
        ("newest", "dataset md5 must be 32 lowercase hex characters, got 'newest'"),
        ("0" * 32, "dvc pull failed"),
    ],
    ids=["not-an-md5", "never-pushed"],
)
def test_a_bad_dataset_md5_is_named(cli, stack, dvc_repo: Path, pushed: str, md5: str, message: str) -> None:
    versions = len(MlflowClient().search_model_versions("name='housing-model'"))
    code, _, err = cli("train", "--repo", str(dvc_repo), "--data", pushed, "--data-md5", md5)
    assert code in (1, 2) and message in err, err
    assert len(MlflowClient().search_model_versions("name='housing-model'")) == versions


def test_a_corrupt_public_download_is_refused_and_nothing_pushed(
    cli, stack, tmp_path: Path, monkeypatch
) -> None:
    """The public source must be the real dataset: a truncated or altered download is not a new version."""
    served = tmp_path / "www"
    served.mkdir()
    synthetic_dataset(rows=100).to_csv(served / "housing.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    repo = copy_dvc_metadata(tmp_path / "repo")
    before_dvc = (repo / "data" / "housing.csv.dvc").read_text()
    before = _objects(stack)
    try:
        monkeypatch.delenv("HOUSING_CSV", raising=False)
        monkeypatch.setenv("HOUSING_DATA_URL", f"http://127.0.0.1:{server.server_port}/housing.csv")
        code, _, err = cli("data", "push", "--repo", str(repo))
    finally:
        server.shutdown()
    assert code == 1
    assert f"is not the real dataset's ({REAL_MD5}); refusing to push it" in err
    assert _objects(stack) == before
    assert (repo / "data" / "housing.csv.dvc").read_text() == before_dvc


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f.drop(columns=["ocean_proximity"]), "missing column(s) ocean_proximity"),
        (
            lambda f: f.assign(total_rooms=["many", *list(f.total_rooms[1:])]),
            "column total_rooms has a non-numeric",
        ),
        (lambda f: f.iloc[0:0], "no rows"),
    ],
)
def test_malformed_csv_is_named(cli, dvc_repo: Path, tmp_path: Path, mangle, message: str) -> None:
    bad = tmp_path / "bad.csv"
    mangle(synthetic_dataset(rows=20)).to_csv(bad, index=False)
    code, _, err = cli("data", "push", str(bad), "--repo", str(dvc_repo))
    assert code == 1
    assert message in err and err.count("\n") == 1


def test_missing_file(cli, dvc_repo: Path, tmp_path: Path) -> None:
    code, _, err = cli("data", "push", str(tmp_path / "nope.csv"), "--repo", str(dvc_repo))
    assert code == 1 and "dataset not found" in err


def test_md5_mismatch_on_pull_fails_training(cli, stack, dvc_repo: Path, pushed: str, tmp_path: Path) -> None:
    """A corrupted remote object: training stops before fitting, nothing registered."""
    repo = tmp_path / "repo"
    shutil.copytree(dvc_repo, repo)
    fake_md5 = hashlib.md5(b"the real content").hexdigest()
    (repo / "data" / "other.csv.dvc").write_text(
        f"outs:\n- md5: {fake_md5}\n  size: 10\n  hash: md5\n  path: other.csv\n"
    )
    boto3.client("s3", endpoint_url=stack.s3_url).put_object(
        Bucket=stack.data_bucket, Key=f"dvc/files/md5/{fake_md5[:2]}/{fake_md5[2:]}", Body=b"corrupted\n"
    )
    client = MlflowClient()
    versions = len(client.search_model_versions("name='housing-model'"))
    code, _, err = cli("train", "--repo", str(repo), "--data", "data/other.csv")
    assert code == 1
    assert f"md5 mismatch after dvc pull: expected {fake_md5}" in err
    assert len(client.search_model_versions("name='housing-model'")) == versions


def test_untracked_target(cli, stack, dvc_repo: Path) -> None:
    code, _, err = cli("train", "--repo", str(dvc_repo), "--data", "data/nothing.csv", "--wait-timeout", "5")
    assert code == 1 and "data/nothing.csv.dvc not found" in err


def test_synthetic_dataset_is_labelled(cli, stack, tmp_path: Path, monkeypatch) -> None:
    """Offline and no file: a synthetic dataset under its own .dvc file, tagged as such."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_dvc_metadata(repo)
    monkeypatch.delenv("HOUSING_CSV", raising=False)
    monkeypatch.setenv("HOUSING_DATA_URL", "http://127.0.0.1:9/housing.csv")  # unreachable public source
    code, out, err = cli("data", "push", "--repo", str(repo))
    assert code == 0, err
    assert "SYNTHETIC DATA" in err
    assert out.startswith("target=data/synthetic-housing.csv md5=")
    md5 = out.split("md5=")[1].strip()
    assert md5 != REAL_MD5
    assert (repo / "data" / "housing.csv.dvc").read_text().count(REAL_MD5) == 1  # real .dvc untouched
    code, out, err = cli(
        "train",
        "--repo",
        str(repo),
        "--data",
        "data/synthetic-housing.csv",
        "--max-iter",
        "20",
        "--model-name",
        "housing-synthetic",
    )
    assert code == 0, err
    assert "SYNTHETIC DATA" in err
    version = MlflowClient().get_model_version("housing-synthetic", "1")
    assert version.tags["dataset.kind"] == "synthetic" and version.tags["dataset.md5"] == md5


def test_synthetic_dataset_is_deterministic() -> None:
    a, b = synthetic_dataset(rows=300), synthetic_dataset(rows=300)
    pd.testing.assert_frame_equal(a, b)
    assert a["total_bedrooms"].isna().any()


def test_read_dataset_rejects_binary(tmp_path: Path) -> None:
    from housing_mlops.schema import read_dataset

    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(DataError):
        read_dataset(junk)
    assert md5_of(junk)  # file still there, unchanged
