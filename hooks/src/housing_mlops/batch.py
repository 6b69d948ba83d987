"""`housing-mlops predict-batch`: CSV in, JSON predictions out, with the promoted model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import DataError, HousingError
from .schema import FEATURES, NUMERIC_FEATURES, read_dataset


def predict_batch(csv: Path, model_uri: str) -> list[dict]:
    frame = read_dataset(csv, with_target=False)
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # mlflow wraps registry/S3 failures in several types
        raise HousingError(f"loading {model_uri} failed: {str(exc).splitlines()[0]}") from exc
    x = frame[FEATURES].astype({c: "float64" for c in NUMERIC_FEATURES})
    try:
        predictions = model.predict(x)
    except ValueError as exc:  # e.g. a category the model was not trained on; rows count from 0 = line 2
        raise DataError(f"{csv}: {exc}") from None
    return [{"row": i, "median_house_value": float(p)} for i, p in enumerate(predictions)]


def write_json(rows: list[dict], out: Path | None) -> None:
    text = json.dumps(rows)
    if out is None:
        print(text)
        return
    # Atomic: a failed run never leaves a truncated file behind.
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
