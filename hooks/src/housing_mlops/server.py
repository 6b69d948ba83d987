"""`python -m housing_mlops.server MODEL_DIR`: the V2 model server (REST, gRPC, Prometheus) on `HousingRuntime`.

Built on the KServe Python model server SDK (`kserve`): the model is a `kserve.Model` (runtime.py), gRPC is
KServe's V2 `GRPCInferenceService` (its generated protobufs and servicer, with our `ModelInfer`), metrics are
prometheus_client like KServe's. The REST side is our own ASGI app on uvicorn, not KServe's FastAPI app: it is
where the limits below have to sit (KServe's reads any body whole, has no gzip, and serves the repository API),
and it answers faster (bench/: single-row p50 ~0.6x KServe's). `python -m housing_mlops.server --stock MODEL_DIR`
runs the same model in `kserve.ModelServer` as it comes, for comparison (bench/'s "ours_kserve").

What a hostile request meets (docs/cli.md, "Limits"; every limit is a `Settings` field, an environment
variable and a `housing-mlops serve` option; the chart's `inference.limits`):
- the body is read in chunks up to ``max_body_bytes`` (413 beyond; a Content-Length above it is refused before
  reading); a gzip body is inflated in steps with the same cap on its inflated size, so a bomb costs at most
  the cap;
- the rows and values a request declares, and the depth of nested ``data``, are checked before any data is
  converted (runtime.Limits: 413 for too many, 400 for too deep);
- parsing, checks, prediction and encoding run in a thread pool of ``workers`` threads, never on the event
  loop: health, readiness and small requests are answered while a large one runs;
- ``timeout_seconds`` bounds the wait for an answer (504 / DEADLINE_EXCEEDED; the work is abandoned between
  two chunks of rows, freeing its thread) and for the body (408);
- NaN/Infinity in a numeric input is a 400 naming the input, in every encoding;
- any unexpected error is a JSON 500 without a traceback (the log has it);
- there is no model repository API (load/unload): 404 over REST, UNIMPLEMENTED over gRPC. `--load-later`
  starts without the model and loads it on SIGHUP (the demo starts the server while it trains).

Only kserve (and what it brings: grpcio, prometheus_client, uvicorn), mlflow, numpy and orjson are imported:
the serving image installs housing_mlops without its dependencies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import binary
from .limits import Limits, MiB, Settings
from .runtime import HousingRuntime, RequestError, Tensor

log = logging.getLogger("housing_mlops.server")

MODEL_PATH = re.compile(
    r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<verb>/infer|/ready)?"
)


class TooLarge(RequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 413)


# -- metrics ------------------------------------------------------------------------------------------------

PRICE_BUCKETS = (
    25e3, 50e3, 75e3, 100e3, 125e3, 150e3, 175e3, 200e3, 250e3, 300e3, 350e3, 400e3, 450e3, 500e3, 600e3, 800e3,
    1e6,
)  # fmt: skip


class PredictionHistogram:
    """A Prometheus histogram of predicted values per (model, version), observed a whole batch at a time with
    NumPy (prometheus_client's Histogram takes one value per call: 200,000 calls for one large request)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], list] = {}

    def observe(self, model: str, version: str, values: np.ndarray) -> None:
        counts = np.bincount(
            np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1
        )
        total = float(values.sum())
        with self._lock:
            series = self._series.setdefault(
                (model, version), [np.zeros(len(self.bounds) + 1, np.int64), 0.0]
            )
            series[0] += counts
            series[1] += total

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=["model", "version"])
        with self._lock:
            items = [(key, counts.copy(), total) for key, (counts, total) in self._series.items()]
        for (model, version), counts, total in items:
            cumulative = np.cumsum(counts)
            buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", int(cumulative[-1])))
            family.add_metric([model, version], buckets, sum_value=total)
        yield family


class Metrics:
    """Requests and latency per model and protocol, predicted values per model version (the canary analysis
    compares those of two versions)."""

    def __init__(self) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        self.requests = Counter(
            "housing_inference_requests",
            "V2 inference requests answered, by model, protocol (rest, grpc) and status code",
            ["model", "protocol", "code"],
        )
        self.latency = Histogram(
            "housing_inference_request_seconds",
            "Time from a V2 inference request's arrival (body read) to its answer, by model and protocol",
            ["model", "protocol"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rows = Counter(
            "housing_inference_rows", "Rows predicted, by model and version", ["model", "version"]
        )
        self.predictions = PredictionHistogram(
            "housing_predicted_value", "Predicted values (house prices), by model and version", PRICE_BUCKETS
        )
        REGISTRY.register(self.predictions)

    def record(self, model: str, protocol: str, code: str, started: float) -> None:
        """``model`` is the served model's name or "" (any other name a client sent: one series, not one per
        name, so made-up names cannot grow the metrics without bound)."""
        self.requests.labels(model, protocol, code).inc()
        self.latency.labels(model, protocol).observe(time.perf_counter() - started)

    def predicted(self, model: str, version: str | None, prices: np.ndarray) -> None:
        self.rows.labels(model, version or "").inc(len(prices))
        self.predictions.observe(model, version or "", prices)


# -- the model and the thread pool --------------------------------------------------------------------------


class State:
    """The served model (None until loaded), the inference threads and the metrics, shared by REST and gRPC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: HousingRuntime | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="infer")
        self.metrics = Metrics()
        self._loading = threading.Lock()

    def load(self) -> None:
        """Load (or reload) the model from ``model_dir``; the previous one serves until the new one is ready."""
        with self._loading:
            started = time.perf_counter()
            runtime = HousingRuntime(self.settings.model_name, self.settings.model_dir, self.settings.limits)
            runtime.load()
            self.runtime = runtime
            log.info(
                "model %s version %s loaded from %s in %.2fs",
                runtime.name,
                runtime.version or "(unknown)",
                runtime.model_dir,
                time.perf_counter() - started,
            )

    def model(self, name: str, version: str | None) -> HousingRuntime:
        """The runtime serving ``name`` (and ``version``, when given) or RequestError 404/503."""
        if name != self.settings.model_name:
            raise RequestError(
                f"model {name!r} not found (this server serves {self.settings.model_name!r})", 404
            )
        runtime = self.runtime
        if runtime is None:
            raise RequestError(f"model {name!r} is not loaded yet", 503)
        if version is not None and runtime.version is not None and version != runtime.version:
            raise RequestError(
                f"model {name!r} version {version!r} is not served (version {runtime.version} is)", 404
            )
        return runtime

    def label(self, name: str) -> str:
        """The model label of a request's metrics: the served model's name, or "" for any other."""
        return name if name == self.settings.model_name else ""

    def deadline(self) -> float:
        """When a request arriving now stops being waited for (time.monotonic())."""
        return time.monotonic() + self.settings.timeout_seconds

    async def run(self, work: Any, *args: Any) -> Any:
        """``work(*args)`` on an inference thread, waited for at most ``timeout_seconds`` (``work`` gets the
        same deadline and gives up by itself: runtime.predict_tensors)."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        try:
            return await asyncio.wait_for(future, self.settings.timeout_seconds)
        except (TimeoutError, RequestError) as exc:
            # the wait ran out, or the work gave up first at its deadline: the same answer either way
            if isinstance(exc, RequestError) and exc.status != 504:
                raise
            raise RequestError(
                f"no answer within {self.settings.timeout_seconds:g}s (the server's request timeout); "
                "send fewer rows",
                504,
            ) from None


def tensors_from_json(doc: Any) -> list[Tensor]:
    """A V2 request document's inputs (after binary.attach_inputs), each checked to be a V2 input."""
    if not isinstance(doc, dict):
        raise RequestError(
            f"not a V2 inference request: the body is a JSON {type(doc).__name__}, not an object"
        )
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise RequestError("not a V2 inference request: inputs must be a list of tensors")
    out = []
    for i, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise RequestError(f"not a V2 inference request: inputs.{i} is not an object")
        name = item.get("name")
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in item]
        if missing or not isinstance(name, str):
            raise RequestError(
                f"not a V2 inference request: inputs.{i} ({name!r}) lacks {', '.join(missing) or 'a string name'}"
            )
        out.append(Tensor(name, item["datatype"], item["shape"], item["data"]))
    return out


def infer_rest(
    state: State, runtime: HousingRuntime, body: bytes, headers: dict[str, str], deadline: float
) -> tuple[list, bytes]:
    """On an inference thread: parse, check, predict, encode; (response headers, body)."""
    try:
        if binary.HEADER in headers:
            doc, tail = binary.split(body, headers[binary.HEADER])
            binary.attach_inputs(doc, tail)
        else:
            doc = binary.parse_json(body)
    except binary.BinaryError as exc:
        raise RequestError(str(exc)) from None
    prices = runtime.predict_tensors(tensors_from_json(doc), deadline)
    state.metrics.predicted(runtime.name, runtime.version, prices)
    answer = {
        "model_name": runtime.name,
        "model_version": runtime.version,
        "id": str(doc.get("id") or uuid.uuid4()),
        "parameters": {},
        "outputs": [
            {"name": runtime.output_name, "shape": [len(prices)], "datatype": "FP64", "data": prices}
        ],
    }
    out, header_length = binary.encode_response(answer, binary.output_selector(doc))
    if header_length is None:
        return [(b"content-type", b"application/json")], out
    return [
        (b"content-type", b"application/octet-stream"),
        (binary.HEADER.encode(), str(header_length).encode()),
    ], out


# -- REST ---------------------------------------------------------------------------------------------------


async def read_body(receive: Any, headers: dict[str, str], limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, inflated (to at most ``limit`` bytes) when gzip."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body has {int(length)} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body has more than {limit} bytes; this server takes at most {limit}")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported (gzip or none)", 415)
    return inflate(body, limit)


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body inflated in steps of at most what is left of ``limit``: a bomb is refused once it passes the
    limit, having allocated no more than that."""
    out = bytearray()
    data = body
    while data:
        inflater = zlib.decompressobj(wbits=31)  # gzip only; one object per member
        while data and not inflater.eof:
            try:
                out += inflater.decompress(data, limit - len(out) + 1)
            except zlib.error as exc:
                raise RequestError(f"the gzip body is broken ({exc})") from None
            if len(out) > limit:
                # Freed now, not when the cyclic GC gets to it: the exception's traceback keeps this frame, and
                # asyncio's wait_for holds it in a cycle (bench/: a flood of bombs held ~0.8 GB of these).
                del out, data, body
                raise TooLarge(
                    f"the gzip body inflates to more than {limit} bytes; this server takes at most {limit}"
                )
            data = inflater.unconsumed_tail
        if not inflater.eof:
            raise RequestError("the gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


def _json(status: int, doc: Any, extra: list | None = None) -> tuple[int, list, bytes]:
    payload = orjson.dumps(doc)
    return status, [(b"content-type", b"application/json"), *(extra or [])], payload


class App:
    """The V2 REST API as a plain ASGI app: health, metadata, inference (JSON or binary tensors, gzip)."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            status, headers, payload = await self.route(scope, receive, started)
        except ConnectionAbortedError:
            return
        except Exception:  # never a traceback to the client; the log has it
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            status, headers, payload = _json(
                500, {"error": "internal server error (the server log has details)"}
            )
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def route(self, scope: dict, receive: Any, started: float) -> tuple[int, list, bytes]:
        method, path = scope.get("method", "GET"), scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        state = self.state
        if path == "/v2/health/live":
            return _json(200, {"live": True})
        if path == "/v2/health/ready":
            ready = state.runtime is not None
            return _json(200 if ready else 503, {"ready": ready})
        if path == "/v2":
            return _json(
                200, {"name": "housing-mlops", "version": _version(), "extensions": ["binary_tensor_data"]}
            )
        match = MODEL_PATH.fullmatch(path)
        if match is None:
            extra = (
                " (the model repository API is off on this server)"
                if path.startswith("/v2/repository")
                else ""
            )
            return _json(404, {"error": f"not found: {method} {path}{extra}"})
        verb = match["verb"] or ""
        if (method == "POST") != (verb == "/infer"):
            return _json(405, {"error": f"{method} is not allowed on {path}"})
        name, version = match["name"], match["version"]
        if verb != "/infer":
            try:
                runtime = state.model(name, version)
            except RequestError as exc:
                if verb == "/ready" and exc.status == 503:
                    return _json(503, {"name": name, "ready": False})
                return _json(exc.status, {"error": str(exc)})
            if verb == "/ready":
                return _json(200, {"name": name, "ready": True})
            return _json(
                200,
                {
                    "name": name,
                    "versions": [runtime.version] if runtime.version else [],
                    "platform": "mlflow",
                    "inputs": runtime.get_input_types(),
                    "outputs": runtime.get_output_types(),
                },
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            runtime = state.model(name, version)
            deadline = state.deadline()
            try:
                body = await asyncio.wait_for(
                    read_body(receive, headers, state.settings.max_body_bytes), state.settings.timeout_seconds
                )
            except TimeoutError:
                raise RequestError(
                    f"the body did not arrive within {state.settings.timeout_seconds:g}s", 408
                ) from None
            reply, payload = await state.run(infer_rest, state, runtime, body, headers, deadline)
        except RequestError as exc:
            state.metrics.record(state.label(name), "rest", str(exc.status), started)
            extra = [(b"connection", b"close")] if exc.status == 413 else []
            return _json(exc.status, {"error": str(exc)}, extra)
        state.metrics.record(state.label(name), "rest", "200", started)
        return 200, reply, payload


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("housing-mlops")
    except PackageNotFoundError:
        return "0.0.0"


# -- gRPC ---------------------------------------------------------------------------------------------------

# gRPC typed contents by V2 datatype (KServe's and Triton's V2 proto).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def tensors_from_grpc(request: Any, limits: Limits) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    out = []
    for i, item in enumerate(request.inputs):
        shape, datatype = list(item.shape), item.datatype
        if math_prod(shape) > limits.max_elements:  # before decoding anything
            raise TooLarge(f"input {item.name!r}: shape {shape} is more than {limits.max_elements} values")
        if raw:
            try:
                data: Any = binary.decode_tensor(item.name, datatype, shape, memoryview(raw[i]))
            except binary.BinaryError as exc:
                raise RequestError(str(exc)) from None
        elif datatype in CONTENTS:
            values = getattr(item.contents, CONTENTS[datatype])
            data = list(values) if datatype == "BYTES" else np.asarray(values, dtype=binary.DTYPES[datatype])
        else:
            data = []
        out.append(Tensor(item.name, datatype, shape, data))
    return out


def math_prod(shape: list[int]) -> int:
    total = 1
    for d in shape:
        total *= max(d, 0)
    return total


def make_servicer(state: State) -> Any:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.servicer import InferenceServicer

    codes = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.INVALID_ARGUMENT,
             404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE,
             504: grpc.StatusCode.DEADLINE_EXCEEDED}  # fmt: skip

    def predict(runtime: HousingRuntime, request: Any, deadline: float) -> Any:
        prices = runtime.predict_tensors(tensors_from_grpc(request, runtime.limits), deadline)
        state.metrics.predicted(runtime.name, runtime.version, prices)
        return pb.ModelInferResponse(
            model_name=runtime.name,
            model_version=runtime.version or "",
            id=request.id or str(uuid.uuid4()),
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=runtime.output_name, datatype="FP64",
                                                             shape=[len(prices)])],
            raw_output_contents=[np.ascontiguousarray(prices, dtype="<f8").tobytes()],
        )  # fmt: skip

    class Servicer(InferenceServicer):
        """KServe's V2 gRPC service with our inference (the REST path's checks, limits and threads), health
        and metadata from the served model, and no repository API."""

        def __init__(self) -> None:
            super().__init__(data_plane=None, model_repository_extension=None)

        async def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=state.runtime is not None)

        async def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=True)

        async def ServerMetadata(self, request, context):
            return pb.ServerMetadataResponse(name="housing-mlops", version=_version(),
                                             extensions=["binary_tensor_data"])  # fmt: skip

        async def ModelReady(self, request, context):
            try:
                state.model(request.name, request.version or None)
            except RequestError as exc:
                if exc.status == 503:
                    return pb.ModelReadyResponse(ready=False)
                await context.abort(codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
            return pb.ModelReadyResponse(ready=True)

        async def ModelMetadata(self, request, context):
            try:
                runtime = state.model(request.name, request.version or None)
            except RequestError as exc:
                await context.abort(codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=runtime.name,
                versions=[runtime.version] if runtime.version else [],
                platform="mlflow",
                inputs=[tensor(**t) for t in runtime.get_input_types()],
                outputs=[tensor(**t) for t in runtime.get_output_types()],
            )

        async def ModelInfer(self, request, context):
            started = time.perf_counter()
            try:
                runtime = state.model(request.model_name, request.model_version or None)
                answer = await state.run(predict, runtime, request, state.deadline())
            except RequestError as exc:
                state.metrics.record(state.label(request.model_name), "grpc", str(exc.status), started)
                await context.abort(codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
            except Exception:
                log.exception("unexpected error answering gRPC ModelInfer")
                state.metrics.record(state.label(request.model_name), "grpc", "500", started)
                await context.abort(
                    grpc.StatusCode.INTERNAL, "internal server error (the server log has details)"
                )
            state.metrics.record(state.label(request.model_name), "grpc", "200", started)
            return answer

        async def RepositoryModelLoad(self, request, context):
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the model repository API is off on this server"
            )

        async def RepositoryModelUnload(self, request, context):
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "the model repository API is off on this server"
            )

    return Servicer()


async def start_grpc(state: State) -> Any:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    limit = state.settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),  # larger: RESOURCE_EXHAUSTED, before it is parsed
            ("grpc.max_send_message_length", max(limit, 64 * MiB)),
            ("grpc.so_reuseport", 0),
        ]
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(make_servicer(state), server)
    if server.add_insecure_port(f"{state.settings.host}:{state.settings.grpc_port}") == 0:
        raise SystemExit(f"error: cannot listen on {state.settings.host}:{state.settings.grpc_port} (gRPC)")
    await server.start()
    return server


# -- the process ----------------------------------------------------------------------------------------------


def _uvicorn_server(config: Any) -> Any:
    """A uvicorn.Server whose signals we handle (it would re-raise SIGTERM before gRPC is stopped)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    return Server(config)


async def serve(settings: Settings) -> None:
    import uvicorn

    state = State(settings)
    if not settings.load_later:
        state.load()  # before listening: ready as soon as it answers
    loop = asyncio.get_running_loop()
    grpc_server = await start_grpc(state) if settings.grpc_port else None
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    config = uvicorn.Config(
        App(state),
        host=settings.host,
        port=settings.http_port,
        lifespan="off",
        access_log=False,
        log_config=None,
        http="httptools" if _has("httptools") else "h11",
        timeout_keep_alive=65,
        timeout_graceful_shutdown=10,
    )
    server = _uvicorn_server(config)

    def stop() -> None:
        server.should_exit = True

    def load_now() -> None:
        def work() -> None:
            try:
                state.load()
            except Exception:  # keep serving what was loaded; the log says why
                log.exception("loading the model from %s failed", settings.model_dir)

        threading.Thread(target=work, name="load", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, load_now)
    log.info(
        "serving %s from %s: REST http://%s:%d, gRPC %s, metrics %s; limits: body %d bytes, %d rows, %d values, "
        "depth %d, timeout %gs, %d inference threads%s",
        settings.model_name,
        settings.model_dir,
        settings.host,
        settings.http_port,
        settings.grpc_port or "off",
        settings.metrics_port or "off",
        settings.max_body_bytes,
        settings.max_rows,
        settings.max_elements,
        settings.max_depth,
        settings.timeout_seconds,
        settings.workers,
        "; the model loads on SIGHUP" if settings.load_later else "",
    )
    try:
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(5)
        state.pool.shutdown(wait=False, cancel_futures=True)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def serve_stock(settings: Settings) -> None:
    """The same model in kserve.ModelServer as it comes (its FastAPI REST app; no gRPC), for bench/'s comparison.
    Only the listening address is ours: KServe's REST server binds 0.0.0.0, this one ``settings.host``."""
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    class LoopbackREST(kserve_model_server.RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = settings.host

    kserve_model_server.RESTServer = LoopbackREST
    runtime = HousingRuntime(settings.model_name, settings.model_dir, settings.limits)
    runtime.load()
    ModelServer(http_port=settings.http_port, enable_grpc=False, enable_latency_logging=False).start(
        [runtime]
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    stock = "--stock" in args
    args = [a for a in args if a != "--stock"]
    if len(args) != 1:
        sys.exit("usage: python -m housing_mlops.server [--stock] MODEL_DIR")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    settings = Settings.from_env(Path(args[0]))
    if stock:
        sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported
        serve_stock(settings)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
