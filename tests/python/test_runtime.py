"""housing_mlops.runtime.HousingRuntime in process (no server): same answers as MLServer's MLflow runtime, bad
requests refused with 400 and a message, and models without the fast path served the stock way.

The HTTP side (status codes and JSON bodies through MLServer) is test_bad_requests.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import request_changed, request_without
from housing_mlops.features import HousingModel
from housing_mlops.runtime import HousingRuntime
from housing_mlops.schema import CANONICAL_REQUEST, FEATURES, synthetic_dataset, v2_request
from housing_mlops.train import export_kwargs
from mlserver.errors import MLServerError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest
from mlserver_mlflow import MLflowRuntime


class PlainModel(HousingModel):
    """The same model without the column-mapping fast path (like models trained before it existed)."""

    accepts_column_mapping = False


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def frame():
    data = synthetic_dataset(3000, seed=3)
    return data.drop(columns=["median_house_value"]), data["median_house_value"]


def _saved(cls: type[HousingModel], frame, where: Path) -> Path:
    x, y = frame
    model = cls(max_iter=30).fit(x, y)
    mlflow.sklearn.save_model(model, where, **export_kwargs(model, x))
    return where


def _runtime(cls: type, model_dir: Path, loop: asyncio.AbstractEventLoop):
    settings = ModelSettings(
        name="housing-model", implementation=cls, parameters=ModelParameters(uri=str(model_dir))
    )
    runtime = cls(settings)
    loop.run_until_complete(runtime.load())
    return runtime


@pytest.fixture(scope="module")
def fast_dir(frame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(HousingModel, frame, tmp_path_factory.mktemp("fast") / "model")


@pytest.fixture(scope="module")
def ours(fast_dir: Path, loop) -> HousingRuntime:
    return _runtime(HousingRuntime, fast_dir, loop)


@pytest.fixture(scope="module")
def stock(fast_dir: Path, loop) -> MLflowRuntime:
    return _runtime(MLflowRuntime, fast_dir, loop)


def _request(rows: list[dict]) -> InferenceRequest:
    return InferenceRequest.model_validate(v2_request(rows))


def _rows(frame, n: int) -> list[dict]:
    x = frame[0].head(n).copy()
    x.loc[x.index[0], "total_bedrooms"] = np.nan  # a missing value, as the real data has
    x.loc[x.index[-1], "ocean_proximity"] = None  # a missing category
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in x.to_dict("records")
    ]


def test_fast_path_is_taken_and_answers_like_the_stock_runtime(ours, stock, frame, loop) -> None:
    assert ours._fast is not None
    for request in (InferenceRequest.model_validate(CANONICAL_REQUEST), _request(_rows(frame, 100))):
        mine = loop.run_until_complete(ours.predict(request)).model_dump()
        theirs = loop.run_until_complete(stock.predict(request)).model_dump()
        ours_out, stock_out = mine["outputs"][0], theirs["outputs"][0]
        # ours names the output as the metadata announces it (the stock codec says "output-1")
        assert ours_out["name"] == ours.outputs[0].name == "output-0"
        assert {k: v for k, v in ours_out.items() if k not in ("data", "name")} == {
            k: v for k, v in stock_out.items() if k not in ("data", "name")
        }
        np.testing.assert_allclose(ours_out["data"], stock_out["data"], rtol=1e-12)
        assert mine["model_name"] == theirs["model_name"]


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
def test_bad_requests_are_400_naming_the_problem(ours, loop, case: str) -> None:
    body, mentions = BAD[case]
    with pytest.raises(MLServerError) as caught:
        loop.run_until_complete(ours.predict(InferenceRequest.model_validate(body)))
    assert caught.value.status_code == 400
    assert mentions in str(caught.value)
    # and the runtime still answers
    good = loop.run_until_complete(ours.predict(InferenceRequest.model_validate(CANONICAL_REQUEST)))
    assert good.outputs[0].data.root[0] > 0


def test_nested_column_and_missing_values_are_accepted(ours, loop) -> None:
    canonical = loop.run_until_complete(ours.predict(InferenceRequest.model_validate(CANONICAL_REQUEST)))
    nested = request_changed(
        "median_income", shape=[1, 1], data=[[CANONICAL_REQUEST["inputs"][7]["data"][0]]]
    )
    assert CANONICAL_REQUEST["inputs"][7]["name"] == "median_income"
    answer = loop.run_until_complete(ours.predict(InferenceRequest.model_validate(nested)))
    assert answer.outputs[0].data.root == canonical.outputs[0].data.root
    missing = request_changed("total_bedrooms", data=[None])
    value = loop.run_until_complete(ours.predict(InferenceRequest.model_validate(missing)))
    assert np.isfinite(value.outputs[0].data.root[0])


def test_model_without_fast_path_is_served_the_stock_way_with_400s(frame, tmp_path: Path, loop) -> None:
    runtime = _runtime(HousingRuntime, _saved(PlainModel, frame, tmp_path / "model"), loop)
    assert runtime._fast is None
    answer = loop.run_until_complete(runtime.predict(InferenceRequest.model_validate(CANONICAL_REQUEST)))
    assert answer.outputs[0].data.root[0] > 0
    for body, mentions in (
        (BAD["missing input"][0], "median_income"),
        (BAD["text in FP64"][0], "lots"),
        (BAD["unknown category"][0], "'ON THE MOON', not a category"),
    ):
        with pytest.raises(MLServerError) as caught:
            loop.run_until_complete(runtime.predict(InferenceRequest.model_validate(body)))
        assert caught.value.status_code == 400
        assert mentions in str(caught.value)
