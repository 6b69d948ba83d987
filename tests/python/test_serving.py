"""fetch-model, V2 serving (the model server started as KServe starts it), infer and predict-batch."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
import requests
from conftest import REAL_CSV, request_changed, request_without
from housing_mlops.schema import CANONICAL_REQUEST, synthetic_dataset
from mlflow import MlflowClient

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")  # as test_cli


def test_fetch_alias_version_and_s3(cli, champion: str, tmp_path: Path) -> None:
    code, _, _ = cli("fetch-model", "mlflow://housing-model@production", str(tmp_path / "a"))
    assert code == 0 and (tmp_path / "a" / "MLmodel").is_file()
    code, _, _ = cli("fetch-model", f"mlflow://housing-model/{champion}", str(tmp_path / "v"))
    assert code == 0 and (tmp_path / "v" / "MLmodel").is_file()
    _, uri, _ = cli("resolve", "--alias", "production")
    # an s3:// URI names no version, so no record of its files to check: only with --allow-unverified
    code, _, err = cli("fetch-model", uri.strip(), str(tmp_path / "s"))
    assert code == 7 and "no record of its files" in err and not (tmp_path / "s" / "MLmodel").exists()
    code, _, _ = cli("fetch-model", uri.strip(), str(tmp_path / "s"), "--allow-unverified")
    assert code == 0 and (tmp_path / "s" / "MLmodel").is_file()
    # the same model; an mlflow:// fetch also records which registered version it is
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(
        p.name for p in (tmp_path / "a").iterdir() if p.name != ".model-version"
    )
    assert (tmp_path / "a" / ".model-version").read_text().strip() == champion
    assert (tmp_path / "v" / ".model-version").read_text().strip() == champion


def test_fetch_a_uri_that_names_its_tracking_server(cli, champion: str, tmp_path: Path, stack) -> None:
    """What the chart renders: mlflow://<server>/<model>@<alias>. Only the storage initializer configured for
    that server answers it, so a release never fetches another's model (audit item 6)."""
    server = urlparse(os.environ["MLFLOW_TRACKING_URI"]).netloc
    code, _, err = cli("fetch-model", f"mlflow://{server}/housing-model@production", str(tmp_path / "a"))
    assert code == 0 and (tmp_path / "a" / "MLmodel").is_file(), err
    code, _, _ = cli("fetch-model", f"mlflow://{server}/housing-model/{champion}", str(tmp_path / "v"))
    assert code == 0 and (tmp_path / "v" / "MLmodel").is_file()
    other = "other-release-mlflow.other-ns:5000"
    code, _, err = cli("fetch-model", f"mlflow://{other}/housing-model@production", str(tmp_path / "x"))
    assert code == 1
    assert f"names MLflow server {other}, but this storage initializer tracks http://{server}" in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_fetch_bad_uri_and_missing_alias(cli, champion: str, tmp_path: Path) -> None:
    code, _, err = cli("fetch-model", "http://example/model", str(tmp_path / "x"))
    assert code == 1 and "unsupported model URI" in err
    code, _, err = cli(
        "fetch-model", "mlflow://housing-model@nobody", str(tmp_path / "x"), "--wait-timeout", "1"
    )
    assert code == 1 and "has no alias 'nobody' (waited 1s)" in err
    assert not (tmp_path / "x" / "MLmodel").exists()


def test_fetch_waits_for_an_alias_set_later(cli, champion: str, tmp_path: Path) -> None:
    client = MlflowClient()
    timer = threading.Timer(2.0, client.set_registered_model_alias, ("housing-model", "late", champion))
    timer.start()
    try:
        code, _, err = cli(
            "fetch-model", "mlflow://housing-model@late", str(tmp_path / "m"), "--wait-timeout", "60"
        )
    finally:
        timer.join()
        client.delete_registered_model_alias("housing-model", "late")
    assert code == 0, err
    assert (tmp_path / "m" / "MLmodel").is_file()


def test_fetch_the_pinned_uri_fetches_exactly_the_pinned_version(
    cli, champion: str, dvc_repo: Path, pushed: str, tmp_path: Path, monkeypatch
) -> None:
    """What the chart renders in alias mode: mlflow://<server>/<model>/pinned, the version from the predictor pod's
    pin annotation (--pinned-version, HOUSING_PINNED_VERSION through the downward API); never the alias."""
    code, out, err = cli(
        "train", "--repo", str(dvc_repo), "--data", pushed, "--max-iter", "3", "--trigger", "pinned-fetch"
    )
    assert code == 0, err
    other = out.split("version=")[1].split()[0]
    client = MlflowClient()
    assert client.get_model_version_by_alias("housing-model", "production").version == champion != other
    server = urlparse(os.environ["MLFLOW_TRACKING_URI"]).netloc
    pinned = f"mlflow://{server}/housing-model/pinned"

    def run_id(dest: Path) -> str:
        import yaml

        return yaml.safe_load((dest / "MLmodel").read_text())["run_id"]

    monkeypatch.delenv("HOUSING_PINNED_VERSION", raising=False)
    code, out, err = cli("fetch-model", pinned, str(tmp_path / "flag"), "--pinned-version", other)
    assert code == 0, err
    assert (tmp_path / "flag" / ".model-version").read_text().strip() == other  # not @production's
    assert run_id(tmp_path / "flag") == client.get_model_version("housing-model", other).run_id
    assert run_id(tmp_path / "flag") != client.get_model_version("housing-model", champion).run_id

    # as the chart's storage container runs it: the version from the environment (the pod's annotation)
    monkeypatch.setenv("HOUSING_PINNED_VERSION", champion)
    code, _, err = cli("fetch-model", pinned, str(tmp_path / "env"))
    assert code == 0, err
    assert (tmp_path / "env" / ".model-version").read_text().strip() == champion
    assert run_id(tmp_path / "env") == client.get_model_version("housing-model", champion).run_id

    # the pin moved, the alias did not: the same DEST now holds the pinned version, nothing of the old one
    code, _, err = cli("fetch-model", "mlflow://housing-model/pinned", str(tmp_path / "env"), "--pinned-version",
                       f" {other} ")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "env" / ".model-version").read_text().strip() == other
    assert run_id(tmp_path / "env") == client.get_model_version("housing-model", other).run_id

    # a pin to a version that is gone: one line naming it, no waiting (only an alias is waited for)
    started = time.monotonic()
    code, _, err = cli("fetch-model", pinned, str(tmp_path / "gone"), "--pinned-version", "999")
    assert code == 1 and "model 'housing-model' has no version 999" in err, err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "gone" / "MLmodel").exists()


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (
            None,
            "this predictor pod carries no pinned version (--pinned-version, HOUSING_PINNED_VERSION, is empty",
        ),
        (
            "",
            "this predictor pod carries no pinned version (--pinned-version, HOUSING_PINNED_VERSION, is empty",
        ),
        (
            "   ",
            "this predictor pod carries no pinned version (--pinned-version, HOUSING_PINNED_VERSION, is empty",
        ),
        (
            "latest",
            "pinned version (--pinned-version, HOUSING_PINNED_VERSION) must be a number, got 'latest'",
        ),
        ("v3", "pinned version (--pinned-version, HOUSING_PINNED_VERSION) must be a number, got 'v3'"),
        ("-1", "pinned version (--pinned-version, HOUSING_PINNED_VERSION) must be a number, got '-1'"),
    ],
    ids=["absent", "empty", "blank", "a-word", "prefixed", "negative"],
)
def test_fetch_the_pinned_uri_without_a_usable_pinned_version_is_one_line(
    cli, champion: str, tmp_path: Path, monkeypatch, given: str | None, says: str
) -> None:
    """A pod without the annotation (not pinned yet), or with garbage in it: one line, never the alias's model."""
    monkeypatch.delenv("HOUSING_PINNED_VERSION", raising=False)
    flag = [] if given is None else ["--pinned-version", given]
    code, _, err = cli("fetch-model", "mlflow://housing-model/pinned", str(tmp_path / "m"), *flag)
    lines = [line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert not (tmp_path / "m" / "MLmodel").exists()
    if given is not None:  # the same through the environment, as the chart passes it
        monkeypatch.setenv("HOUSING_PINNED_VERSION", given)
        code, _, err = cli("fetch-model", "mlflow://housing-model/pinned", str(tmp_path / "m"))
        assert code == 1 and says in err, err


def test_v2_answer_is_a_sane_price(served: str) -> None:
    response = requests.post(f"{served}/v2/models/housing-model/infer", json=CANONICAL_REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    price = response.json()["outputs"][0]["data"][0]
    assert math.isfinite(price) and 15_000 <= price <= 1_000_000
    if REAL_CSV.is_file():
        assert 300_000 <= price <= 500_001  # a Berkeley-hills block group with a high income


def test_infer_command(cli, served: str) -> None:
    code, out, _ = cli("infer", "--url", served)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-2].startswith("price: ")
    assert lines[-1] == "binary tensors (request and answer): the same price"
    code, _, err = cli("infer", "--url", served, "--max-price", "1000")
    assert code == 1 and "outside the sane range" in err


def test_every_answer_names_the_version_that_served_it(
    cli, served: str, champion: str, dvc_repo: Path, pushed: str
) -> None:
    """fetch-model records the registered version beside the model; the runtime names it in each answer, and
    `infer --expect-alias` (the chart's helm test in alias mode) checks it is the alias's version."""
    body = requests.post(f"{served}/v2/models/housing-model/infer", json=CANONICAL_REQUEST, timeout=30).json()
    assert body["model_version"] == champion
    client = MlflowClient()
    client.set_registered_model_alias("housing-model", "served-check", champion)
    code, out, err = cli("infer", "--url", served, "--expect-alias", "served-check")
    assert code == 0, err
    assert f"model_version: {champion} (= housing-model@served-check)" in out
    code, out, _ = cli(
        "train", "--repo", str(dvc_repo), "--data", pushed, "--max-iter", "3", "--trigger", "served-check"
    )
    assert code == 0
    other = out.split("version=")[1].split()[0]
    client.set_registered_model_alias("housing-model", "served-check", other)
    code, _, err = cli("infer", "--url", served, "--expect-alias", "served-check")
    assert code == 1
    assert (
        f"the answer came from model version '{champion}', but housing-model@served-check is version {other}"
        in err
    )
    client.delete_registered_model_alias("housing-model", "served-check")


BAD_REQUESTS = {
    "missing input": (request_without("median_income"), "median_income"),
    "wrong datatype": (request_changed("median_income", datatype="BYTES", data=["lots"]), ""),
    "wrong shape": (request_changed("median_income", shape=[2], data=[1.0]), ""),
    "no inputs": ({"inputs": []}, ""),
    "not a V2 body": ({"instances": [[1, 2, 3]]}, ""),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_malformed_v2_requests_get_an_error_and_server_keeps_serving(served: str, case: str) -> None:
    body, mentions = BAD_REQUESTS[case]
    response = requests.post(f"{served}/v2/models/housing-model/infer", json=body, timeout=30)
    assert 400 <= response.status_code < 600
    detail = json.dumps(response.json())
    assert mentions in detail and len(detail) > 10
    good = requests.post(f"{served}/v2/models/housing-model/infer", json=CANONICAL_REQUEST, timeout=30)
    assert good.status_code == 200


def test_bad_json_and_unknown_model(served: str) -> None:
    response = requests.post(
        f"{served}/v2/models/housing-model/infer",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = requests.post(f"{served}/v2/models/other-model/infer", json=CANONICAL_REQUEST, timeout=30)
    assert response.status_code == 404
    assert requests.get(f"{served}/v2/models/housing-model/ready", timeout=5).status_code == 200


def test_infer_unreachable_server_is_one_line(cli) -> None:
    started = time.monotonic()
    code, _, err = cli("infer", "--url", "http://127.0.0.1:9", "--wait-timeout", "2")
    assert code == 1
    assert time.monotonic() - started < 30
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: model housing-model at http://127.0.0.1:9: gave up after")
    )


def test_predict_batch(cli, champion: str, tmp_path: Path) -> None:
    rows = synthetic_dataset(rows=50, seed=1).drop(columns="median_house_value")
    csv = tmp_path / "in.csv"
    rows.to_csv(csv, index=False)
    out = tmp_path / "out.json"
    code, _, err = cli("predict-batch", str(csv), "--out", str(out))
    assert code == 0, err
    predictions = json.loads(out.read_text())
    assert len(predictions) == 50
    assert all(math.isfinite(p["median_house_value"]) for p in predictions)


def test_predict_batch_missing_column_writes_nothing(cli, champion: str, tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    synthetic_dataset(rows=5).drop(columns=["median_income", "median_house_value"]).to_csv(csv, index=False)
    out = tmp_path / "out.json"
    code, _, err = cli("predict-batch", str(csv), "--out", str(out))
    assert code == 1
    assert err.strip() == f"error: {csv}: missing column(s) median_income"
    assert not out.exists()
    assert pd.read_csv(csv).shape == (5, 8)  # input untouched


def test_predict_batch_refuses_an_unknown_category_and_keeps_a_missing_one(
    cli, champion: str, tmp_path: Path
) -> None:
    rows = synthetic_dataset(rows=6, seed=2).drop(columns="median_house_value")
    rows["ocean_proximity"] = rows["ocean_proximity"].astype(object)
    rows.loc[1, "ocean_proximity"] = None  # an empty field: a missing value, imputed
    csv, out = tmp_path / "in.csv", tmp_path / "out.json"
    rows.to_csv(csv, index=False)
    code, _, err = cli("predict-batch", str(csv), "--out", str(out))
    assert code == 0, err
    assert len(json.loads(out.read_text())) == 6
    rows.loc[4, "ocean_proximity"] = "MARS"
    rows.to_csv(csv, index=False)
    before = out.read_text()
    code, _, err = cli("predict-batch", str(csv), "--out", str(out))
    assert code == 1
    assert err.strip() == (
        f"error: {csv}: input 'ocean_proximity': row 4 holds 'MARS', not a category the model was trained on "
        "(allowed: <1H OCEAN, INLAND, ISLAND, NEAR BAY, NEAR OCEAN; null for a missing value)"
    )
    assert out.read_text() == before  # the previous answer is kept
