"""The e2e's in-pod checks (tests/images/services/e2e_probe.py), against real servers on loopback.

The CLI runs as a subprocess for its exit codes and result files; its functions are imported by path for the
timing-sensitive TCP cases (with short intervals) and the parser. No mocks: a listening or closed socket, and
one small HTTP server for both the Prometheus endpoint and the V2 endpoint, counting the connections it takes.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from housing_mlops.schema import CANONICAL_REQUEST

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tests" / "images" / "services" / "e2e_probe.py"
DOCKERFILE = TOOL.parent / "Dockerfile"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_probe", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


probe = _load()


def run(tmp_path: Path, *args: str, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """Run the CLI; (exit code, the result file's JSON), checking stdout printed the same object."""
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--result", str(result), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    written = json.loads(result.read_text())
    assert json.loads(proc.stdout) == written, proc.stderr
    assert len(result.read_bytes()) < 4096
    return proc.returncode, written


# --- the tool itself ---------------------------------------------------------------------------------------


def test_canonical_request_is_the_packages() -> None:
    assert probe.CANONICAL_REQUEST == CANONICAL_REQUEST


def test_price_bounds_are_the_infer_commands() -> None:
    """A sane price means the same in the e2e's probe as in `housing-mlops infer` (helm test)."""
    from housing_mlops.cli import cli

    infer = cli.commands["infer"]
    defaults = {p.name: p.default for p in infer.params}
    assert (defaults["min_price"], defaults["max_price"]) == (probe.MIN_PRICE, probe.MAX_PRICE)


def test_stdlib_only_and_executable() -> None:
    tree = ast.parse(TOOL.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    outside = {
        name for name in imported if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
    }
    assert not outside
    assert TOOL.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(TOOL, os.X_OK)


def test_image_ships_it() -> None:
    final_stage = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1]
    assert "COPY tests/images/services/e2e_probe.py /usr/local/bin/e2e_probe.py" in final_stage


def test_usage_error_exits_64_without_result(tmp_path: Path) -> None:
    for args in (["v2", "not-a-url", "--model", "m"], ["v2", "http://x", "--model", "m", "--count", "0"], []):
        proc = subprocess.run(
            [sys.executable, str(TOOL), "--result", str(tmp_path / "r"), *args],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 64, args
    assert not (tmp_path / "r").exists()


def test_result_also_accepted_after_the_subcommand(tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "tcp", "does-not-exist.invalid", "80", "--result", str(result)],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 2
    assert json.loads(result.read_text())["state"] == "unresolved"


def test_oversized_result_is_replaced_in_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = {"check": "metrics", "counters": {f"c{i}_{'x' * 60}_total": 1.0 for i in range(100)}}
    probe.emit(big, str(tmp_path / "r"))
    assert json.loads(capsys.readouterr().out) == big
    written = json.loads((tmp_path / "r").read_text())
    assert written["check"] == "metrics"
    assert written["truncated"] is True


# --- tcp ---------------------------------------------------------------------------------------------------


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    """A socket bound to a free loopback port and not listening: connects are refused until listen()."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_tcp_open(tmp_path: Path, bound: socket.socket) -> None:
    bound.listen(64)
    code, result = run(tmp_path, "tcp", "127.0.0.1", str(_port(bound)))
    assert code == 0
    assert result["check"] == "tcp"
    assert result["port"] == _port(bound)
    assert result["state"] == "open"
    assert result["seen_open"] is True
    assert result["detail"] == f"127.0.0.1:{_port(bound)} open"


def test_tcp_blocked(tmp_path: Path, bound: socket.socket) -> None:
    code, result = run(tmp_path, "tcp", "127.0.0.1", str(_port(bound)), "--want", "blocked", "--hold", "0.5")
    assert code == 1
    assert result["state"] == "blocked"
    assert result["seen_open"] is False
    assert "blocked for 0.5 s" in result["detail"]
    assert 0.5 <= result["elapsed_s"] < 5


def test_tcp_open_wanted_but_closed_fails_after_within(tmp_path: Path, bound: socket.socket) -> None:
    code, result = run(tmp_path, "tcp", "127.0.0.1", str(_port(bound)), "--within", "0")
    assert code == 1
    assert result["state"] == "blocked"


def test_tcp_unresolvable(tmp_path: Path) -> None:
    code, result = run(tmp_path, "tcp", "does-not-exist.invalid", "80", "--want", "blocked")
    assert code == 2
    assert result["state"] == "unresolved"
    assert result["host"] == "does-not-exist.invalid"
    assert "does not resolve" in result["detail"]


def _later(delay: float, action: Any) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_tcp_blocked_open_at_first_then_closed(bound: socket.socket) -> None:
    """The NetworkPolicy applies after the pod starts: the failing streak starts once the port closes."""
    bound.listen(64)
    timer = _later(0.4, bound.close)
    code, result = probe.probe_tcp(
        "127.0.0.1", _port(bound), "blocked", hold=0.3, within=5, interval=0.05, connect_timeout=1
    )
    timer.join()
    assert code == 1
    assert result["state"] == "blocked"
    assert result["seen_open"] is True
    assert 0.7 <= result["elapsed_s"] < 2


def test_tcp_blocked_success_resets_the_streak(bound: socket.socket) -> None:
    """Refused, then open before HOLD is reached: not blocked; still open after WITHIN is exit 0."""
    timer = _later(0.2, lambda: bound.listen(64))
    code, result = probe.probe_tcp(
        "127.0.0.1", _port(bound), "blocked", hold=0.5, within=1.0, interval=0.05, connect_timeout=1
    )
    timer.join()
    assert code == 0
    assert result["state"] == "open"
    assert result["seen_open"] is True
    assert "still after 1 s" in result["detail"]
    assert 1.0 <= result["elapsed_s"] < 2


def test_tcp_open_wanted_waits_for_the_port(bound: socket.socket) -> None:
    timer = _later(0.2, lambda: bound.listen(64))
    code, result = probe.probe_tcp("127.0.0.1", _port(bound), within=5, interval=0.05, connect_timeout=1)
    timer.join()
    assert code == 0
    assert result["state"] == "open"
    assert 0.2 <= result["elapsed_s"] < 2


# --- an HTTP server: /metrics and the V2 endpoint ----------------------------------------------------------

METRICS = r"""# HELP model_infer_request_success_total Successful inference requests.
# TYPE model_infer_request_success_total counter
model_infer_request_success_total{model="housing",path="/v2/models/housing, infer"} 1e+03
model_infer_request_success_total{model="housing",note="a \"quoted\" value, with } and = in it",} 2
model_infer_request_success_total { model = "other" , code="200" } 3 1700000000000
model_infer_request_success_created{model="housing"} 1.7e+09
# TYPE model_infer_request_failure_total counter
model_infer_request_failure_total{model="housing"} 0
# TYPE housing_inference_rows_total counter
housing_inference_rows_total{model="housing",version="3"} 40
housing_inference_rows_total{model="housing",version="4"} 2
# a comment line
http_requests{code="200"} 7
process_start_time_seconds 1.7e9
gauge_nan NaN
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    bodies: list[Any]

    def process_request(self, request: Any, client_address: Any) -> None:
        type(self).connections += 1
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive allowed: only the client decides to use a new connection
    served = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, METRICS.encode(), "text/plain; version=0.0.4")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert isinstance(self.server, _Server)
        self.server.bodies.append(request)
        model = self.path.removeprefix("/prefix").removeprefix("/v2/models/").removesuffix("/infer")
        type(self).served += 1
        if model == "broken":
            self._send(500, b'{"error": "' + b"model crashed " * 40 + b'"}')
            return
        version, price = {
            "housing": (str(1 + type(self).served % 2), 452_600.0),
            "wild": ("3", 5_500_000.0),
            "mute": ("4", None),
            "many": (f"v{type(self).served}", 100_000.0),
        }[model]
        body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": []}
        if price is not None:
            body["outputs"] = [{"name": "predictions", "shape": [1], "datatype": "FP64", "data": [price]}]
        self._send(200, json.dumps(body).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.bodies = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: _Server, path: str = "") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


# --- metrics -----------------------------------------------------------------------------------------------


def test_parse_sample_labels_with_spaces_commas_quotes() -> None:
    line = r'm_total{a="x, y",b="say \"hi\" } ok",c="back\\slash\nnl",} 1e+03 123'
    assert probe.parse_sample(line) == (
        "m_total",
        {"a": "x, y", "b": 'say "hi" } ok', "c": "back\\slash\nnl"},
        1000.0,
    )
    assert probe.parse_sample("up 1") == ("up", {}, 1.0)
    assert probe.parse_sample("x +Inf")[2] == float("inf")
    for bad in ('m{a="x} 1', "m{a=x} 1", "m", "9m 1", "m notanumber"):
        with pytest.raises(ValueError):
            probe.parse_sample(bad)


def test_counter_sums() -> None:
    sums = probe.parse_metrics(METRICS)
    assert probe.counter_sum(sums, "model_infer_request_success_total") == 1005
    assert probe.counter_sum(sums, "model_infer_request_success") == 1005  # not the _created samples
    assert probe.counter_sum(sums, "http_requests_total") == 7  # a client that exposes no _total
    assert probe.counter_sum(sums, "model_infer_request_failure_total") == 0
    assert probe.counter_sum(sums, "gauge_nan") is None
    assert probe.counter_sum(sums, "missing_total") is None


def test_metrics_default_counter(tmp_path: Path, server: _Server) -> None:
    code, result = run(tmp_path, "metrics", _url(server, "/metrics"))
    assert code == 0
    assert result == {
        "check": "metrics",
        "url": _url(server, "/metrics"),
        "counters": {"housing_inference_rows_total": 42.0},
        "detail": "all counters > 0",
    }


def test_metrics_zero_or_missing_counter_fails(tmp_path: Path, server: _Server) -> None:
    names = ["model_infer_request_success_total", "model_infer_request_failure_total", "missing_total"]
    code, result = run(tmp_path, "metrics", _url(server, "/metrics"), *(f"--counter={n}" for n in names))
    assert code == 1
    assert result["counters"] == {names[0]: 1005.0, names[1]: 0.0, names[2]: None}
    assert result["detail"] == f"missing or zero: {names[1]}, {names[2]}"


def test_metrics_unreadable(tmp_path: Path, server: _Server, bound: socket.socket) -> None:
    for url in (_url(server, "/nope"), f"http://127.0.0.1:{_port(bound)}/metrics"):
        code, result = run(tmp_path, "metrics", url)
        assert code == 3
        assert result["counters"] == {"housing_inference_rows_total": None}
        assert result["detail"].startswith(f"cannot read {url}")


# --- v2 ----------------------------------------------------------------------------------------------------


def test_v2_new_connection_per_request_versions_alternate(tmp_path: Path, server: _Server) -> None:
    before, bodies = _Server.connections, len(server.bodies)
    code, result = run(tmp_path, "v2", _url(server), "--model", "housing", "--count", "6")
    assert code == 0
    assert result == {
        "check": "v2",
        "url": _url(server),
        "model": "housing",
        "answers": 6,
        "failed": 0,
        "versions": {"1": 3, "2": 3},
        "prices": {"1": 452600.0, "2": 452600.0},
        "errors": [],
    }
    assert _Server.connections - before == 6
    assert server.bodies[bodies:] == [CANONICAL_REQUEST] * 6


def test_v2_url_path_prefix_and_trailing_slash(tmp_path: Path, server: _Server) -> None:
    code, result = run(tmp_path, "v2", _url(server, "/prefix/"), "--model", "wild", "--max-price", "6000000")
    assert code == 0
    assert result["versions"] == {"3": 1}


def test_v2_http_500_fails(tmp_path: Path, server: _Server) -> None:
    code, result = run(tmp_path, "v2", _url(server), "--model", "broken", "--count", "2")
    assert code == 1
    assert result["failed"] == 2
    assert result["versions"] == {}
    assert result["prices"] == {}
    assert [e.split(":")[0] for e in result["errors"]] == ["answer 1", "answer 2"]
    assert all(" HTTP 500: " in e and len(e) <= 200 for e in result["errors"])


def test_v2_price_out_of_range_fails(tmp_path: Path, server: _Server) -> None:
    code, result = run(
        tmp_path, "v2", _url(server), "--model", "wild", "--min-price", "1", "--max-price", "1000000"
    )
    assert code == 1
    assert result["failed"] == 1
    assert result["versions"] == {"3": 1}
    assert result["prices"] == {"3": 5500000.0}
    assert result["errors"] == ["answer 1 (version 3): price 5500000.0 outside [1, 1e+06]"]


def test_v2_answer_without_price_fails(server: _Server) -> None:
    code, result = probe.check_v2(_url(server), "mute")
    assert code == 1
    assert result["versions"] == {"4": 1}
    assert "no numeric outputs[0].data[0]" in result["errors"][0]


def test_v2_unreachable_fails(bound: socket.socket) -> None:
    code, result = probe.check_v2(f"http://127.0.0.1:{_port(bound)}", "housing", 3)
    assert code == 1
    assert result["failed"] == 3
    assert result["errors"][0].startswith("answer 1: ConnectionRefusedError")


def test_v2_versions_beyond_the_limit_count_as_other(server: _Server) -> None:
    code, result = probe.check_v2(_url(server), "many", probe.MAX_VERSIONS + 4)
    assert code == 0
    assert len(result["versions"]) == probe.MAX_VERSIONS + 1
    assert result["versions"][probe.OTHER] == 4
    assert sum(result["versions"].values()) == result["answers"]


def test_v2_result_stays_small_for_200_failing_requests(server: _Server) -> None:
    start = time.monotonic()
    code, result = probe.check_v2(_url(server), "broken", 200)
    assert code == 1
    assert result["failed"] == 200
    assert len(result["errors"]) == probe.MAX_ERRORS
    assert len(json.dumps(result)) < 4096
    assert time.monotonic() - start < 10
