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


def check(tracking_uri: str, name: str, alias: str, timeout: float) -> str:
    """MLflow answers and ``alias`` exists; returns a one-line summary."""
    registry.wait_for_mlflow(tracking_uri, timeout)
    found = registry.get_version(name, alias=alias)
    return f"MLflow {tracking_uri} healthy; {name}@{alias} = version {found.version} (run {found.run_id})"


def pretty(body: dict) -> str:
    return json.dumps(body, indent=1)
