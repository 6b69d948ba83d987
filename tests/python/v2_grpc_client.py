"""tritonclient's gRPC client against a served model, as a separate process: tritonclient.grpc and kserve
register the same protobuf names (`inference.ServerLiveRequest`), so they cannot share the pytest process.

Usage: python v2_grpc_client.py HOST:PORT MODEL  → one JSON object on stdout, a result per scenario.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tg
from housing_mlops.schema import CANONICAL_ROW, CATEGORICAL_FEATURES, FEATURES
from tritonclient.utils import InferenceServerException


def inputs(rows: int, **changed) -> list[tg.InferInput]:
    out = []
    for name in FEATURES:
        if name in changed and changed[name] is None:
            continue
        datatype, value = changed.get(name, ("BYTES" if name in CATEGORICAL_FEATURES else "FP64", None))
        value = CANONICAL_ROW[name] if value is None else value
        if datatype == "BYTES":
            array = np.array([str(value).encode()] * rows, dtype=np.object_)
        else:
            array = np.full(rows, value, dtype=np.float64)
        item = tg.InferInput(name, [rows], datatype)
        item.set_data_from_numpy(array)
        out.append(item)
    return out


def main() -> None:
    address, model = sys.argv[1], sys.argv[2]
    client = tg.InferenceServerClient(address)
    result: dict = {"live": client.is_server_live(), "ready": client.is_model_ready(model)}
    metadata = client.get_model_metadata(model, as_json=True)
    result["inputs"] = [i["name"] for i in metadata["inputs"]]
    result["outputs"] = [o["name"] for o in metadata["outputs"]]
    output = result["outputs"][0]

    def infer(rows: int, **changed) -> dict:
        try:
            answer = client.infer(model, inputs(rows, **changed))
        except InferenceServerException as exc:
            return {"status": exc.status(), "message": exc.message()}
        response = answer.get_response(as_json=True)
        return {
            "prices": answer.as_numpy(output).ravel().tolist(),
            "model_version": response.get("model_version"),
        }

    result["one"] = infer(1)
    result["batch"] = infer(100)
    result["missing"] = infer(1, median_income=None)
    result["wrong_datatype"] = infer(1, median_income=("BYTES", "lots"))
    result["unknown_category"] = infer(1, ocean_proximity=("BYTES", "MARS"))
    result["again"] = infer(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
