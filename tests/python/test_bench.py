"""bench/'s own pieces, fast (`make bench` itself is not part of `make test`): the report renders a run's results
with and without the MLServer contenders, the hostile-request client hears a server that refuses a body before
reading it, and the memory sampler sees a peak."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import hostile
import run

MiB = 1024 * 1024


def serving_result(p50: float) -> dict:
    return {
        "p50_ms": p50,
        "p95_ms": p50 * 2,
        "p99_ms": p50 * 3,
        "mean_ms": p50,
        "throughput_rps": 1000 / p50,
        "c8": {"p50_ms": 7.0, "p95_ms": 9.0, "p99_ms": 12.0, "mean_ms": 7.5, "throughput_rps": 1000.0},
        "batch_rows_per_s": 17_000.0,
        "batch_p50_ms": 5.0,
        "startup_s": 6.0,
        "requests": 2100,
        "grpc": {"requests": 1000, "p50_ms": p50 * 1.2, "p95_ms": 2.0, "p99_ms": 3.0, "mean_ms": 1.3},
    }


def results(with_legacy: bool) -> dict:
    row = {
        "case": "gzip_bomb",
        "what": "gzip body | 1 GiB",
        "status": 413,
        "seconds": 0.4,
        "answer": "too large",
        "rss_before_mb": 200.0,
        "rss_growth_mb": 35.0,
        "next_status": 200,
        "next_ms": 1.5,
        "up": True,
        "restarted": False,
    }
    phase = {
        "seconds": 15.0,
        "concurrency": 4,
        "ok": 9000,
        "failed": 2,
        "failures": {"timeout": 2},
        "p50_ms": 3.0,
        "p99_ms": 20.0,
        "max_ms": 80.0,
        "throughput_rps": 600.0,
        "rss_before_mb": 200.0,
        "peak_rss_mb": 260.0,
        "rss_growth_mb": 60.0,
        "hostile": {"gzip_bomb": {"sent": 40, "answers": {"413": 40}, "p50_s": 0.3}},
        "up_after": True,
    }
    serving = {
        "requests_per_series": 1000,
        "rounds": 4,
        "batch_rows": 100,
        "binary": {
            "rows": 10_000,
            "repeats": 12,
            **{
                k: {"p50_ms": 100.0, "request_bytes": 700_000} for k in ("json", "binary_in", "binary_in_out")
            },
            "json_over_binary_in_out_p50": 1.0,
        },
        "split": {
            "predict": 0.3,
            "checks": 0.35,
            "parse_encode": 0.45,
            "asgi": 0.5,
            "thread_hop": 0.6,
            "http": 1.2,
            "http_live": 0.4,
            "requests_per_stage": 1000,
        },
        "hostile": {"ours": [row]},
        "under_load": {"ours": {"normal": phase, "paced": phase, "flood": phase}},
        "startup_alone": {"ours": 4.0},
        "skipped": {} if with_legacy else {"legacy": "skipped: no uv", "stock": "skipped: no uv"},
        "grpc_errors": {},
        "ours": serving_result(1.2),
        "floor": {"p50_ms": 0.3, "p95_ms": 0.4, "p99_ms": 0.5, "batch_rows_per_s": 27_000.0},
    }
    if with_legacy:
        serving["legacy"] = serving_result(1.3)
        serving["hostile"]["legacy"] = [{**row, "up": True, "next_status": 404, "restarted": True}]
        serving["under_load"]["legacy"] = {"error": "the server is down and did not restart"}
        serving["startup_alone"]["legacy"] = 9.0
    serving["ratios"] = run.ratios(serving)
    return {
        "images": {
            "ours": {"image": "x:1", "size_mb": 690, "created": "2026", "revision": "abc", "current": False},
            "legacy": {"image": "y:1", "error": "not built"},
        },
        "load_before": [1.0, 1.0, 1.0],
        "machine": {
            "date": "today",
            "cpus": 2,
            "platform": "linux",
            "python": "3.11",
            "loadavg": [1.0, 1.0, 1.0],
            "threadpools": ["openblas:x"],
            "versions": {"kserve": "0.21.0"},
        },
        "serving": serving,
        "demo": {"ok": False, "error": "skipped (--skip-demo)"},
        "model": {
            "data": "synthetic",
            "seed": {"rmse": 50_000.0, "mae": 30_000.0, "r2": 0.8, "train_s": 3.0},
            "ours": {"rmse": 41_000.0, "mae": 27_000.0, "r2": 0.87, "train_s": 1.0},
        },
        "cluster": None,
    }


@pytest.mark.parametrize("with_legacy", [True, False])
def test_the_report_renders(with_legacy: bool) -> None:
    text = run.report(results(with_legacy))
    assert "## Hostile requests, each alone" in text and "## Hostile and normal load at once" in text
    assert "## From the floor to HTTP" in text and "**stale**" in text
    assert "gzip body \\| 1 GiB" in text  # a | in a cell is escaped
    if with_legacy:
        assert "| ours/legacy p50, c=1 | 0.92× | ≤ 1.05× | yes |" in text
        assert "process up, **model not answering** (restarted)" in text
    else:
        assert "legacy skipped: no uv" in text


def test_a_body_refused_before_it_is_read_is_heard() -> None:
    """A server that answers 413 from the headers and closes: the client still reads the 413 (8 MiB body,
    more than the socket buffers hold)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    answer = hostile.send(port, hostile.Request("big", "8 MiB", body=b"x" * (8 * MiB)), timeout=30)
    thread.join(10)
    listener.close()
    assert answer.status == 413, answer


def test_memory_sees_a_peak_between_samples() -> None:
    with hostile.Memory(os.getpid(), interval=10) as memory:  # no sample in time: VmHWM has it
        block = b"x" * (64 * MiB)
        del block
    assert memory.growth_mb >= 50, memory.growth_mb
