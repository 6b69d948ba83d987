"""data push / dvc pull: real, synthetic, md5 mismatch, malformed CSV."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import boto3
import pandas as pd
import pytest
from conftest import REAL_CSV, copy_dvc_metadata
from housing_mlops import data
from housing_mlops.errors import DataError
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


def test_wrong_file_is_refused_and_nothing_pushed(
    cli, stack, dvc_repo: Path, pushed: str, tmp_path: Path
) -> None:
    before = _objects(stack)
    tampered = tmp_path / "housing.csv"
    synthetic_dataset(rows=100).to_csv(tampered, index=False)
    code, _, err = cli("data", "push", str(tampered), "--repo", str(dvc_repo))
    assert code == 1
    assert f"does not match data/housing.csv.dvc ({REAL_MD5}); refusing to push it" in err
    assert _objects(stack) == before


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
