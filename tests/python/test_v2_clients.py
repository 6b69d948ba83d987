"""Every V2 client with its defaults against the served model (housing_mlops.server, as KServe starts it):
tritonclient HTTP (binary tensors, its default), HTTP JSON, gRPC; malformed binary bodies; metrics.

Each answer is checked against the plain-JSON answer for the same rows (same prices, bit for bit), and each bad
request against the message it must carry; the same client is served again afterwards.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as th
from conftest import REAL_CSV, Serving
from housing_mlops.schema import CANONICAL_ROW, CATEGORICAL_FEATURES, FEATURES, synthetic_dataset, v2_request
from tritonclient.utils import InferenceServerException

MODEL = "housing-model"
INFER = f"/v2/models/{MODEL}/infer"


def rows(n: int) -> list[dict]:
    """n complete rows (JSON has no NaN) of the real data when it is here, else of the synthetic one."""
    import pandas as pd

    frame = pd.read_csv(REAL_CSV, nrows=2 * n) if REAL_CSV.is_file() else synthetic_dataset(2 * n)
    complete = frame[FEATURES].dropna().head(n)
    assert len(complete) == n, f"only {len(complete)} complete rows of {2 * n}"
    return complete.to_dict(orient="records")


def json_prices(url: str, batch: list[dict]) -> list[float]:
    response = requests.post(f"{url}{INFER}", json=v2_request(batch), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def triton_inputs(batch: list[dict], binary: bool = True, **datatype: str) -> list[th.InferInput]:
    out = []
    for name in FEATURES:
        kind = datatype.get(name, "BYTES" if name in CATEGORICAL_FEATURES else "FP64")
        values = [row[name] for row in batch]
        if kind == "BYTES":
            array = np.array([str(v).encode() for v in values], dtype=np.object_)
        else:
            array = np.asarray(values, dtype=np.float64)
        item = th.InferInput(name, [len(batch)], kind)
        item.set_data_from_numpy(array, binary_data=binary)
        out.append(item)
    return out


@pytest.fixture(scope="module")
def client(served: str) -> th.InferenceServerClient:
    return th.InferenceServerClient(served.removeprefix("http://"))


@pytest.fixture(scope="module")
def output_name(client: th.InferenceServerClient) -> str:
    return client.get_model_metadata(MODEL)["outputs"][0]["name"]


def test_metadata_names_the_inputs_and_the_output(client: th.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert [i["name"] for i in metadata["inputs"]] == FEATURES
    assert len(metadata["outputs"]) == 1


def test_tritonclient_defaults_binary_in_and_out(
    client: th.InferenceServerClient, output_name: str, served: str
) -> None:
    """tritonclient's defaults: binary inputs, binary outputs (binary_data_output); the same price as JSON."""
    answer = client.infer(MODEL, triton_inputs([CANONICAL_ROW]))
    response = answer.get_response()
    assert (
        "data" not in response["outputs"][0] and response["outputs"][0]["parameters"]["binary_data_size"] == 8
    )
    assert response["model_version"]
    assert answer.as_numpy(output_name).ravel().tolist() == json_prices(served, [CANONICAL_ROW])


def test_a_batch_in_binary_equals_the_json_answer(
    client: th.InferenceServerClient, output_name: str, served: str
) -> None:
    batch = rows(200)
    answer = client.infer(MODEL, triton_inputs(batch))
    assert answer.as_numpy(output_name).ravel().tolist() == json_prices(served, batch)


def test_tritonclient_in_json_mode(client: th.InferenceServerClient, output_name: str, served: str) -> None:
    batch = rows(5)
    answer = client.infer(
        MODEL,
        triton_inputs(batch, binary=False),
        outputs=[th.InferRequestedOutput(output_name, binary_data=False)],
    )
    assert answer.get_response()["outputs"][0]["data"] == json_prices(served, batch)


def test_binary_request_with_a_json_answer_and_the_raw_wire_format(served: str, output_name: str) -> None:
    """A binary body by hand: JSON header, then 8 FP64 columns and one length-prefixed BYTES column."""
    inputs, tail = [], b""
    for name in FEATURES:
        if name in CATEGORICAL_FEATURES:
            raw = CANONICAL_ROW[name].encode()
            chunk, datatype = struct.pack("<I", len(raw)) + raw, "BYTES"
        else:
            chunk, datatype = struct.pack("<d", CANONICAL_ROW[name]), "FP64"
        inputs.append(
            {"name": name, "shape": [1], "datatype": datatype, "parameters": {"binary_data_size": len(chunk)}}
        )
        tail += chunk
    head = json.dumps({"inputs": inputs}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    answer = requests.post(f"{served}{INFER}", data=head + tail, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"  # JSON unless binary output was asked for
    assert answer.json()["outputs"][0]["data"] == json_prices(served, [CANONICAL_ROW])
    # the same, asking for the output in binary: an 8-byte little-endian double after the JSON header
    asked = json.dumps(
        {"inputs": inputs, "outputs": [{"name": output_name, "parameters": {"binary_data": True}}]}
    )
    headers["Inference-Header-Content-Length"] = str(len(asked))
    answer = requests.post(f"{served}{INFER}", data=asked.encode() + tail, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    header = json.loads(answer.content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert struct.unpack("<d", answer.content[length:]) == tuple(json_prices(served, [CANONICAL_ROW]))


def binary_body(client: th.InferenceServerClient) -> tuple[bytes, int]:
    body, json_size = client.generate_request_body(triton_inputs([CANONICAL_ROW]))
    return body, json_size


@pytest.mark.parametrize(
    ("case", "status", "mentions"),
    [
        ("missing input", 400, "missing input(s) median_income"),
        ("wrong datatype", 400, "'median_income' takes numbers"),
        (
            "unknown category",
            400,
            "'MARS', not a category the model was trained on (allowed: <1H OCEAN, INLAND",
        ),
        ("truncated binary payload", 400, "truncated"),
        ("header length larger than the body", 400, "Inference-Header-Content-Length is"),
        ("header length not a number", 400, "is not a number"),
        ("bytes after the last input", 400, "after the last binary input"),
        ("binary size that does not fit the shape", 400, "takes 8 bytes, binary_data_size is 4"),
    ],
)
def test_bad_requests_get_clear_errors_then_the_same_client_is_served(
    client: th.InferenceServerClient, served: str, case: str, status: int, mentions: str
) -> None:
    row = dict(CANONICAL_ROW)
    if case in ("missing input", "wrong datatype", "unknown category"):
        if case == "unknown category":
            row["ocean_proximity"] = "MARS"
        inputs = triton_inputs([row], **({"median_income": "BYTES"} if case == "wrong datatype" else {}))
        if case == "missing input":
            inputs = [i for i in inputs if i.name() != "median_income"]
        with pytest.raises(InferenceServerException) as raised:
            client.infer(MODEL, inputs)
        assert raised.value.status() == str(status), raised.value
        assert mentions in raised.value.message(), raised.value.message()
    else:
        body, json_size = binary_body(client)
        header = str(json_size)
        if case == "truncated binary payload":
            body = body[:-3]
        elif case == "header length larger than the body":
            header = str(len(body) + 10)
        elif case == "header length not a number":
            header = "twelve"
        elif case == "bytes after the last input":
            body += b"\0" * 5
        elif case == "binary size that does not fit the shape":
            head = json.loads(body[:json_size])
            head["inputs"][0]["parameters"]["binary_data_size"] = 4  # longitude: FP64 [1] takes 8
            new_head = json.dumps(head).encode()
            body, header = (
                new_head + body[json_size : json_size + 4] + body[json_size + 8 :],
                str(len(new_head)),
            )
        answer = requests.post(
            f"{served}{INFER}", data=body, headers={"Inference-Header-Content-Length": header}, timeout=60
        )
        assert answer.status_code == status, answer.text
        assert mentions in answer.json()["error"], answer.text
    again = client.infer(MODEL, triton_inputs([CANONICAL_ROW]))
    assert again.as_numpy(
        client.get_model_metadata(MODEL)["outputs"][0]["name"]
    ).ravel().tolist() == json_prices(served, [CANONICAL_ROW])


def test_grpc_with_tritonclient(serving: Serving, served: str) -> None:
    """tritonclient.grpc in its own process (its protobuf names clash with kserve's in this one)."""
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(here / "v2_grpc_client.py"), f"127.0.0.1:{serving.grpc_port}", MODEL],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["live"] and result["ready"]
    assert result["inputs"] == FEATURES
    canonical = json_prices(served, [CANONICAL_ROW])
    assert result["one"]["prices"] == canonical and result["one"]["model_version"]
    # 100 rows take the booster's per-tree path (FlatTrees.predict): the same price up to float rounding
    assert result["batch"]["prices"] == pytest.approx(canonical * 100, rel=1e-12)
    assert result["missing"]["status"] == "StatusCode.INVALID_ARGUMENT", result["missing"]
    assert "missing input(s) median_income" in result["missing"]["message"]
    assert result["wrong_datatype"]["status"] == "StatusCode.INVALID_ARGUMENT", result["wrong_datatype"]
    assert "takes numbers" in result["wrong_datatype"]["message"]
    assert result["unknown_category"]["status"] == "StatusCode.INVALID_ARGUMENT", result["unknown_category"]
    assert "'MARS'" in result["unknown_category"]["message"]
    assert result["again"]["prices"] == canonical


def test_metrics_count_requests_latency_and_predicted_values(serving: Serving, served: str) -> None:
    """The Prometheus endpoint: requests by model, protocol and status, their latency, and the predicted values
    per model version (what a canary analysis compares between two versions)."""

    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    metrics = f"http://127.0.0.1:{serving.metrics_port}/metrics"
    ok = f'housing_inference_requests_total{{code="200",model="{MODEL}",protocol="rest"}}'
    bad = f'housing_inference_requests_total{{code="400",model="{MODEL}",protocol="rest"}}'
    latency = f'housing_inference_request_seconds_count{{model="{MODEL}",protocol="rest"}}'
    before = requests.get(metrics, timeout=30).text
    version = requests.get(f"{served}/v2/models/{MODEL}", timeout=30).json()["versions"][0]
    predicted = f'housing_predicted_value_count{{model="{MODEL}",version="{version}"}}'
    price = json_prices(served, [CANONICAL_ROW])[0]
    json_prices(served, rows(4))
    requests.post(f"{served}{INFER}", json={"inputs": []}, timeout=30)
    after = requests.get(metrics, timeout=30).text
    assert value(after, ok) - value(before, ok) == 2
    assert value(after, bad) - value(before, bad) == 1
    assert value(after, latency) - value(before, latency) == 3
    assert value(after, predicted) - value(before, predicted) == 5  # rows, not requests
    # the canonical price counted in its bucket: le="<first bound above it>"
    bounds = sorted(
        float(line.split('le="')[1].split('"')[0])
        for line in after.splitlines()
        if line.startswith("housing_predicted_value_bucket") and 'le="+Inf"' not in line
    )
    first = next(b for b in bounds if price <= b)
    bucket = f'housing_predicted_value_bucket{{le="{first}",model="{MODEL}",version="{version}"}}'
    assert value(after, bucket) - value(before, bucket) >= 1


def test_infer_checks_grpc_like_helm_test_does(serving: Serving) -> None:
    """`housing-mlops infer --grpc` (the chart's helm test): REST and gRPC give the same price and version;
    a wrong gRPC address fails in one line naming it."""
    argv = [sys.executable, "-m", "housing_mlops.cli", "infer", "--url", serving.url, "--wait-timeout", "30"]
    run = subprocess.run(
        [*argv, "--grpc", f"127.0.0.1:{serving.grpc_port}"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"gRPC 127.0.0.1:{serving.grpc_port}: the same price from the same version" in run.stdout
    run = subprocess.run(
        [*argv, "--grpc", "127.0.0.1:9", "--timeout", "3"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    assert (
        run.stderr.strip().splitlines()[-1].startswith("error: gRPC 127.0.0.1:9: StatusCode.UNAVAILABLE")
    ), run.stderr
