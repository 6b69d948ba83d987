"""`python -m legacy_mlserver.server MODEL_DIR` (bench/ only): `mlserver start MODEL_DIR` with our V2 REST infer path.

MLServer 1.7 answers tritonclient's default request (the binary tensor data extension, binary.py) with
`422 JSON decode error`, and its FastAPI route costs more per request than our model's prediction (bench/:
dependency solving, response-model validation and jsonable encoding around a ~0.3 ms predict). So
``POST /v2/models/{name}[/versions/{v}]/infer`` is answered by `V2Rest`, an ASGI middleware innermost in MLServer's
app: it parses JSON (orjson) or a binary body, validates the V2 request with MLServer's own pydantic types,
calls MLServer's data plane (same model registry, parallel workers, metrics and errors) and writes JSON, or
binary where the client asked. Everything else (metadata, health, repository, gRPC, metrics) is MLServer's,
unchanged; its REST middlewares (Prometheus request metrics, gzip) still wrap ours.

Only mlserver, numpy and orjson are imported: the serving image installs housing_mlops without its dependencies.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import logging
import os
import re
import sys
from typing import Any

import orjson
from housing_mlops import binary  # the same V2 binary extension as ours (hooks/src is on its PYTHONPATH)
from mlserver import MLServer
from mlserver.cli.serve import load_settings
from mlserver.errors import MLServerError
from mlserver.logging import configure_logger
from mlserver.types import InferenceRequest
from mlserver.utils import extract_headers, insert_headers, install_uvloop_event_loop
from pydantic import ValidationError
from starlette.middleware import Middleware

log = logging.getLogger(__name__)

INFER = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


class V2Rest:
    """ASGI middleware answering V2 REST inference through MLServer's data plane (JSON or binary)."""

    def __init__(self, app: Any, data_plane: Any, router: Any) -> None:
        self.app, self.data_plane, self.router = app, data_plane, router
        # The route we answer for: the Prometheus middleware labels a request by the route that handled it
        # (scope "router" + "endpoint", which Starlette's router would have set) and drops unrouted ones.
        self.endpoint = next(
            (
                r.endpoint
                for r in router.routes
                if getattr(r, "path", None) == "/v2/models/{model_name}/infer"
            ),
            self.infer,
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        match = INFER.fullmatch(path) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["router"], scope["endpoint"] = self.router, self.endpoint
        body = await _read(receive)
        status, headers, payload = await self.infer(match["name"], match["version"], scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def infer(
        self, name: str, version: str | None, scope: dict, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            if "gzip" in headers.get("content-encoding", ""):
                body = gzip.decompress(body)
            if binary.HEADER in headers:
                doc, tail = binary.split(body, headers[binary.HEADER])
                binary.attach_inputs(doc, tail)
            else:
                doc = binary.parse_json(body)
            request = InferenceRequest.model_validate(doc)
            wants_binary = binary.output_selector(doc)
            insert_headers(request, headers)
            response = await self.data_plane.infer(request, name, version)
        except (binary.BinaryError, OSError, EOFError) as exc:  # OSError/EOFError: a broken gzip body
            return _error(400, str(exc))
        except ValidationError as exc:
            return _error(422, "not a V2 inference request: " + _summary(exc))
        except MLServerError as exc:
            return _error(exc.status_code, str(exc))
        extra = extract_headers(response) or {}
        out, header_length = binary.encode_response(response.model_dump(), wants_binary)
        reply = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in extra.items()]
        if header_length is None:
            reply.append((b"content-type", b"application/json"))
        else:
            reply += [
                (b"content-type", b"application/octet-stream"),
                (binary.HEADER.encode(), str(header_length).encode()),
            ]
        reply.append((b"content-length", str(len(out)).encode()))
        return 200, reply, out


async def _read(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _error(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    payload = orjson.dumps({"error": message})
    return (
        status,
        [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        payload,
    )


def _summary(exc: Any) -> str:
    """pydantic's errors in one line: where, what, and the value that was given."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        given = repr(err.get("input"))
        parts.append(f"{where}: {err.get('msg')} (got {given[:60]})")
    return "; ".join(parts)


def install(server: Any) -> None:
    """Put `V2Rest` innermost in an MLServer's REST app (before it starts: Starlette builds its stack once)."""
    app = server._rest_server._app
    app.user_middleware.append(Middleware(V2Rest, data_plane=server._data_plane, router=app.router))


async def start(folder: str) -> None:
    settings, models = await load_settings(folder)
    implementation = os.environ.get("MLSERVER_MODEL_IMPLEMENTATION", "")
    if not settings.load_models_at_startup and "." in implementation:
        # The model comes later (POST /v2/repository/models/<name>/load): import its runtime now, while
        # nothing waits, so that the load is only the model's own files.
        importlib.import_module(implementation.rsplit(".", 1)[0])
    server = MLServer(settings)
    install(server)
    await server.start(models)


def main(argv: list[str] | None = None) -> None:
    """What `mlserver start FOLDER` does (logger, uvloop, settings from the environment), plus `install`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m legacy_mlserver.server MODEL_DIR")
    configure_logger()
    install_uvloop_event_loop()
    asyncio.run(start(args[0]))


if __name__ == "__main__":
    main()
