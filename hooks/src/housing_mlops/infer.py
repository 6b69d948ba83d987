"""`housing-mlops infer` (the helm test request) and `housing-mlops check` (registry health)."""

from __future__ import annotations

import json
import logging
import math

import requests

from . import registry
from .errors import HousingError, ServiceUnavailable
from .schema import CANONICAL_REQUEST


def wait_ready(url: str, model: str, timeout: float, poll: float = 2.0) -> None:
    """Until the V2 model answers ready; ``poll`` caps the delay between probes (the demo, waiting for a server
    it just started on loopback, probes every 0.25 s)."""
    base = url.rstrip("/")

    def probe() -> None:
        response = requests.get(f"{base}/v2/models/{model}/ready", timeout=5)
        response.raise_for_status()

    registry.backoff(
        probe,
        what=f"model {model} at {base}",
        timeout=timeout,
        retry_on=(requests.ConnectionError, requests.Timeout, requests.HTTPError),
        first_delay=min(0.5, poll),
        max_delay=poll,
        log_level=logging.INFO if poll >= 1 else logging.DEBUG,
    )


def infer(url: str, model: str, min_price: float, max_price: float, timeout: float) -> tuple[float, dict]:
    """Send the canonical V2 request; return (price, response) or fail unless the price is sane."""
    endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
    try:
        response = requests.post(endpoint, json=CANONICAL_REQUEST, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceUnavailable(f"POST {endpoint}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise HousingError(f"POST {endpoint}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
        price = float(body["outputs"][0]["data"][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise HousingError(f"POST {endpoint}: not a V2 answer with a price: {response.text[:300]}") from exc
    if not math.isfinite(price) or not min_price <= price <= max_price:
        raise HousingError(f"price {price!r} outside the sane range [{min_price:g}, {max_price:g}]")
    return price, body


def infer_binary(url: str, model: str, timeout: float) -> float:
    """The canonical request in the V2 binary tensor extension, asking for a binary answer (what tritonclient
    sends by default); returns the price."""
    from . import binary

    inputs, tail = [], b""
    for item in CANONICAL_REQUEST["inputs"]:
        raw = binary.encode_tensor(item["datatype"], item["data"])
        inputs.append(
            {
                **{k: item[k] for k in ("name", "shape", "datatype")},
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        tail += raw
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
    try:
        response = requests.post(
            endpoint,
            data=head + tail,
            headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream",
            },
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise ServiceUnavailable(f"POST {endpoint} (binary): {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise HousingError(f"POST {endpoint} (binary): HTTP {response.status_code}: {response.text[:300]}")
    length = response.headers.get(binary.HEADER)
    if length is None:
        raise HousingError(f"POST {endpoint} (binary): the answer is not binary: {response.text[:300]}")
    try:
        doc, rest = binary.split(response.content, length)
        output = doc["outputs"][0]
        prices = binary.decode_tensor(output["name"], output["datatype"], output["shape"], rest)
    except (binary.BinaryError, KeyError, IndexError, TypeError) as exc:
        raise HousingError(f"POST {endpoint} (binary): not a V2 binary answer with a price: {exc}") from exc
    return float(prices[0])


def infer_grpc(address: str, model: str, timeout: float) -> tuple[float, str | None]:
    """The canonical request over V2 gRPC (tritonclient, the client most KServe users have); (price, version).

    tritonclient.grpc registers the same protobuf names (package `inference`) as kserve's V2 protobufs: never call
    this in a process that imported housing_mlops.server (the CLI does not).
    """
    import numpy as np
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    inputs = []
    for item in CANONICAL_REQUEST["inputs"]:
        tensor = tg.InferInput(item["name"], item["shape"], item["datatype"])
        if item["datatype"] == "BYTES":
            tensor.set_data_from_numpy(np.array([str(v).encode() for v in item["data"]], dtype=np.object_))
        else:
            tensor.set_data_from_numpy(np.asarray(item["data"], dtype=np.float64))
        inputs.append(tensor)
    try:
        client = tg.InferenceServerClient(address)
        answer = client.infer(model, inputs, client_timeout=timeout)
        output = client.get_model_metadata(model, as_json=True, client_timeout=timeout)["outputs"][0]["name"]
    except InferenceServerException as exc:
        raise ServiceUnavailable(f"gRPC {address}: {exc.status()}: {exc.message()}") from exc
    prices = answer.as_numpy(output)
    if prices is None or prices.size != 1:
        raise HousingError(
            f"gRPC {address}: no single price in output {output!r}: {answer.get_response(as_json=True)}"
        )
    return float(prices.ravel()[0]), answer.get_response(as_json=True).get("model_version")


def check(tracking_uri: str, name: str, alias: str, timeout: float) -> str:
    """MLflow answers and ``alias`` exists; returns a one-line summary."""
    registry.wait_for_mlflow(tracking_uri, timeout)
    found = registry.get_version(name, alias=alias)
    return f"MLflow {tracking_uri} healthy; {name}@{alias} = version {found.version} (run {found.run_id})"


def pretty(body: dict) -> str:
    return json.dumps(body, indent=1)
