"""Bad V2 requests against the served model (housing_mlops.server started as KServe starts it): each gets
an error status and a message, never a crash or a stack trace, and the server answers the canonical request
exactly as before afterwards (50 bad requests in a row, then the good one).

Each case pins today's status, so that a change is a decision (docs/security.md, "Bad input"):
- refused by the server's request parsing: 400 (not JSON, not a V2 request), e.g. NaN/Infinity tokens (JSON has
  neither; in binary tensors and gRPC they are refused by the runtime: test_limits.py);
- refused by the model's signature inside the runtime (housing_mlops.runtime): 400 with a V2 JSON error naming
  the input and the problem (missing input, wrong datatype, shape and data that disagree, unequal lengths);
- refused by the model: a category it was not trained on (400 naming the value and the allowed set: the
  booster would price it like a missing value, silently);
- accepted on purpose: null (JSON's "missing"), for a number or the category, is what the pipeline imputes as
  missing values (the real data has missing total_bedrooms); an extra input is ignored, as MLflow's schema
  enforcement ignores extra columns.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from conftest import request_changed, request_without
from housing_mlops.schema import CANONICAL_REQUEST

INFER = "/v2/models/housing-model/infer"


def raw(body: dict) -> bytes:
    """JSON as a careless client sends it: NaN/Infinity tokens allowed (Python's default)."""
    return json.dumps(body).encode()


def huge_body() -> bytes:
    """~16 MB: one input declaring shape [1] but carrying two million numbers."""
    return raw(request_changed("median_income", shape=[1], data=[8.3252] * 2_000_000))


REFUSED, BAD_REQUEST = "refused (4xx)", "signature error (400, JSON)"

# name -> (request body, expected outcome, text the message must contain; "" when any message will do)
ERRORS: dict[str, tuple[bytes, str, str]] = {
    "missing input": (raw(request_without("median_income")), BAD_REQUEST, "missing input(s) median_income"),
    "missing category input": (raw(request_without("ocean_proximity")), BAD_REQUEST, "ocean_proximity"),
    "number sent as BYTES": (
        raw(request_changed("median_income", datatype="BYTES", data=["lots"])),
        BAD_REQUEST,
        "'median_income' takes numbers",
    ),
    "text in an FP64 input": (
        raw(request_changed("median_income", data=["lots"])),
        BAD_REQUEST,
        "holds text",
    ),
    "unknown datatype": (raw(request_changed("median_income", datatype="FP128")), REFUSED, "FP128"),
    "shape larger than data": (
        raw(request_changed("median_income", shape=[2], data=[1.0])),
        BAD_REQUEST,
        "shape [2] says 2 value(s), data has 1",
    ),
    "data larger than shape": (
        raw(request_changed("median_income", shape=[1], data=[1.0, 2.0])),
        BAD_REQUEST,
        "data has 2",
    ),
    "NaN number": (raw(request_changed("total_bedrooms", data=[math.nan])), REFUSED, "JSON"),
    "infinite number": (raw(request_changed("total_rooms", data=[math.inf])), REFUSED, "JSON"),
    "empty inputs": (raw({"inputs": []}), BAD_REQUEST, "missing input(s) longitude"),
    "inputs not a list": (raw({"inputs": {"longitude": 1}}), REFUSED, "inputs"),
    "not a V2 body": (raw({"instances": [[1, 2, 3]]}), REFUSED, "inputs"),
    "JSON array body": (b"[1, 2, 3]", REFUSED, ""),
    "empty body": (b"", REFUSED, ""),
    "not JSON": (b"{not json", REFUSED, "JSON"),
    "inputs of different lengths": (
        raw(request_changed("latitude", shape=[2], data=[37.88, 37.86])),
        BAD_REQUEST,
        "inputs have different lengths",
    ),
    "not a column": (
        raw(request_changed("median_income", shape=[1, 2], data=[[8.3, 1.0]])),
        BAD_REQUEST,
        "not a column",
    ),
    "number in a BYTES input": (
        raw(request_changed("ocean_proximity", data=[3])),
        BAD_REQUEST,
        "not a string",
    ),
    "category sent as FP64": (
        raw(request_changed("ocean_proximity", datatype="FP64", data=[1.0])),
        BAD_REQUEST,
        "takes strings",
    ),
    "huge body": (huge_body(), BAD_REQUEST, "data has 2000000"),
    "unknown category": (
        raw(request_changed("ocean_proximity", data=["ON THE MOON"])),
        BAD_REQUEST,
        "'ON THE MOON', not a category the model was trained on (allowed: <1H OCEAN, INLAND, ISLAND, NEAR BAY, "
        "NEAR OCEAN; null for a missing value)",
    ),
}

# accepted on purpose (see the module docstring)
ACCEPTED: dict[str, bytes] = {
    "null number (missing value)": raw(request_changed("total_bedrooms", data=[None])),
    "null category (missing value)": raw(request_changed("ocean_proximity", data=[None])),
    "extra input (ignored)": raw(
        {"inputs": [*CANONICAL_REQUEST["inputs"], {**CANONICAL_REQUEST["inputs"][0], "name": "garage"}]}
    ),
    "a column of shape [1, 1]": raw(request_changed("median_income", shape=[1, 1], data=[[8.3252]])),
}


def post(url: str, body: bytes) -> requests.Response:
    return requests.post(f"{url}{INFER}", data=body, headers={"Content-Type": "application/json"}, timeout=60)


def price(response: requests.Response) -> float:
    return response.json()["outputs"][0]["data"][0]


@pytest.fixture(scope="module")
def baseline(served: str) -> float:
    response = post(served, raw(CANONICAL_REQUEST))
    assert response.status_code == 200, response.text
    return price(response)


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_request_gets_a_clear_error(served: str, baseline: float, case: str) -> None:
    body, outcome, mentions = ERRORS[case]
    response = post(served, body)
    status = response.status_code
    assert (400 <= status < 500) if outcome == REFUSED else status == 400, (
        f"{case}: {status} {response.text[:300]}"
    )
    if outcome == BAD_REQUEST:  # a V2 JSON error
        assert mentions in response.json()["error"], f"{case}: {response.text[:300]}"
    detail = response.text
    assert len(detail) > 10 and "Traceback" not in detail, f"{case}: {detail[:300]}"
    assert mentions in detail, f"{case}: {mentions!r} not in {detail[:300]}"
    assert post(served, raw(CANONICAL_REQUEST)).status_code == 200


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_missing_values_and_extra_inputs_are_accepted(served: str, baseline: float, case: str) -> None:
    response = post(served, ACCEPTED[case])
    assert response.status_code == 200, response.text[:300]
    value = price(response)
    assert math.isfinite(value) and 0 < value < 2_000_000
    if case == "a column of shape [1, 1]":  # the canonical request, only shaped differently
        assert value == baseline


def test_fifty_bad_requests_then_the_same_good_answer(served: str, baseline: float) -> None:
    cases = [body for body, _, _ in ERRORS.values() if len(body) < 1_000_000]
    statuses = [post(served, cases[i % len(cases)]).status_code for i in range(50)]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert requests.get(f"{served}/v2/models/housing-model/ready", timeout=10).status_code == 200
    good = post(served, raw(CANONICAL_REQUEST))
    assert good.status_code == 200 and price(good) == baseline
    total = len(ERRORS) + len(ACCEPTED)
    print(f"bad-request cases: {total}; 50 bad in a row, then the same price")
