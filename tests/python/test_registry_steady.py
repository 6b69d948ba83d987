"""MLflow answering as it does while its server starts (a 404 with an empty body, measured on our cluster after
its pod was replaced) is waited out; a real error is not."""

from __future__ import annotations

import pytest
from housing_mlops import registry
from housing_mlops.errors import ServiceUnavailable
from mlflow.exceptions import MlflowException

STARTING = "API request to endpoint /api/2.0/mlflow/registered-models/get failed with error code 404 != 200. Response body: ''"


def flaky(failures: int, error: Exception):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return "answer"

    return call, calls


def test_a_starting_mlflow_is_waited_out(monkeypatch) -> None:
    monkeypatch.setattr(registry, "STARTING_WAIT_S", 10.0)
    call, calls = flaky(2, MlflowException(STARTING))
    assert registry.steady(call, "MLflow: model 'm'") == "answer"
    assert calls["n"] == 3


def test_a_real_error_is_not_retried() -> None:
    call, calls = flaky(1, MlflowException("RESOURCE_DOES_NOT_EXIST: Registered Model with name=m not found"))
    with pytest.raises(MlflowException, match="not found"):
        registry.steady(call, "MLflow: model 'm'")
    assert calls["n"] == 1


def test_a_server_that_never_finishes_starting_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(registry, "STARTING_WAIT_S", 1.0)
    call, _ = flaky(1000, MlflowException(STARTING))
    with pytest.raises(ServiceUnavailable, match="MLflow: model 'm': gave up after"):
        registry.steady(call, "MLflow: model 'm'")


def test_tags_of_a_model_not_registered_yet_are_empty(stack) -> None:
    assert registry.model_tags("never-registered-model") == {}
