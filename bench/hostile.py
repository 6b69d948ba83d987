"""Hostile requests against a running model server (issue 22), for bench/run.py: each case alone, then a normal
request (`table`), and a steady normal load while hostile requests keep coming (`under_load`), with the server's
memory sampled throughout.

The cases mirror tests/python/test_limits.py: a gzip bomb, a body over the size limit, 200,000 rows, `data` nested
600 deep, NaN in a binary FP64 input, the repository API's unload. They are sent over raw sockets with a reader
and a writer at once, so a server that answers (413) before the body is all sent is heard, whatever it does with
the rest. Memory: the VmRSS of the server's process tree from /proc, every 20 ms, and each process' VmHWM (reset
first through /proc/PID/clear_refs), so a peak between two samples is not missed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from housing_mlops.schema import CANONICAL_REQUEST, CANONICAL_ROW, CATEGORICAL_FEATURES, FEATURES

MiB = 1024 * 1024
MODEL_NAME = "housing-model"
INFER = f"/v2/models/{MODEL_NAME}/infer"
BIG_ROWS = 200_000
NORMAL_BODY = json.dumps(CANONICAL_REQUEST).encode()


# -- memory ---------------------------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def status_kb(pid: int, key: str) -> int:
    """A /proc/PID/status size in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Memory:
    """`with Memory(pid) as m:` samples the summed VmRSS of the process tree every ``interval`` s; afterwards
    ``m.before_mb``, ``m.peak_mb`` (the larger of the samples' maximum and the summed VmHWM) and ``m.growth_mb``."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.before_mb = self.peak_mb = 0.0
        self._stop = threading.Event()
        self._max_kb = 0

    def _rss_kb(self) -> int:
        return sum(status_kb(p, "VmRSS") for p in self.pids)

    def __enter__(self) -> Memory:
        self.pids = tree(self.pid)
        for pid in self.pids:  # VmHWM := VmRSS (Linux: "5" resets the peak resident set size)
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        self._max_kb = before = self._rss_kb()
        self.before_mb = before / 1024
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._max_kb = max(self._max_kb, self._rss_kb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hwm = sum(status_kb(p, "VmHWM") for p in self.pids)
        self.peak_mb = max(self._max_kb, hwm) / 1024

    @property
    def growth_mb(self) -> float:
        return round(self.peak_mb - self.before_mb, 1)


# -- requests -------------------------------------------------------------------------------------------------


@dataclass
class Request:
    name: str
    what: str
    path: str = INFER
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    method: str = "POST"

    def wire(self) -> bytes:
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(self.body)}\r\n"
        )
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return head.encode() + b"\r\n" + self.body


@dataclass
class Answer:
    status: int | str  # the HTTP status, or what happened instead ("timeout", "reset", "closed")
    seconds: float
    body: bytes = b""


def send(port: int, request: Request, timeout: float, wire: bytes | None = None) -> Answer:
    """``request`` on a new connection, read while it is written; ``timeout`` bounds the whole exchange."""
    wire = request.wire() if wire is None else wire
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    started = time.perf_counter()
    deadline = started + timeout

    def write() -> None:
        # OSError: the server answered and closed; the reader has (or will report) its answer
        with contextlib.suppress(OSError):
            sock.sendall(wire)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        payload = response.read()
        return Answer(response.status, time.perf_counter() - started, payload)
    except TimeoutError:
        return Answer("timeout", time.perf_counter() - started)
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        kind = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        return Answer(kind, time.perf_counter() - started)
    finally:
        sock.close()
        writer.join(max(0.0, deadline - time.perf_counter()) + 1)


def normal(port: int, timeout: float = 60) -> Answer:
    """One single-row V2 JSON request on a new keep-alive connection (what a client does next)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("POST", INFER, NORMAL_BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        return Answer(response.status, time.perf_counter() - started, payload)
    except TimeoutError:
        return Answer("timeout", time.perf_counter() - started)
    except (ConnectionError, http.client.HTTPException, OSError):
        return Answer("refused/closed", time.perf_counter() - started)
    finally:
        conn.close()


# -- the cases ------------------------------------------------------------------------------------------------


def gzip_bomb(inflated: int = 1024 * MiB) -> bytes:
    """``inflated`` bytes of zeros, gzip-compressed (~1 MB per GiB), made in 1 MiB steps."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join([deflate.compress(zeros) for _ in range(inflated // MiB)] + [deflate.flush()])


def binary_request(rows: int, **values: float) -> tuple[bytes, dict[str, str]]:
    """``rows`` copies of the canonical row as binary tensors (what tritonclient sends), values replaced."""
    inputs, tail = [], []
    for name in FEATURES:
        if name in CATEGORICAL_FEATURES:
            raw = str(CANONICAL_ROW[name]).encode()
            chunk, datatype = (struct.pack("<I", len(raw)) + raw) * rows, "BYTES"
        else:
            chunk = np.full(rows, values.get(name, CANONICAL_ROW[name]), dtype="<f8").tobytes()
            datatype = "FP64"
        inputs.append(
            {
                "name": name,
                "shape": [rows],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
        tail.append(chunk)
    head = json.dumps({"inputs": inputs}).encode()
    return head + b"".join(tail), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def oversized_body(size: int) -> bytes:
    """A well-formed V2 JSON request of at least ``size`` bytes: the canonical row and a long extra input."""
    values = (size - len(NORMAL_BODY)) // 4 + 1
    filler = b'{"name":"filler","shape":[%d],"datatype":"FP64","data":[' % values
    filler += b"1.5," * (values - 1) + b"1.5]}"
    return NORMAL_BODY[: NORMAL_BODY.rindex(b"]")] + b"," + filler + b"]}"


def nested_request(depth: int = 600) -> bytes:
    doc = json.loads(NORMAL_BODY)
    data: object = [CANONICAL_ROW["median_income"]]
    for _ in range(depth - 1):
        data = [data]
    for item in doc["inputs"]:
        if item["name"] == "median_income":
            item["data"] = data
    return json.dumps(doc).encode()


def cases(max_body_bytes: int) -> list[Request]:
    """The hostile cases, in the order they are sent (the unload last: on MLServer the model stops answering)."""
    big, big_headers = binary_request(BIG_ROWS)
    nan, nan_headers = binary_request(1, median_income=float("nan"))
    bomb = gzip_bomb()
    oversize = oversized_body(max_body_bytes + 4 * MiB)
    return [
        Request(
            "gzip_bomb",
            f"gzip body of {len(bomb) / MiB:.1f} MiB inflating to 1 GiB of zeros",
            body=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ),
        Request(
            "oversize",
            f"JSON body of {len(oversize) / MiB:.0f} MiB (limit {max_body_bytes / MiB:.0f} MiB)",
            body=oversize,
        ),
        Request(
            "rows_200k",
            f"{BIG_ROWS:,} rows, binary tensors ({len(big) / MiB:.0f} MiB)",
            body=big,
            headers=big_headers,
        ),
        Request("nested_600", "`data` nested 600 lists deep", body=nested_request(600)),
        Request("nan_binary", "NaN in a binary FP64 input (median_income)", body=nan, headers=nan_headers),
        Request(
            "unload",
            f"POST /v2/repository/models/{MODEL_NAME}/unload (empty body)",
            path=f"/v2/repository/models/{MODEL_NAME}/unload",
        ),
    ]


# -- each case alone ------------------------------------------------------------------------------------------


def table(
    port: int,
    pid: Callable[[], int],
    alive: Callable[[], bool],
    restart: Callable[[], bool],
    requests: list[Request],
    timeout: float,
) -> list[dict]:
    """Each request alone, then a normal one; a server that stopped answering normally is restarted (said so)
    before the next case. ``pid``/``alive`` follow the current server process, ``restart`` starts a new one."""
    rows = []
    normal(port)  # warm
    for request in requests:
        wire = request.wire()
        with Memory(pid()) as memory:
            answer = send(port, request, timeout, wire)
            after = normal(port, timeout)
        up = alive()
        row = {
            "case": request.name,
            "what": request.what,
            "status": answer.status,
            "seconds": round(answer.seconds, 3),
            "answer": _summary(answer.body),
            "rss_before_mb": round(memory.before_mb, 1),
            "rss_growth_mb": memory.growth_mb,
            "next_status": after.status,
            "next_ms": round(after.seconds * 1000, 2),
            "up": up,
            "restarted": False,
        }
        if not up or after.status != 200:
            row["restarted"] = restart()
        rows.append(row)
    return rows


def _summary(body: bytes, limit: int = 140) -> str:
    """An answer's error message (or the first characters of what came back)."""
    if not body:
        return "(empty body)"
    try:
        doc = json.loads(body)
    except ValueError:
        text = body[:limit].decode("utf-8", "replace")
        return text + ("…" if len(body) > limit else "")
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])[:limit]
    if isinstance(doc, dict) and "outputs" in doc:
        return f"prices for {doc['outputs'][0].get('shape', ['?'])[0]} rows"
    return json.dumps(doc)[:limit]


# -- hostile and normal load at once --------------------------------------------------------------------------


def under_load(
    port: int,
    pid: int,
    hostile: list[Request],
    seconds: float,
    interval: float = 0.0,
    concurrency: int = 4,
    timeout: float = 60,
    max_requests: int = 50_000,
) -> tuple[dict, list[float]]:
    """``concurrency`` clients sending single-row requests for ``seconds`` while one thread per hostile request
    sends it again and again: at most every ``interval`` s (0: as soon as the previous one is answered);
    (summary, the normal requests' latencies in s)."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[dict[str, int]] = [{} for _ in range(concurrency)]
    sent: dict[str, dict[str, int]] = {r.name: {} for r in hostile}
    hostile_seconds: dict[str, list[float]] = {r.name: [] for r in hostile}

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while not stop.is_set() and len(latencies[i]) + sum(failures[i].values()) < max_requests:
            started = time.perf_counter()
            try:
                conn.request("POST", INFER, NORMAL_BODY, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                status: int | str = response.status
            except TimeoutError:
                status = "timeout"
            except (ConnectionError, http.client.HTTPException, OSError):
                status = "closed"
            if status == 200:
                latencies[i].append(time.perf_counter() - started)
            else:
                failures[i][str(status)] = failures[i].get(str(status), 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                time.sleep(0.01)  # a server that is down: do not spin
        conn.close()

    def attacker(request: Request) -> None:
        wire = request.wire()
        while not stop.is_set():
            began = time.perf_counter()
            answer = send(port, request, timeout, wire)
            counts = sent[request.name]
            counts[str(answer.status)] = counts.get(str(answer.status), 0) + 1
            hostile_seconds[request.name].append(answer.seconds)
            stop.wait(max(0.0, interval - (time.perf_counter() - began)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    threads += [threading.Thread(target=attacker, args=(r,)) for r in hostile]
    with Memory(pid) as memory:
        started = time.perf_counter()
        for t in threads:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join(timeout + 5)
        wall = time.perf_counter() - started
        after_kb = memory._rss_kb()
    ok = [x for per in latencies for x in per]
    failed: dict[str, int] = {}
    for per in failures:
        for k, v in per.items():
            failed[k] = failed.get(k, 0) + v
    ms = np.asarray(ok or [np.nan]) * 1000
    summary = {
        "seconds": round(wall, 1),
        "concurrency": concurrency,
        "ok": len(ok),
        "failed": sum(failed.values()),
        "failures": failed,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 1),
        "throughput_rps": round(len(ok) / wall, 1),
        "rss_before_mb": round(memory.before_mb, 1),
        "peak_rss_mb": round(memory.peak_mb, 1),
        "rss_growth_mb": memory.growth_mb,
        "rss_after_mb": round(after_kb / 1024, 1),
        "interval_s": interval if hostile else None,
        "hostile": {
            name: {
                "sent": sum(counts.values()),
                "answers": counts,
                "p50_s": round(float(np.median(hostile_seconds[name])), 2) if hostile_seconds[name] else None,
            }
            for name, counts in sent.items()
        },
    }
    return summary, ok
