"""`python bench/grpc_load.py HOST:PORT MODEL COUNT [WARMUP]`: COUNT single-row V2 gRPC requests with tritonclient
(its defaults: FP64 and BYTES as raw_input_contents), one at a time on one channel, after WARMUP unmeasured ones;
prints {"latencies_s": [...], "price": p} (or {"error": ...}) as one JSON line.

A process of its own: tritonclient.grpc and kserve register the same protobuf names (`inference.ModelInferRequest`),
so the gRPC client must never share a process with housing_mlops.server or kserve. bench/run.py runs it; nothing
here imports housing_mlops (the canonical row is passed in the environment as JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException


def inputs(row: dict) -> list[tg.InferInput]:
    out = []
    for name, value in row.items():
        if isinstance(value, str):
            item = tg.InferInput(name, [1], "BYTES")
            item.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
        else:
            item = tg.InferInput(name, [1], "FP64")
            item.set_data_from_numpy(np.array([value], dtype=np.float64))
        out.append(item)
    return out


def main() -> None:
    address, model, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    row = json.loads(os.environ["HOUSING_BENCH_ROW"])
    client = tg.InferenceServerClient(address)
    request = inputs(row)
    latencies = []
    try:
        for i in range(warmup + count):
            started = time.perf_counter()
            answer = client.infer(model, request)
            elapsed = time.perf_counter() - started
            if i >= warmup:
                latencies.append(elapsed)
        price = float(answer.as_numpy(answer.get_response().outputs[0].name).ravel()[0])
    except InferenceServerException as exc:
        print(json.dumps({"error": f"{exc.status()}: {exc.message()}"}))
        return
    finally:
        client.close()
    print(json.dumps({"latencies_s": latencies, "price": price}))


if __name__ == "__main__":
    main()
