"""`HousingRuntime`: the MLServer runtime the serving image ran until issue 22 (bench/legacy_mlserver, the "legacy" contender).

MLServer's MLflow runtime, with two changes and the same V2 contract (inputs named after the signature's
columns, one output tensor of prices):

- A bad request is the client's error: 400 with ``{"error": "..."}`` naming the input and the problem. The stock
  runtime lets MlflowException/ValueError escape, which MLServer answers with 500, or with a plain-text
  "Internal Server Error" when inference runs in the server process (``MLSERVER_PARALLEL_WORKERS=0``).
- Models that take their columns as a mapping (``accepts_column_mapping``, see features.py) are fed NumPy
  columns straight from the request: no pandas DataFrame, no pyfunc schema enforcement, which cost ~3 ms of a
  ~4 ms single-row request (bench/). The checks the signature implies are done here, with clearer messages:
  every required column present, numbers where the signature says double, strings where it says string,
  one column per input and all inputs of the same length (the stock runtime broadcasts unequal lengths).
  Other models take the stock path (DataFrame + pyfunc), with errors mapped to 400 as well.

Only mlserver, mlflow and numpy are imported: the serving image installs housing_mlops without its dependencies.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput
from mlserver.utils import get_model_uri
from mlserver_mlflow import MLflowRuntime

NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
# MLflow column types fed as float64 / as Python strings.
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
STRING_TYPES = frozenset({"string"})


class HousingRuntime(MLflowRuntime):
    """MLflow models over V2 with client errors as 400 and a pandas-free path for column-mapping models."""

    async def load(self) -> bool:
        # MLflowRuntime.load, without mlflow's pip-requirements check (0.3 s of every start, measured): the
        # serving image is built from the lock that trained the model (images/common/check_lock.py).
        self._model = mlflow.pyfunc.load_model(await get_model_uri(self._settings), suppress_warnings=True)
        self._input_schema = self._model.metadata.get_input_schema()
        self._signature = self._model.metadata.signature
        self._sync_metadata()
        # The registered version fetch-model wrote beside the model: every answer names it (model_version).
        marker = Path(self.settings.parameters.uri or ".") / ".model-version"
        self._served_version = marker.read_text().strip() if marker.is_file() else None
        self._output_name = self.outputs[0].name if self.outputs else "predictions"
        self._columns: list[tuple[str, str, bool]] = []
        self._fast = None
        schema = self._input_schema
        if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
            return True
        columns = [(c.name, str(c.type.name), bool(getattr(c, "required", True))) for c in schema.inputs]
        if not all(kind in NUMERIC_TYPES | STRING_TYPES for _, kind, _ in columns):
            return True
        try:
            raw = self._model.get_raw_model()
        except (NotImplementedError, MlflowException):
            return True
        if getattr(raw, "accepts_column_mapping", False):
            self._columns, self._fast = columns, raw
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        response = await self._predict(payload)
        if self._served_version:
            response.model_version = self._served_version
        return response

    async def _predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._fast is None:
            try:
                return await super().predict(payload)
            except MlflowException as exc:
                raise InferenceError(f"request does not match the model's signature: {exc.message}") from None
            except (ValueError, TypeError, KeyError) as exc:
                raise InferenceError(f"request does not match the model's signature: {exc}") from None
        columns = self.columns(payload)
        try:
            prediction = self._fast.predict(columns)
        except (ValueError, TypeError, KeyError) as exc:
            raise InferenceError(f"the model could not predict from this request: {exc}") from None
        prices = np.asarray(prediction, dtype=np.float64).reshape(-1)
        # Named and shaped as the model's metadata says (MLServer's codec would answer "output-1", [n, 1],
        # where the metadata announces "output-0", [-1]: a client asking for the announced name got nothing).
        output = NumpyCodec.encode_output(self._output_name, prices)
        return InferenceResponse(model_name=self.name, outputs=[output])

    def columns(self, payload: InferenceRequest) -> dict[str, np.ndarray]:
        """The request's inputs as one NumPy column per signature column, checked (InferenceError if not)."""
        given = {item.name: item for item in payload.inputs}
        missing = [name for name, _, required in self._columns if required and name not in given]
        if missing:
            raise InferenceError(
                f"missing input(s) {', '.join(missing)}; the model takes "
                + ", ".join(name for name, _, _ in self._columns)
            )
        out: dict[str, np.ndarray] = {}
        lengths: dict[str, int] = {}
        for name, kind, _required in self._columns:
            item = given.get(name)
            if item is None:
                continue
            out[name] = _column(item, numeric=kind in NUMERIC_TYPES)
            lengths[name] = len(out[name])
        if len(set(lengths.values())) > 1:
            raise InferenceError(
                "inputs have different lengths: " + ", ".join(f"{n} {k}" for n, k in lengths.items())
            )
        rows = next(iter(lengths.values()))
        if rows == 0:
            raise InferenceError("the request has no rows")
        for name, kind, _required in self._columns:  # optional columns left out: missing values
            if name not in out:
                out[name] = (
                    np.full(rows, np.nan) if kind in NUMERIC_TYPES else np.full(rows, None, dtype=object)
                )
        return out


def _column(item: RequestInput, numeric: bool) -> np.ndarray:
    """One V2 input → a 1-D column: shape [n] or [n, 1], data of exactly that many values of the right kind."""
    name, datatype, shape = item.name, str(item.datatype), list(item.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or any(d < 0 for d in shape):
        raise InferenceError(f"input {name!r}: shape {shape} is not a column (use [rows] or [rows, 1])")
    raw = item.data.root if hasattr(item.data, "root") else item.data
    # A NumPy array: a binary tensor (housing_mlops.binary), already typed by its datatype.
    values = raw.reshape(-1) if isinstance(raw, np.ndarray) else _flat(raw)
    expected = math.prod(shape)
    if len(values) != expected:
        raise InferenceError(
            f"input {name!r}: shape {shape} says {expected} value(s), data has {len(values)}"
        )
    if numeric:
        if datatype not in NUMERIC_DATATYPES:
            raise InferenceError(f"input {name!r} takes numbers (e.g. FP64), got datatype {datatype}")
        if isinstance(values, np.ndarray):
            return values.astype(np.float64, copy=False)
        if any(isinstance(v, (str, bytes)) for v in values):
            raise InferenceError(f"input {name!r} ({datatype}) holds text where numbers are expected")
        try:
            # None (JSON null) becomes NaN: a missing value, which the model handles like the training data's.
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InferenceError(f"input {name!r} ({datatype}): {exc}") from None
    if datatype != "BYTES":
        raise InferenceError(f"input {name!r} takes strings (datatype BYTES), got datatype {datatype}")
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if value is not None and not isinstance(value, str):
            raise InferenceError(f"input {name!r} (BYTES) holds {value!r}, not a string")
        column[i] = value
    return column


def _flat(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    return [v for part in data for v in _flat(part)]
