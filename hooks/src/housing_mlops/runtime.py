"""`HousingRuntime`: an MLflow pyfunc model behind the V2 contract, as a `kserve.Model` (housing_mlops.server).

The contract clients rely on: inputs named after the signature's columns, one output tensor of prices named as
the metadata announces (``output-0``, FP64, shape [-1]), and ``model_version`` in every answer (the registered
version fetch-model wrote beside the model in ``.model-version``).

Every request is checked here, whatever its encoding (JSON, binary tensors, gRPC), before the model sees it;
a bad one raises `RequestError` naming the input and the problem (400 over REST, INVALID_ARGUMENT over gRPC):
every required column present, numbers where the signature says double, strings where it says string, one
column per input and all of the same length, NaN/Infinity refused (a missing value is JSON ``null``: the
pipeline imputes it like the training data's), and the request limits (`Limits`: rows, values, nesting depth;
status 413). ``data`` nested in lists is flattened without recursion, to a bounded depth.

Models that take their columns as a mapping (``accepts_column_mapping``, features.py) are fed NumPy columns
straight from the request: no pandas DataFrame, no pyfunc schema enforcement (bench/: ~3 ms of a ~4 ms
single-row request). Other models get a DataFrame through pyfunc, with their errors mapped to 400 as well.

Only kserve, mlflow and numpy are imported: the serving image installs housing_mlops without its dependencies.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from mlflow.exceptions import MlflowException

from .limits import Limits

NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
DATATYPES = NUMERIC_DATATYPES | {"BOOL", "BYTES"}
# MLflow column types fed as float64 / as Python strings, and how the metadata announces them.
NUMERIC_TYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32"}
STRING_TYPES = {"string": "BYTES"}
VERSION_FILE = ".model-version"  # written by fetch-model (fetch.VERSION_FILE)
CHUNK_ROWS = 16_384  # rows predicted at once in a large request (bench/: ~0.2 s on one core)


class RequestError(ValueError):
    """The client's request is wrong (status 400) or too large for this server (413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    """One V2 input as decoded from any encoding: ``data`` is a list (JSON, maybe nested), a flat NumPy array
    (binary tensors, gRPC) or a list of bytes (BYTES in binary or gRPC)."""

    name: Any
    datatype: Any
    shape: Any
    data: Any


class HousingRuntime(Model):
    """MLflow models over V2 with client errors as `RequestError` and a pandas-free path for our models."""

    def __init__(self, name: str, model_dir: Path | str, limits: Limits | None = None) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.limits = limits or Limits()
        self.version: str | None = None
        self.output_name = "output-0"
        self.columns: list[tuple[str, str, bool]] = []  # (name, MLflow type, required)
        self._model: Any = None
        self._fast: Any = None

    def load(self) -> bool:
        # No pip-requirements check (0.3 s of every start, measured): the serving image is built from the lock
        # that trained the model (images/common/check_lock.py).
        self._model = mlflow.pyfunc.load_model(str(self.model_dir), suppress_warnings=True)
        marker = self.model_dir / VERSION_FILE
        self.version = marker.read_text().strip() if marker.is_file() else None
        outputs = self._model.metadata.get_output_schema()
        if outputs is not None and outputs.has_input_names() and len(outputs.input_names()) == 1:
            self.output_name = str(outputs.input_names()[0])
        schema = self._model.metadata.get_input_schema()
        if schema is not None and schema.has_input_names() and not schema.is_tensor_spec():
            self.columns = [
                (c.name, str(c.type.name), bool(getattr(c, "required", True))) for c in schema.inputs
            ]
        if self.columns and all(kind in NUMERIC_TYPES or kind in STRING_TYPES for _, kind, _ in self.columns):
            try:
                raw = self._model.get_raw_model()
            except (NotImplementedError, MlflowException):
                raw = None
            if getattr(raw, "accepts_column_mapping", False):
                self._fast = raw
        self.ready = True
        return True

    # -- metadata (V2: GET /v2/models/<name>; kserve's DataPlane reads these too) --

    def get_input_types(self) -> list[dict]:
        return [
            {
                "name": name,
                "datatype": NUMERIC_TYPES.get(kind) or STRING_TYPES.get(kind, "BYTES"),
                "shape": [-1],
            }
            for name, kind, _ in self.columns
        ]

    def get_output_types(self) -> list[dict]:
        return [{"name": self.output_name, "datatype": "FP64", "shape": [-1]}]

    # -- inference --

    def predict_tensors(self, tensors: list[Tensor], deadline: float | None = None) -> np.ndarray:
        """The prices for a request's inputs, checked first (RequestError if not acceptable).

        A large request is predicted in chunks of about `CHUNK_ROWS` rows (every row is predicted alone, so
        the prices are the same), and given a ``deadline`` (time.monotonic()) it is abandoned between two chunks
        once that has passed: a request the server stopped waiting for frees its thread within one chunk."""
        _check_deadline(deadline)
        columns = self.to_columns(tensors)
        rows = len(next(iter(columns.values())))
        parts = max(1, rows // CHUNK_ROWS)  # every chunk has at least CHUNK_ROWS rows
        if parts == 1:
            return self._predict(columns)
        out = np.empty(rows, dtype=np.float64)
        edges = [rows * i // parts for i in range(parts + 1)]
        for start, stop in itertools.pairwise(edges):
            _check_deadline(deadline)
            out[start:stop] = self._predict({k: v[start:stop] for k, v in columns.items()})
        return out

    def _predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        try:
            if self._fast is not None:
                prediction = self._fast.predict(columns)
            else:
                import pandas as pd

                prediction = self._model.predict(pd.DataFrame(columns))
        except MlflowException as exc:
            raise RequestError(f"request does not match the model's signature: {exc.message}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(f"the model could not predict from this request: {exc}") from None
        return np.asarray(prediction, dtype=np.float64).reshape(-1)

    def to_columns(self, tensors: list[Tensor]) -> dict[str, np.ndarray]:
        """The request's inputs as one NumPy column per signature column, checked (RequestError if not)."""
        self._check_sizes(tensors)
        given = {item.name: item for item in tensors}
        wanted = self.columns or [
            (str(t.name), "string" if t.datatype == "BYTES" else "double", True) for t in tensors
        ]
        missing = [name for name, _, required in wanted if required and name not in given]
        if missing:
            raise RequestError(
                f"missing input(s) {', '.join(missing)}; the model takes "
                + ", ".join(n for n, _, _ in wanted)
            )
        out: dict[str, np.ndarray] = {}
        for name, kind, _required in wanted:
            item = given.get(name)
            if item is not None:
                out[name] = self._column(item, numeric=kind in NUMERIC_TYPES)
        lengths = {name: len(column) for name, column in out.items()}
        if len(set(lengths.values())) > 1:
            raise RequestError(
                "inputs have different lengths: " + ", ".join(f"{n} {k}" for n, k in lengths.items())
            )
        rows = next(iter(lengths.values()))
        if rows == 0:
            raise RequestError("the request has no rows")
        for name, kind, _required in wanted:  # optional columns left out: missing values
            if name not in out:
                out[name] = (
                    np.full(rows, np.nan) if kind in NUMERIC_TYPES else np.full(rows, None, dtype=object)
                )
        return out

    def _check_sizes(self, tensors: list[Tensor]) -> None:
        """Declared shapes against the limits, before any data is looked at."""
        limits, total = self.limits, 0
        for item in tensors:
            shape = item.shape
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape
            ):
                raise RequestError(f"input {item.name!r}: shape {shape!r} is not a list of sizes")
            if item.datatype not in DATATYPES:
                raise RequestError(
                    f"input {item.name!r}: datatype {item.datatype!r} is not a V2 datatype "
                    f"(one of {', '.join(sorted(DATATYPES))})"
                )
            if shape and shape[0] > limits.max_rows:
                raise RequestError(
                    f"input {item.name!r}: {shape[0]} rows; this server takes at most {limits.max_rows} per "
                    "request (split the batch)",
                    413,
                )
            total += math.prod(d for d in shape if d > 0)
            if total > limits.max_elements:
                raise RequestError(
                    f"input {item.name!r}: the request declares more than {limits.max_elements} values; this "
                    "server takes at most that many per request (split the batch)",
                    413,
                )

    def _column(self, item: Tensor, numeric: bool) -> np.ndarray:
        """One input → a 1-D column: shape [n] or [n, 1], data of exactly that many values of the right kind."""
        name, datatype, shape = item.name, item.datatype, item.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or any(d < 0 for d in shape):
            raise RequestError(f"input {name!r}: shape {shape} is not a column (use [rows] or [rows, 1])")
        raw = item.data
        values = raw.reshape(-1) if isinstance(raw, np.ndarray) else flatten(name, raw, self.limits)
        expected = math.prod(shape)
        if len(values) != expected:
            raise RequestError(
                f"input {name!r}: shape {shape} says {expected} value(s), data has {len(values)}"
            )
        if numeric:
            return _numbers(name, datatype, values)
        if datatype != "BYTES":
            raise RequestError(f"input {name!r} takes strings (datatype BYTES), got datatype {datatype}")
        column = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            if value is not None and not isinstance(value, str):
                raise RequestError(f"input {name!r} (BYTES) holds {value!r}, not a string")
            column[i] = value
        return column

    # -- kserve's own model server path (`python -m housing_mlops.server --stock`, bench/'s "stock") --

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        from kserve import InferOutput, InferResponse

        tensors = [
            Tensor(i.name, i.datatype, list(i.shape), i.data if i.data is not None else i.as_numpy())
            for i in payload.inputs
        ]
        try:
            prices = self.predict_tensors(tensors)
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None
        output = InferOutput(self.output_name, [len(prices)], "FP64", data=prices)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=[output],
        )


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise RequestError("abandoned: the server stopped waiting for this request (its timeout passed)", 504)


def _numbers(name: Any, datatype: Any, values: Any) -> np.ndarray:
    if datatype not in NUMERIC_DATATYPES:
        raise RequestError(f"input {name!r} takes numbers (e.g. FP64), got datatype {datatype}")
    if isinstance(values, np.ndarray):
        column = values.astype(np.float64, copy=False)
        nulls = None
    else:
        if any(isinstance(v, (str, bytes)) for v in values):
            raise RequestError(f"input {name!r} ({datatype}) holds text where numbers are expected")
        try:
            # None (JSON null) becomes NaN: a missing value, which the model handles like the training data's.
            column = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"input {name!r} ({datatype}): {exc}") from None
        nulls = values
    bad = np.flatnonzero(~np.isfinite(column))
    for i in bad:
        if nulls is None or nulls[i] is not None:  # NaN/Infinity sent as a number: refused, never "missing"
            raise RequestError(
                f"input {name!r} ({datatype}): row {int(i)} is {float(column[i])!r}; numbers must be finite "
                "(send null in JSON for a missing value)"
            )
    return column


def flatten(name: Any, data: Any, limits: Limits) -> list:
    """``data`` as a flat list, without recursion: at most ``limits.max_depth`` levels of lists and
    ``limits.max_elements`` values (RequestError otherwise)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        if len(data) > limits.max_elements:
            raise RequestError(f"input {name!r}: more than {limits.max_elements} values", 413)
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) >= limits.max_depth:
                    raise RequestError(
                        f"input {name!r}: data nested deeper than {limits.max_depth} levels of lists"
                    )
                stack.append(iter(value))
                break
            out.append(value)
            if len(out) > limits.max_elements:
                raise RequestError(f"input {name!r}: more than {limits.max_elements} values", 413)
        else:
            stack.pop()
    return out
