"""The model server against hostile requests (issue 22), over REST and gRPC, on real server processes: each limit
answers with its status and a message, and the same client is served normally right after.

Three servers on the fetched @production model: the session's (default settings), `limited` (a 64 KiB body,
100 rows, 900 values) and `strict` (default limits, a 0.5 s timeout; also the fresh process whose memory the gzip
bomb is measured in), and one on a model that fails unexpectedly (broken_model.py). gRPC goes through KServe's
own V2 stubs (kserve.protocol.grpc), not tritonclient, whose protobuf names clash with them in one process.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from conftest import Serving, model_server, request_changed
from housing_mlops.schema import CANONICAL_REQUEST, CANONICAL_ROW, CATEGORICAL_FEATURES, FEATURES
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

MODEL = "housing-model"
INFER = f"/v2/models/{MODEL}/infer"
MiB = 1024 * 1024
BIG_ROWS = 200_000


# -- helpers ------------------------------------------------------------------------------------------------


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The server's resident memory (VmRSS) or its peak (VmHWM), MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def canonical_price(session: requests.Session, url: str) -> float:
    answer = session.post(f"{url}{INFER}", json=CANONICAL_REQUEST, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"][0]["data"][0]


def binary_request(rows: int, **values: float) -> tuple[bytes, dict[str, str]]:
    """``rows`` copies of the canonical row as binary tensors (what tritonclient sends), a value replaced."""
    inputs, tail = [], []
    for name in FEATURES:
        if name in CATEGORICAL_FEATURES:
            raw = CANONICAL_ROW[name].encode()
            chunk, datatype = (struct.pack("<I", len(raw)) + raw) * rows, "BYTES"
        else:
            chunk = np.full(rows, values.get(name, CANONICAL_ROW[name]), dtype="<f8").tobytes()
            datatype = "FP64"
        inputs.append(
            {
                "name": name,
                "shape": [rows],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
        tail.append(chunk)
    head = json.dumps({"inputs": inputs}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    return head + b"".join(tail), headers


def grpc_request(rows: int = 1, raw: bool = False, **values: float) -> pb.ModelInferRequest:
    inputs, raw_contents = [], []
    for name in FEATURES:
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=name, shape=[rows], datatype="BYTES" if name in CATEGORICAL_FEATURES else "FP64"
        )
        if name in CATEGORICAL_FEATURES:
            items = [CANONICAL_ROW[name].encode()] * rows
            if raw:
                raw_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in items))
            else:
                tensor.contents.bytes_contents.extend(items)
        else:
            column = np.full(rows, values.get(name, CANONICAL_ROW[name]), dtype="<f8")
            if raw:
                raw_contents.append(column.tobytes())
            else:
                tensor.contents.fp64_contents.extend(column.tolist())
        inputs.append(tensor)
    return pb.ModelInferRequest(model_name=MODEL, inputs=inputs, raw_input_contents=raw_contents)


class Grpc:
    """One gRPC client (channel + KServe's V2 stub) kept for a whole scenario: the same client, served again."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_send_message_length", 256 * MiB),
                ("grpc.max_receive_message_length", 256 * MiB),
            ],
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def infer(self, request: pb.ModelInferRequest, timeout: float = 120) -> tuple[str, Any]:
        try:
            answer = self.stub.ModelInfer(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()
        return "OK", answer

    def price(self) -> float:
        status, answer = self.infer(grpc_request())
        assert status == "OK", answer
        assert answer.model_version
        return float(np.frombuffer(answer.raw_output_contents[0], dtype="<f8")[0])


@pytest.fixture(scope="module")
def limited(serving: Serving, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("limited") / "server.log"
    with model_server(
        serving.model_dir, log, "--max-body-bytes", "65536", "--max-rows", "100", "--max-elements", "900"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def strict(serving: Serving, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("strict") / "server.log"
    with model_server(serving.model_dir, log, "--timeout", "0.5", "--workers", "2") as server:
        yield server


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzip-compressed (~1 MB), made in 1 MiB steps (the test never holds the GiB either)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    parts = [deflate.compress(zeros) for _ in range(1024)]
    parts.append(deflate.flush())
    return b"".join(parts)


# -- the gzip bomb: first, on a fresh process ------------------------------------------------------------------


def test_gzip_bomb_is_refused_without_inflating_it(strict: Serving, gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 2 * MiB
    session = requests.Session()
    expected = canonical_price(session, strict.url)
    before = rss_mb(strict.pid)
    started = time.perf_counter()
    answer = session.post(
        f"{strict.url}{INFER}",
        data=gzip_bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )
    took = time.perf_counter() - started
    peak = rss_mb(strict.pid, "VmHWM")
    assert answer.status_code == 413, answer.text[:300]
    assert "inflates to more than 33554432 bytes" in answer.json()["error"]
    growth = peak - before
    print(f"gzip bomb ({len(gzip_bomb)} bytes → 1 GiB): 413 in {took:.2f}s, peak RSS growth {growth:.0f} MB")
    assert growth < 100, f"the server's peak RSS grew by {growth:.0f} MB (from {before:.0f} MB)"
    assert canonical_price(session, strict.url) == expected
    # a broken gzip body: 400, not a 500
    answer = session.post(
        f"{strict.url}{INFER}", data=gzip_bomb[:1000], headers={"Content-Encoding": "gzip"}, timeout=60
    )
    assert answer.status_code == 400 and "gzip body is truncated" in answer.json()["error"], answer.text
    answer = session.post(f"{strict.url}{INFER}", data=b"xx", headers={"Content-Encoding": "br"}, timeout=60)
    assert answer.status_code == 415 and "'br' is not supported" in answer.json()["error"], answer.text
    assert canonical_price(session, strict.url) == expected


# -- size limits (the `limited` server) ------------------------------------------------------------------------


def test_body_larger_than_the_limit_is_413(limited: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, limited.url)
    filler = {**CANONICAL_REQUEST["inputs"][0], "name": "ignored", "shape": [20_000], "data": [1.5] * 20_000}
    body = json.dumps({"inputs": [*CANONICAL_REQUEST["inputs"], filler]}).encode()
    assert 65536 < len(body) < 200_000
    answer = session.post(f"{limited.url}{INFER}", data=body, timeout=60)
    assert answer.status_code == 413, answer.text
    assert f"the body has {len(body)} bytes; this server takes at most 65536" in answer.json()["error"]
    assert canonical_price(session, limited.url) == expected
    # the same without a Content-Length (chunked): refused while reading
    answer = session.post(f"{limited.url}{INFER}", data=iter([body[:40_000], body[40_000:]]), timeout=60)
    assert answer.status_code == 413, answer.text
    assert "more than 65536 bytes" in answer.json()["error"]
    assert canonical_price(session, limited.url) == expected
    # gzip: small on the wire, the inflated size counts
    answer = session.post(
        f"{limited.url}{INFER}", data=zlib.compress(body, wbits=31), headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 413 and "inflates to more than 65536 bytes" in answer.json()["error"]
    assert canonical_price(session, limited.url) == expected


def test_rows_and_values_over_the_limits_are_413(limited: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, limited.url)
    body, headers = binary_request(100)  # 900 values: exactly the limits
    answer = session.post(f"{limited.url}{INFER}", data=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    body, headers = binary_request(101)
    answer = session.post(f"{limited.url}{INFER}", data=body, headers=headers, timeout=60)
    assert answer.status_code == 413, answer.text
    assert "input 'longitude': 101 rows; this server takes at most 100 per request" in answer.json()["error"]
    # a shape that declares a billion values in a small body
    answer = session.post(
        f"{limited.url}{INFER}", json=request_changed("median_income", shape=[10**9], data=[1.0]), timeout=60
    )
    assert answer.status_code == 413, answer.text
    assert canonical_price(session, limited.url) == expected


def test_grpc_message_rows_and_values_limits(limited: Serving) -> None:
    client = Grpc(limited.grpc_port)
    expected = client.price()
    status, message = client.infer(grpc_request(5000, raw=True))  # ~330 KB: over the 64 KiB receive limit
    assert status == "RESOURCE_EXHAUSTED", message
    assert client.price() == expected
    status, message = client.infer(grpc_request(101))
    assert status == "INVALID_ARGUMENT", message
    assert "101 rows; this server takes at most 100" in message
    assert client.price() == expected
    request = grpc_request()
    request.inputs[0].shape[:] = [10**9]
    status, message = client.infer(request)
    assert status == "INVALID_ARGUMENT" and "more than 900 values" in message, message
    assert client.price() == expected


# -- timeout (the `strict` server) ---------------------------------------------------------------------------


def test_a_request_over_the_timeout_is_504_and_the_next_one_is_served(strict: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, strict.url)
    body, headers = binary_request(BIG_ROWS)
    answer = session.post(f"{strict.url}{INFER}", data=body, headers=headers, timeout=120)
    assert answer.status_code == 504, answer.text[:300]
    assert "no answer within 0.5s" in answer.json()["error"]
    assert canonical_price(session, strict.url) == expected
    client = Grpc(strict.grpc_port)
    status, message = client.infer(grpc_request(BIG_ROWS, raw=True))
    assert status == "DEADLINE_EXCEEDED", message
    assert "no answer within 0.5s" in message
    assert client.price() == expected


def test_a_body_that_never_arrives_is_408(strict: Serving) -> None:
    """A client that sends headers and then stalls holds no thread and gets 408 after the timeout."""
    session = requests.Session()
    expected = canonical_price(session, strict.url)
    port = int(strict.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode())
        assert canonical_price(session, strict.url) == expected  # meanwhile
        response = http.client.HTTPResponse(slow)
        response.begin()
        assert response.status == 408
        assert "did not arrive within 0.5s" in json.loads(response.read())["error"]
    assert canonical_price(session, strict.url) == expected


# -- the session's server (default settings) -------------------------------------------------------------------


def test_small_requests_are_answered_while_a_large_one_runs(serving: Serving) -> None:
    """200,000 rows in one request: readiness and single-row requests keep being answered before it finishes
    (inference runs on threads, not on the event loop)."""
    session = requests.Session()
    expected = canonical_price(session, serving.url)
    body, headers = binary_request(BIG_ROWS)
    port = int(serving.url.rsplit(":", 1)[1])
    big = socket.create_connection(("127.0.0.1", port))
    head = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    big.sendall(head.encode() + b"\r\n" + body)
    sent = time.perf_counter()
    done: dict[str, float] = {}

    def read_big() -> None:
        response = http.client.HTTPResponse(big)
        response.begin()
        payload = response.read()
        done["big"] = time.perf_counter()
        done["status"] = response.status
        done["rows"] = len(json.loads(payload)["outputs"][0]["data"]) if response.status == 200 else 0

    reader = threading.Thread(target=read_big)
    reader.start()
    small: list[tuple[float, float]] = []  # (finished at, latency)
    while reader.is_alive() and len(small) < 2000:
        started = time.perf_counter()
        assert session.get(f"{serving.url}/v2/health/ready", timeout=30).status_code == 200
        assert canonical_price(session, serving.url) == expected
        small.append((time.perf_counter(), time.perf_counter() - started))
    reader.join(120)
    big.close()
    assert done["status"] == 200 and done["rows"] == BIG_ROWS
    before_big = [latency for finished, latency in small if finished < done["big"]]
    print(
        f"{BIG_ROWS} rows answered in {done['big'] - sent:.2f}s after sending; meanwhile {len(before_big)} "
        f"readiness + single-row rounds, median {np.median(before_big or [0]) * 1000:.1f} ms, slowest "
        f"{max(before_big, default=0) * 1000:.0f} ms"
    )
    assert before_big, "no small request was answered before the large one finished"


def test_nesting_600_deep_is_a_400(serving: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, serving.url)
    deep: Any = [8.3252]
    for _ in range(599):
        deep = [deep]
    answer = session.post(
        f"{serving.url}{INFER}", json=request_changed("median_income", data=deep), timeout=60
    )
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"] == "input 'median_income': data nested deeper than 8 levels of lists"
    assert canonical_price(session, serving.url) == expected


def test_nan_and_infinity_are_400_naming_the_input_in_every_encoding(serving: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, serving.url)
    for value in (float("nan"), float("inf")):
        body, headers = binary_request(1, median_income=value)
        answer = session.post(f"{serving.url}{INFER}", data=body, headers=headers, timeout=60)
        assert answer.status_code == 400, answer.text
        assert "input 'median_income' (FP64): row 0 is" in answer.json()["error"]
        assert canonical_price(session, serving.url) == expected
    # JSON has no NaN: the token is refused by the parser
    answer = session.post(
        f"{serving.url}{INFER}",
        data=json.dumps(request_changed("median_income", data=[float("nan")])),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"], answer.text
    client = Grpc(serving.grpc_port)
    grpc_expected = client.price()
    for raw in (False, True):
        status, message = client.infer(grpc_request(1, raw=raw, median_income=float("nan")))
        assert status == "INVALID_ARGUMENT", message
        assert "input 'median_income' (FP64): row 0 is nan" in message
        assert client.price() == grpc_expected


def test_the_repository_api_is_not_on_the_inference_port(serving: Serving) -> None:
    session = requests.Session()
    expected = canonical_price(session, serving.url)
    for verb in ("unload", "load"):
        answer = session.post(f"{serving.url}/v2/repository/models/{MODEL}/{verb}", timeout=30)
        assert answer.status_code == 404, answer.text
        assert "the model repository API is off on this server" in answer.json()["error"]
    assert session.get(f"{serving.url}/v2/models/{MODEL}/ready", timeout=30).status_code == 200
    assert canonical_price(session, serving.url) == expected
    client = Grpc(serving.grpc_port)
    grpc_expected = client.price()
    for call, request in (
        (client.stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=MODEL)),
        (client.stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=MODEL)),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert client.stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=30).ready
    assert client.price() == grpc_expected


def test_errors_are_json_without_a_traceback(serving: Serving) -> None:
    session = requests.Session()
    for method, path, status in (
        ("GET", "/nothing", 404),
        ("GET", INFER, 405),
        ("POST", "/v2/models/other/infer", 404),
        ("POST", f"/v2/models/{MODEL}/versions/999999/infer", 404),
    ):
        answer = session.request(method, f"{serving.url}{path}", json=CANONICAL_REQUEST, timeout=30)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert "Traceback" not in answer.text and answer.json()["error"]


def test_an_unexpected_error_is_a_json_500_without_details(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model that raises something no check foresaw: REST answers a JSON 500 that says nothing of it (the
    server log has the traceback), gRPC INTERNAL; the same clients are served next."""
    import mlflow
    from broken_model import SECRET, TRIGGER, BrokenModel
    from housing_mlops.schema import synthetic_dataset
    from housing_mlops.train import export_kwargs

    data = synthetic_dataset(2000, seed=5)
    x, y = data.drop(columns=["median_house_value"]), data["median_house_value"]
    model_dir = tmp_path_factory.mktemp("broken") / "model"
    broken = BrokenModel(max_iter=20).fit(x, y)
    mlflow.sklearn.save_model(broken, model_dir, **export_kwargs(broken, x))
    (model_dir / ".model-version").write_text("1\n")  # as fetch-model writes it
    here = Path(__file__).parent
    log = model_dir.parent / "server.log"
    with model_server(
        model_dir, log, env={"PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    ) as server:
        session = requests.Session()
        expected = canonical_price(session, server.url)
        answer = session.post(
            f"{server.url}{INFER}", json=request_changed("median_income", data=[TRIGGER]), timeout=60
        )
        assert answer.status_code == 500, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": "internal server error (the server log has details)"}
        assert canonical_price(session, server.url) == expected
        client = Grpc(server.grpc_port)
        grpc_expected = client.price()
        status, message = client.infer(grpc_request(1, median_income=TRIGGER))
        assert status == "INTERNAL" and SECRET not in message, message
        assert client.price() == grpc_expected
    assert SECRET in log.read_text()  # the log has it
