"""`housing-mlops reconcile --interval S`: the release's long-running reconciler (a Deployment).

It polls the alias and the InferenceService's pin every few seconds and calls `lifecycle.reconcile_once`, so an
alias moved by a person, a retrain or a hook serves on every replica within seconds. Polling, not MLflow's
registry webhooks: one GET to MLflow and one to the API server per round is cheap, a restarted reconciler
converges on its first round, and nothing has to reach it (no ingress, no shared HMAC secret, no lost
deliveries to retry). `/healthz` (readiness) answers 200 while rounds complete (they reach MLflow and the API
server); `/livez` (liveness) while rounds end at all, so an MLflow outage does not restart it for nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class Health:
    """When the last round completed, and the last error; healthy while a round completed recently."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.last_ok: float | None = None  # a round that reached MLflow and the API server
        self.last_round: float | None = None  # any round that ended (a stuck loop never ends one)
        self.last_error = "no round completed yet"

    def _recent(self, at: float | None) -> bool:
        return at is not None and time.monotonic() - at <= self.stale_after

    def ok(self) -> bool:
        return self._recent(self.last_ok)

    def alive(self) -> bool:
        return self._recent(self.last_round)

    def serve(self, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                checks = {"/healthz": health.ok, "/livez": health.alive}
                healthy = self.path in checks and checks[self.path]()
                body = b"ok\n" if healthy else f"{health.last_error}\n".encode()
                self.send_response(200 if healthy else 503 if self.path in checks else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line
                pass

        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
        return server


def fresh_connections() -> None:
    """Drop MLflow's pooled HTTP connections (its client caches one requests Session per process). Measured on our
    cluster: a keep-alive connection opened while MLflow's Service was not serving yet kept answering 404 with an
    empty body for every later round, while new connections got 200; a long-running client must not trust a
    connection after a failure."""
    try:
        from mlflow.utils.request_utils import _cached_get_request_session
    except ImportError:  # a later MLflow moved it: new sessions then come from wherever it caches them
        return
    _cached_get_request_session.cache_clear()


def run(
    round_: Callable[[], str],
    interval: float,
    health: Health,
    rounds: int | None = None,
    after_failure: Callable[[], None] = fresh_connections,
) -> None:
    """Call ``round_`` every ``interval`` seconds (``rounds`` times, or for ever), logging what changed; after a
    failed round, ``after_failure`` (fresh HTTP connections)."""
    last = None
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        try:
            did = round_()
            health.last_ok = time.monotonic()
            if did != last:
                log.info("%s", did)
            last = did
        except Exception as exc:  # one bad round (MLflow restarting, a gone version) must not end the loop
            from .errors import Gone

            message = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, Gone):  # MLflow and the API answered: healthy, and the pin stays
                health.last_ok = time.monotonic()
            health.last_error = message
            if message != last:
                log.error("%s", message)
            last = message
            after_failure()
        health.last_round = time.monotonic()
        done += 1
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
