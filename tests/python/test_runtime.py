"""housing_mlops.runtime.HousingRuntime in process (no server): the same prices as MLflow's pyfunc, bad requests
refused with a RequestError naming the input (400, or 413 past a limit), and models without the fast path served
through pyfunc.

The HTTP and gRPC side (status codes and JSON bodies through the server) is test_bad_requests.py's and
test_limits.py's.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import request_changed, request_without
from housing_mlops.features import HousingModel
from housing_mlops.limits import Limits
from housing_mlops.runtime import HousingRuntime, RequestError, Tensor, flatten
from housing_mlops.schema import CANONICAL_REQUEST, FEATURES, synthetic_dataset, v2_request
from housing_mlops.train import export_kwargs


def tensors(body: dict) -> list[Tensor]:
    return [Tensor(i["name"], i["datatype"], i["shape"], i["data"]) for i in body["inputs"]]


class PlainModel(HousingModel):
    """The same model without the column-mapping fast path (like models trained before it existed)."""

    accepts_column_mapping = False


@pytest.fixture(scope="module")
def frame():
    data = synthetic_dataset(3000, seed=3)
    return data.drop(columns=["median_house_value"]), data["median_house_value"]


def _saved(cls: type[HousingModel], frame, where: Path) -> Path:
    x, y = frame
    model = cls(max_iter=30).fit(x, y)
    mlflow.sklearn.save_model(model, where, **export_kwargs(model, x))
    return where


def _runtime(model_dir: Path, limits: Limits | None = None) -> HousingRuntime:
    runtime = HousingRuntime("housing-model", model_dir, limits)
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def fast_dir(frame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(HousingModel, frame, tmp_path_factory.mktemp("fast") / "model")


@pytest.fixture(scope="module")
def ours(fast_dir: Path) -> HousingRuntime:
    return _runtime(fast_dir)


@pytest.fixture(scope="module")
def pyfunc(fast_dir: Path):
    return mlflow.pyfunc.load_model(str(fast_dir))


def _rows(frame, n: int) -> list[dict]:
    x = frame[0].head(n).copy()
    x.loc[x.index[0], "total_bedrooms"] = np.nan  # a missing value, as the real data has
    x.loc[x.index[-1], "ocean_proximity"] = None  # a missing category
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in x.to_dict("records")
    ]


def test_fast_path_is_taken_and_answers_like_pyfunc(ours, pyfunc, frame) -> None:
    assert ours._fast is not None
    assert ours.get_output_types() == [{"name": "output-0", "datatype": "FP64", "shape": [-1]}]
    assert [i["name"] for i in ours.get_input_types()] == FEATURES
    for body, rows in ((CANONICAL_REQUEST, None), (v2_request(_rows(frame, 100)), _rows(frame, 100))):
        mine = ours.predict_tensors(tensors(body))
        expected = (
            frame_of(rows)
            if rows is not None
            else frame_of([dict(zip(FEATURES, [i["data"][0] for i in body["inputs"]], strict=True))])
        )
        theirs = np.asarray(pyfunc.predict(expected), dtype=np.float64).reshape(-1)
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)


def frame_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=FEATURES).astype({name: "float64" for name in FEATURES[:-1]})


BAD = {
    "missing input": (
        request_without("median_income"),
        "missing input(s) median_income",
    ),
    "no inputs": ({"inputs": []}, "missing input(s) " + ", ".join(FEATURES[:2])),
    "BYTES for a number": (
        request_changed("median_income", datatype="BYTES", data=["lots"]),
        "takes numbers",
    ),
    "text in FP64": (request_changed("median_income", data=["lots"]), "holds text"),
    "BOOL for a number": (
        request_changed("median_income", datatype="BOOL", data=[True]),
        "got datatype BOOL",
    ),
    "shape > data": (request_changed("median_income", shape=[2], data=[1.0]), "says 2 value(s), data has 1"),
    "data > shape": (request_changed("median_income", shape=[1], data=[1.0, 2.0]), "data has 2"),
    "not a column": (request_changed("median_income", shape=[1, 2], data=[[1.0, 2.0]]), "not a column"),
    "negative shape": (request_changed("median_income", shape=[-1], data=[1.0]), "not a column"),
    "unequal lengths": (request_changed("latitude", shape=[2], data=[37.8, 37.9]), "different lengths"),
    "zero rows": (
        {"inputs": [{**i, "shape": [0], "data": []} for i in CANONICAL_REQUEST["inputs"]]},
        "no rows",
    ),
    "number as category": (request_changed("ocean_proximity", data=[3]), "not a string"),
    "FP64 category": (request_changed("ocean_proximity", datatype="FP64", data=[1.0]), "takes strings"),
    "unknown category": (
        request_changed("ocean_proximity", data=["ON THE MOON"]),
        "row 0 holds 'ON THE MOON', not a category the model was trained on (allowed: <1H OCEAN, INLAND, ISLAND",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_400_naming_the_problem(ours, case: str) -> None:
    body, mentions = BAD[case]
    with pytest.raises(RequestError) as caught:
        ours.predict_tensors(tensors(body))
    assert caught.value.status == 400
    assert mentions in str(caught.value)
    # and the runtime still answers
    assert ours.predict_tensors(tensors(CANONICAL_REQUEST))[0] > 0


def test_nested_column_and_missing_values_are_accepted(ours) -> None:
    canonical = ours.predict_tensors(tensors(CANONICAL_REQUEST))
    assert CANONICAL_REQUEST["inputs"][7]["name"] == "median_income"
    nested = request_changed(
        "median_income", shape=[1, 1], data=[[CANONICAL_REQUEST["inputs"][7]["data"][0]]]
    )
    assert ours.predict_tensors(tensors(nested)).tolist() == canonical.tolist()
    missing = request_changed("total_bedrooms", data=[None])
    assert np.isfinite(ours.predict_tensors(tensors(missing))[0])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_in_every_encoding(ours, value: float) -> None:
    """A NaN sent as a number (binary tensors, gRPC: NumPy arrays) is never taken for a missing value."""
    body = tensors(CANONICAL_REQUEST)
    at = FEATURES.index("median_income")
    body[at] = Tensor("median_income", "FP64", [1], np.array([value]))
    with pytest.raises(RequestError) as caught:
        ours.predict_tensors(body)
    assert caught.value.status == 400
    assert "input 'median_income' (FP64): row 0 is" in str(caught.value) and "must be finite" in str(
        caught.value
    )
    body[at] = Tensor("median_income", "FP32", [1], np.array([value], dtype=np.float32))
    with pytest.raises(RequestError, match="median_income"):
        ours.predict_tensors(body)


def test_limits_are_413_before_any_data_is_converted(fast_dir: Path) -> None:
    runtime = _runtime(fast_dir, Limits(max_rows=10, max_elements=50, max_depth=3))
    ten = v2_request(
        [dict(zip(FEATURES, [i["data"][0] for i in CANONICAL_REQUEST["inputs"]], strict=True))] * 5
    )
    assert len(runtime.predict_tensors(tensors(ten))) == 5  # 45 values: within both limits
    # a declared shape is enough: the data is never looked at
    huge = request_changed("median_income", shape=[10**12], data=[])
    with pytest.raises(
        RequestError, match=r"10{12} rows; this server takes at most 10 per request"
    ) as caught:
        runtime.predict_tensors(tensors(huge))
    assert caught.value.status == 413
    six = v2_request(
        [dict(zip(FEATURES, [i["data"][0] for i in CANONICAL_REQUEST["inputs"]], strict=True))] * 6
    )
    with pytest.raises(RequestError, match="more than 50 values") as caught:
        runtime.predict_tensors(tensors(six))
    assert caught.value.status == 413
    deep = request_changed("median_income", shape=[1], data=[[[[8.3]]]])
    with pytest.raises(RequestError, match="nested deeper than 3 levels") as caught:
        runtime.predict_tensors(tensors(deep))
    assert caught.value.status == 400


def test_flatten_is_iterative_and_bounded() -> None:
    limits = Limits(max_depth=1000, max_elements=10)
    deep: list = [1.0]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(RequestError, match="nested deeper than 1000 levels"):
        flatten("x", deep, limits)  # no RecursionError
    assert flatten("x", [[1, [2, 3]], [], [[4]]], limits) == [1, 2, 3, 4]
    with pytest.raises(RequestError, match="more than 10 values"):
        flatten("x", [[1] * 6, [2] * 6], limits)


def test_model_without_fast_path_is_served_through_pyfunc_with_400s(frame, tmp_path: Path) -> None:
    runtime = _runtime(_saved(PlainModel, frame, tmp_path / "model"))
    assert runtime._fast is None
    assert runtime.predict_tensors(tensors(CANONICAL_REQUEST))[0] > 0
    for body, mentions in (
        (BAD["missing input"][0], "median_income"),
        (BAD["text in FP64"][0], "holds text"),
        (BAD["unknown category"][0], "'ON THE MOON', not a category"),
    ):
        with pytest.raises(RequestError) as caught:
            runtime.predict_tensors(tensors(body))
        assert caught.value.status == 400
        assert mentions in str(caught.value)


def test_kserve_model_interface_gives_the_same_price(ours) -> None:
    """What `python -m housing_mlops.server --stock` (kserve.ModelServer) calls: predict(InferRequest)."""
    from kserve import InferInput, InferRequest
    from kserve.errors import InvalidInput

    inputs = [
        InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in CANONICAL_REQUEST["inputs"]
    ]
    answer = ours.predict(InferRequest("housing-model", inputs, request_id="r1"))
    assert answer.outputs[0].name == "output-0"
    assert answer.outputs[0].data == ours.predict_tensors(tensors(CANONICAL_REQUEST)).tolist()
    with pytest.raises(InvalidInput, match="missing input"):
        ours.predict(InferRequest("housing-model", inputs[:-1], request_id="r2"))


def test_a_large_request_is_predicted_in_chunks_with_the_same_prices(ours, frame) -> None:
    """More than CHUNK_ROWS rows are predicted chunk by chunk (each chunk large enough for the same code path):
    the prices equal one predict of all the rows; past its deadline the request is abandoned (504)."""
    import time

    from housing_mlops.runtime import CHUNK_ROWS

    x = frame[0].dropna().sample(2 * CHUNK_ROWS + 5, replace=True, random_state=4).reset_index(drop=True)
    body = tensors(v2_request(x.to_dict(orient="records")))
    whole = np.asarray(ours._fast.predict(ours.to_columns(body)), dtype=np.float64)
    np.testing.assert_array_equal(ours.predict_tensors(body), whole)
    with pytest.raises(RequestError, match="abandoned") as caught:
        ours.predict_tensors(body, deadline=time.monotonic() - 1)
    assert caught.value.status == 504
