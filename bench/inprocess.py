"""`python bench/inprocess.py MODEL_DIR PORT COUNT`: where a single-row request's time goes in our server, from the
in-process floor to the HTTP round trip; prints one JSON object (p50 per stage, in ms).

Each stage adds one layer to the previous one, all in this process on the same model (settings from the
environment, as the server reads them), except the last two, which ask the running server on 127.0.0.1:PORT:
- predict: the model on NumPy columns (the floor);
- checks: + the V2 inputs checked and converted to columns (runtime.predict_tensors);
- parse_encode: + the JSON body parsed, the metrics, the answer encoded (server.infer_rest);
- asgi: + our ASGI app (routing, body read, errors), called with a fake scope/receive/send, the work done inline;
- thread_hop: + the hop to an inference thread and back (the app as served);
- http: the same request over HTTP/1.1 keep-alive on loopback (uvicorn, the event loop, the client), with
  http.client as the bench's load does (it sends the headers and the body in two writes);
- http_one_write: the same, the request written in one `send` (the server reads it whole at once);
- http_post_404: the same POST to a model this server does not serve (404 before the body is looked at): HTTP,
  uvicorn and the client for the same bytes, without the work;
- http_live: `GET /v2/health/live` over keep-alive: HTTP, uvicorn and the client with nothing to do.
Stages run in interleaved rounds; a difference of two p50s is what that layer costs, roughly.

A process of its own: it imports housing_mlops.server (kserve), which bench/run.py must not (tritonclient.grpc).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
from housing_mlops import binary
from housing_mlops.schema import CANONICAL_REQUEST
from housing_mlops.server import App, Settings, State, infer_rest, tensors_from_json

PATH = "/v2/models/{}/infer"


class Inline:
    """The served state, with inference run inline on the event loop instead of on an inference thread."""

    def __init__(self, state: State) -> None:
        self._state = state

    def __getattr__(self, name: str):
        return getattr(self._state, name)

    async def run(self, work, *args):
        return work(*args)


def main() -> None:
    model_dir, port, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rounds = 5
    settings = Settings.from_env(model_dir)
    state = State(settings)
    state.load()
    runtime = state.runtime
    body = json.dumps(CANONICAL_REQUEST).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    columns = runtime.to_columns(tensors_from_json(binary.parse_json(body)))
    path = PATH.format(settings.model_name)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def over_http(method: str, url: str, payload: bytes | None, expected: int = 200) -> None:
        conn.request(method, url, payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != expected:
            raise SystemExit(f"HTTP {response.status} from {url}")

    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    wire = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def one_write() -> None:
        raw.sendall(wire)
        response = http.client.HTTPResponse(raw)
        response.begin()
        response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status} from {path}")

    sync = {
        "predict": lambda: runtime._predict(columns),
        "checks": lambda: runtime.predict_tensors(tensors_from_json(binary.parse_json(body))),
        "parse_encode": lambda: infer_rest(state, runtime, body, headers, time.monotonic() + 30),
        "http": lambda: over_http("POST", path, body),
        "http_one_write": one_write,
        "http_post_404": lambda: over_http("POST", PATH.format("not-served"), body, 404),
        "http_live": lambda: over_http("GET", "/v2/health/live", None),
    }
    apps = {"asgi": App(Inline(state)), "thread_hop": App(state)}
    times: dict[str, list[float]] = {
        k: [] for k in ("predict", "checks", "parse_encode", "asgi", "thread_hop")
    }
    times |= {"http": [], "http_one_write": [], "http_post_404": [], "http_live": []}

    async def measure() -> None:
        for r in range(rounds + 1):  # the first round warms up
            per = max(20, count // rounds) if r else 100
            for name in times:
                out = []
                if name in apps:
                    app = apps[name]
                    for _ in range(per):
                        t = time.perf_counter()
                        await app(scope, receive, send)
                        out.append(time.perf_counter() - t)
                else:
                    work = sync[name]
                    for _ in range(per):
                        t = time.perf_counter()
                        work()
                        out.append(time.perf_counter() - t)
                if r:
                    times[name] += out

    try:
        import uvloop  # what the server runs on
    except ImportError:
        asyncio.run(measure())
    else:
        uvloop.run(measure())
    conn.close()
    raw.close()
    state.pool.shutdown()
    if set(statuses) != {200}:
        raise SystemExit(f"the in-process app answered {sorted(set(statuses))}")
    out = {name: round(float(np.percentile(np.asarray(v) * 1000, 50)), 3) for name, v in times.items()}
    out["requests_per_stage"] = len(times["predict"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
