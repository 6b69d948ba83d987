#!/usr/bin/env python3
"""In-pod checks of the cluster e2e: network probes, a Prometheus scrape, V2 inference through a Service.

Runs in a pod of the test-only image housing-mlops/test-services (``python3 /usr/local/bin/e2e_probe.py ...``),
so it uses the standard library only. Tested by tests/e2e/test_e2e_probe.py.

    e2e_probe.py tcp HOST PORT [--want open|blocked] [--hold 20] [--within SECONDS]
    e2e_probe.py metrics URL [--counter NAME ...]
    e2e_probe.py v2 URL --model NAME [--count 1] [--min-price 14999] [--max-price 1000000]

Each check writes ONE JSON object describing its result to ``--result`` (default /dev/termination-log, which
Kubernetes shows as ``status.containerStatuses[0].state.terminated.message``) and prints it to stdout. Results
are aggregated so they stay under Kubernetes' 4096-byte limit; one that would not is replaced there by
``{"check", "truncated": true, "detail"}`` (stdout keeps it whole). If the file cannot be written, a warning
goes to stderr and the exit code is still the check's.

Exit codes:
    0   the check passed: tcp open (or, with --want blocked, still open after --within); every counter present
        with a sum > 0; every V2 answer 200 with a finite price within the bounds
    1   the check failed: tcp blocked; a counter missing or zero; a V2 answer failed
    2   tcp: the host name does not resolve
    3   metrics: the endpoint cannot be read or parsed
    64  usage error (no result written)
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

RESULT_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
TEXT_LIMIT = 200  # characters kept of any error text
MAX_ERRORS = 5  # error strings kept in a v2 result
MAX_VERSIONS = 8  # distinct model versions kept in a v2 result; the rest count under OTHER
OTHER = "(other)"
DEFAULT_COUNTER = "housing_inference_rows_total"  # rows the model server predicted (successes only)
# A sane price, in dollars: the bounds `housing-mlops infer` (helm test) applies by default (a test ties them)
MIN_PRICE = 14_999.0
MAX_PRICE = 1_000_000.0

# The project's canonical V2 request: a copy of housing_mlops.schema.CANONICAL_REQUEST (the image does not
# have our package); tests/e2e/test_e2e_probe.py asserts the two are equal.
CANONICAL_REQUEST: dict[str, Any] = {
    "inputs": [
        {"name": "longitude", "shape": [1], "datatype": "FP64", "data": [-122.23]},
        {"name": "latitude", "shape": [1], "datatype": "FP64", "data": [37.88]},
        {"name": "housing_median_age", "shape": [1], "datatype": "FP64", "data": [41]},
        {"name": "total_rooms", "shape": [1], "datatype": "FP64", "data": [880]},
        {"name": "total_bedrooms", "shape": [1], "datatype": "FP64", "data": [129]},
        {"name": "population", "shape": [1], "datatype": "FP64", "data": [322]},
        {"name": "households", "shape": [1], "datatype": "FP64", "data": [126]},
        {"name": "median_income", "shape": [1], "datatype": "FP64", "data": [8.3252]},
        {"name": "ocean_proximity", "shape": [1], "datatype": "BYTES", "data": ["NEAR BAY"]},
    ]
}

Result = dict[str, Any]
Want = Literal["open", "blocked"]


def _clip(value: object, limit: int = TEXT_LIMIT) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- tcp ---------------------------------------------------------------------------------------------------


def probe_tcp(
    host: str,
    port: int,
    want: Want = "open",
    hold: float = 20.0,
    within: float | None = None,
    *,
    interval: float = 1.0,
    connect_timeout: float = 5.0,
) -> tuple[int, Result]:
    """Connect to HOST:PORT until the answer is clear (exit code, result).

    open: 0 on the first connect within WITHIN (default 20 s), else 1. blocked: 1 once connects have failed
    for HOLD s in a row; a pod may start before its NetworkPolicy applies, so a connect that succeeds resets
    the streak, and a port still open after WITHIN (default 60 s) is 0. A name that does not resolve is 2.
    """
    within = (60.0 if want == "blocked" else 20.0) if within is None else within
    began = time.monotonic()

    def result(code: int, state: str, detail: str, seen_open: bool) -> tuple[int, Result]:
        elapsed = round(time.monotonic() - began, 3)
        return code, {
            "check": "tcp",
            "host": host,
            "port": port,
            "state": state,
            "detail": _clip(detail, 2 * TEXT_LIMIT),
            "seen_open": seen_open,
            "elapsed_s": elapsed,
        }

    try:
        sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    except OSError as exc:
        return result(2, "unresolved", f"{host}: does not resolve: {exc}", False)
    address = (str(sockaddr[0]), int(sockaddr[1]))
    start = time.monotonic()  # WITHIN counts from here, after the lookup (as before)
    failing_since: float | None = None
    seen_open = False
    while True:
        try:
            socket.create_connection(address, timeout=connect_timeout).close()
            if want != "blocked":
                return result(0, "open", f"{host}:{port} open", True)
            failing_since, seen_open = None, True
        except OSError as exc:
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if want != "blocked" and now - start >= within:
                return result(1, "blocked", f"{host}:{port} blocked for {within:g} s: {exc}", seen_open)
            if want == "blocked" and now - failing_since >= hold:
                return result(1, "blocked", f"{host}:{port} blocked for {hold:g} s: {exc}", seen_open)
        if failing_since is None and time.monotonic() - start >= within:
            return result(0, "open", f"{host}:{port} open (still after {within:g} s)", seen_open)
        time.sleep(interval)


# --- metrics -----------------------------------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_sample(line: str) -> tuple[str, dict[str, str], float]:
    """One sample line of the Prometheus text format: (name, labels, value). ValueError if malformed."""
    match = _NAME.match(line)
    if not match:
        raise ValueError(f"no metric name in {line!r}")
    name, pos, labels = match.group(), match.end(), {}
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    if line.startswith("{", pos):
        pos += 1
        while True:
            while pos < len(line) and line[pos] in " \t,":
                pos += 1
            if line.startswith("}", pos):
                pos += 1
                break
            label = _LABEL.match(line, pos)
            if not label:
                raise ValueError(f"bad label set in {line!r}")
            pos, value = label.end(), []
            while pos < len(line) and line[pos] != '"':
                if line[pos] == "\\" and pos + 1 < len(line):
                    pos += 1
                    value.append(_UNESCAPE.get(line[pos], "\\" + line[pos]))
                else:
                    value.append(line[pos])
                pos += 1
            if pos >= len(line):
                raise ValueError(f"unterminated label value in {line!r}")
            labels[label.group(1)] = "".join(value)
            pos += 1  # the closing quote
    fields = line[pos:].split()  # value [timestamp] [# exemplar]
    if not fields:
        raise ValueError(f"no value in {line!r}")
    return name, labels, float(fields[0])


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of every sample name over all its label sets; comments and blank lines skipped."""
    sums: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = parse_sample(line)
            sums[name] = sums.get(name, 0.0) + value
    return sums


def counter_sum(sums: dict[str, float], name: str) -> float | None:
    """A counter's sum by NAME, or by its twin with/without ``_total`` if NAME has no samples; None if absent
    (or not finite, which no counter is)."""
    twin = name.removesuffix("_total") if name.endswith("_total") else name + "_total"
    value = sums.get(name, sums.get(twin))
    return value if value is not None and math.isfinite(value) else None


def check_metrics(url: str, counters: Sequence[str], *, timeout: float = 30.0) -> tuple[int, Result]:
    """GET a Prometheus text endpoint; 0 if every counter is present with a sum > 0, 1 if not, 3 if unreadable."""
    names = list(dict.fromkeys(counters))
    result: Result = {"check": "metrics", "url": url, "counters": dict.fromkeys(names)}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            sums = parse_metrics(response.read().decode("utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        result["detail"] = _clip(f"cannot read {url}: {exc}")
        return 3, result
    result["counters"] = {name: counter_sum(sums, name) for name in names}
    bad = [name for name, value in result["counters"].items() if value is None or value <= 0]
    result["detail"] = "missing or zero: " + ", ".join(bad) if bad else "all counters > 0"
    return (1 if bad else 0), result


# --- v2 ----------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One V2 answer: HTTP status (0 if none came), model_version, first output's first value, error."""

    status: int
    version: str | None = None
    price: float | None = None
    error: str | None = None


def _first_value(body: Any) -> float | None:
    try:
        value = body["outputs"][0]["data"][0]
        while isinstance(value, list):  # some servers nest the data by shape
            value = value[0]
    except (KeyError, IndexError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def infer_once(url: str, model: str, *, timeout: float = 30.0) -> Answer:
    """POST the canonical request to URL/v2/models/MODEL/infer on a new connection, closed afterwards."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = f"{parts.path.rstrip('/')}/v2/models/{model}/infer"
    body = json.dumps(CANONICAL_REQUEST).encode()
    headers = {"Content-Type": "application/json", "Connection": "close"}
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        status, payload = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    version = doc.get("model_version") if isinstance(doc, dict) else None
    answer = Answer(status, None if version is None else str(version), _first_value(doc))
    if status != 200:
        answer.error = f"HTTP {status}: {payload.decode('utf-8', errors='replace').strip()}"
    elif answer.price is None:
        answer.error = "no numeric outputs[0].data[0] in the answer"
    return answer


def check_v2(
    url: str,
    model: str,
    count: int = 1,
    min_price: float = MIN_PRICE,
    max_price: float = MAX_PRICE,
    *,
    timeout: float = 30.0,
) -> tuple[int, Result]:
    """COUNT V2 requests, one connection each so a Service spreads them over its pods; 0 iff all passed."""
    versions: dict[str, int] = {}
    prices: dict[str, float] = {}
    errors: list[str] = []
    failed = 0
    for index in range(count):
        answer = infer_once(url, model, timeout=timeout)
        key = None if answer.version is None else _clip(answer.version, 40)
        if key is not None:
            key = key if key in versions or len(versions) < MAX_VERSIONS else OTHER
            versions[key] = versions.get(key, 0) + 1
            if answer.price is not None and math.isfinite(answer.price):
                prices.setdefault(key, answer.price)
        if answer.error is None and answer.price is not None:
            if not math.isfinite(answer.price):
                answer.error = f"price {answer.price} is not finite"
            elif not min_price <= answer.price <= max_price:
                answer.error = f"price {answer.price} outside [{min_price:g}, {max_price:g}]"
        if answer.error is not None:
            failed += 1
            if len(errors) < MAX_ERRORS:
                served = "" if answer.version is None else f" (version {answer.version})"
                errors.append(_clip(f"answer {index + 1}{served}: {answer.error}"))
    return (1 if failed else 0), {
        "check": "v2",
        "url": _clip(url),
        "model": _clip(model, 100),
        "answers": count,
        "failed": failed,
        "versions": versions,
        "prices": prices,
        "errors": errors,
    }


# --- output and CLI ----------------------------------------------------------------------------------------


def emit(result: Result, path: str) -> None:
    """Print RESULT as one JSON line and write it to PATH (a short stand-in there if over RESULT_LIMIT)."""
    text = json.dumps(result, allow_nan=False)
    print(text, flush=True)
    if len(text.encode()) > RESULT_LIMIT:
        detail = f"result of {len(text.encode())} bytes exceeds {RESULT_LIMIT}; see the pod's log"
        text = json.dumps({"check": result.get("check"), "truncated": True, "detail": detail})
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"e2e_probe: cannot write the result to {path}: {exc}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage errors exit 64, so that 2 only ever means "does not resolve"."""
        self.print_usage(sys.stderr)
        self.exit(64, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes:" + __doc__.split("Exit codes:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--result", default="/dev/termination-log", help="where the JSON result goes")
    sub = parser.add_subparsers(dest="check", required=True)
    tcp = sub.add_parser("tcp", help="connect to HOST:PORT: open or blocked")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    tcp.add_argument("--want", choices=["open", "blocked"], default="open")
    tcp.add_argument("--hold", type=float, default=20.0, help="blocked: seconds of failures in a row (20)")
    tcp.add_argument("--within", type=float, help="seconds to decide in (open: 20, blocked: 60)")
    metrics = sub.add_parser("metrics", help="sum Prometheus counters at URL")
    metrics.add_argument("url")
    metrics.add_argument("--counter", action="append", help=f"counter name, repeatable ({DEFAULT_COUNTER})")
    v2 = sub.add_parser("v2", help="V2 inference requests to URL, one connection each")
    v2.add_argument("url", type=_http_url)
    v2.add_argument("--model", required=True)
    v2.add_argument("--count", type=_positive, default=1)
    v2.add_argument("--min-price", type=float, default=MIN_PRICE)
    v2.add_argument("--max-price", type=float, default=MAX_PRICE)
    # --result is accepted after the subcommand too (SUPPRESS: an absent one keeps the main parser's value).
    for subparser in (tcp, metrics, v2):
        subparser.add_argument("--result", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check == "tcp":
        code, result = probe_tcp(args.host, args.port, args.want, args.hold, args.within)
    elif args.check == "metrics":
        code, result = check_metrics(args.url, args.counter or [DEFAULT_COUNTER])
    else:
        code, result = check_v2(args.url, args.model, args.count, args.min_price, args.max_price)
    emit(result, args.result)
    return code


if __name__ == "__main__":
    sys.exit(main())
