"""An S3-compatible server for the local stack: moto's S3, behind a guard, plus snapshots to disk.

moto keeps objects in memory; we pickle its S3 buckets to ``--snapshot`` whenever they change
(checked every ``--interval`` s) and on SIGTERM/SIGINT, and load the snapshot at start, so a restart
keeps the artifacts and the DVC remote.

moto accepts any credentials. With ``--require-credentials`` it checks them like S3 does: only the key pair in
this process's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (never in argv) may sign requests (moto's IAM
authentication: unknown key -> ``InvalidAccessKeyId``, wrong secret -> ``SignatureDoesNotMatch``).

moto's server also answers for every other AWS service and has an admin API without authentication
(``/moto-api/reset`` empties every bucket, ``/moto-api/data.json`` dumps them, ``/moto-api/reset-auth`` turns the
signature check off) and allows any web origin (CORS). `Guard` sits in front of it: S3 only, requests only for
this server's own loopback names (a DNS-rebound web page sends another ``Host``), no ``/moto-api``, no CORS
headers and no preflight. ``GET /_housing/ready`` answers for the guard itself (a bucket name cannot start with
``_``), which is how `housing-mlops local` tells this server from anything else on the port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("housing_mlops.s3server")

READY_PATH = "/_housing/ready"
SERVER_NAME = "housing-mlops-s3"


def _backend():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["global"]


def require_credentials(access_key_id: str, secret_access_key: str) -> None:
    """Turn on moto's IAM authentication with one user allowed s3:* and exactly this key pair."""
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    user = "housing-local"
    iam.create_user(region_name="us-east-1", user_name=user, path="/")
    key = iam.create_access_key(user_name=user)
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id, key.secret_access_key = access_key_id, secret_access_key
    iam.access_keys[key.physical_resource_id] = key
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(user, "s3-all", json.dumps(policy))
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from the first request on
    ActionAuthenticatorMixin.request_count = 0


StartResponse = Callable[..., object]


def _json(start_response: StartResponse, status: str, body: dict) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _s3_error(start_response: StartResponse, code: str, message: str) -> Iterable[bytes]:
    data = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
    return [data]


class Guard:
    """WSGI middleware in front of moto's dispatcher (see the module docstring)."""

    def __init__(self, app: Callable, hosts: set[str], signed_only: bool) -> None:
        self.app = app
        self.hosts = hosts
        self.signed_only = signed_only

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        path = environ.get("PATH_INFO", "")
        if host not in self.hosts:
            return _json(
                start_response,
                "403 Forbidden",
                {"error": f"Host {host!r} is not this server's loopback name"},
            )
        if path == READY_PATH:
            return _json(start_response, "200 OK", {"server": SERVER_NAME})
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return _json(
                start_response, "403 Forbidden", {"error": "no cross-origin access (CORS) to this server"}
            )
        if path.startswith("/moto-api") or path == "/favicon.ico":
            return _json(
                start_response, "403 Forbidden", {"error": "moto's admin API is disabled on this server"}
            )
        if self.signed_only and not environ.get("HTTP_AUTHORIZATION"):
            # moto's IAM check needs the header (without it, a 500 and a traceback in the log): S3's answer
            return _s3_error(
                start_response, "AccessDenied", "anonymous requests are refused: sign them (SigV4)"
            )

        def start_without_cors(status: str, headers: list, exc_info=None):
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, exc_info)

        return self.app(environ, start_without_cors)


def _refuse_service(service: str) -> Callable:
    """What moto's dispatcher gets instead of any backend but S3's."""

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        return _json(start_response, "403 Forbidden", {"error": f"only S3 is served here, not {service!r}"})

    return app


def make_app(host: str, port: int, signed_only: bool) -> Guard:
    """moto's S3 (its Flask app, through moto's own dispatcher) behind `Guard`."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    def create_app(service: str):
        return create_backend_app(service) if service == "s3" else _refuse_service(service)

    hosts = {f"{name}:{port}" for name in (host, "127.0.0.1", "localhost")}
    return Guard(DomainDispatcherApplication(create_app), hosts, signed_only)


class Server:
    """The guarded app on a threaded werkzeug server (what moto's ThreadedMotoServer does, with our app)."""

    def __init__(self, host: str, port: int, signed_only: bool) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self._server = make_server(
            host, port, make_app(host, port, signed_only), True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


def _fingerprint(backend) -> tuple:
    parts = []
    for name, bucket in sorted(backend.buckets.items()):
        keys = tuple(
            sorted(
                (k, getattr(v, "etag", ""), str(getattr(v, "last_modified", "")))
                for k, v in bucket.keys.items()
            )
        )
        parts.append((name, keys))
    return tuple(parts)


def save(backend, path: Path) -> None:
    # A private temporary file created exclusively beside the snapshot (never through a symlink), renamed over
    # it: atomic, so a crash leaves the previous snapshot intact.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(dict(backend.buckets), fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(backend, path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as fh:
        backend.buckets.update(pickle.load(fh))
    log.info("loaded %d bucket(s) from %s", len(backend.buckets), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--require-credentials",
        action="store_true",
        help="Refuse requests not signed with $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s s3server %(message)s")
    # moto reads this when its server module is imported: no CORS on its Flask apps (Guard strips it too)
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    if args.require_credentials:
        key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            parser.error("--require-credentials needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        require_credentials(key_id, secret)
        log.info("requests must be signed with access key %s", key_id)

    backend = _backend()
    load(backend, args.snapshot)
    server = Server(args.host, args.port, signed_only=args.require_credentials)
    server.start()
    log.info("serving S3 on http://%s:%d", args.host, args.port)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    last = _fingerprint(backend)
    while not stop.wait(args.interval):
        current = _fingerprint(backend)
        if current != last:
            save(backend, args.snapshot)
            last = current
    save(backend, args.snapshot)
    server.stop()
    log.info("stopped; snapshot saved to %s", args.snapshot)


if __name__ == "__main__":
    main()
