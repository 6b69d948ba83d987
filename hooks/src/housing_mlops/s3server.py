"""An S3-compatible server for the local stack: moto's server plus snapshots to disk.

moto keeps objects in memory; we pickle its S3 buckets to ``--snapshot`` whenever they change
(checked every ``--interval`` s) and on SIGTERM/SIGINT, and load the snapshot at start, so a restart
keeps the artifacts and the DVC remote.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s s3server %(message)s")

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
