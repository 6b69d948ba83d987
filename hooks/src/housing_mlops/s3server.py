"""An S3-compatible server for the local stack: moto's server plus snapshots to disk.

moto keeps objects in memory; we pickle its S3 buckets to ``--snapshot`` whenever they change
(checked every ``--interval`` s) and on SIGTERM/SIGINT, and load the snapshot at start, so a restart
keeps the artifacts and the DVC remote.

moto accepts any credentials. With ``--require-credentials`` it checks them like S3 does: only the key pair in
this process's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (never in argv) may sign requests (moto's IAM
authentication: unknown key -> ``InvalidAccessKeyId``, wrong secret -> ``SignatureDoesNotMatch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import signal
import threading
from pathlib import Path

log = logging.getLogger("housing_mlops.s3server")


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
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(dict(backend.buckets), fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)  # atomic: a crash leaves the previous snapshot intact


def load(backend, path: Path) -> None:
    if path.exists():
        with path.open("rb") as fh:
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
    if args.require_credentials:
        key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            parser.error("--require-credentials needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        require_credentials(key_id, secret)
        log.info("requests must be signed with access key %s", key_id)

    from moto.server import ThreadedMotoServer

    backend = _backend()
    load(backend, args.snapshot)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
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
