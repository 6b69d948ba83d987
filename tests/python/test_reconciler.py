"""The reconciler: the InferenceService's pin (its housing-mlops.io/model-version annotation; the chart renders the
constant storageUri mlflow://<MLflow>/<model>/pinned) follows the alias (lifecycle.reconcile_once), round after round
(reconciler.run, `housing-mlops reconcile --interval`), against the real local MLflow and the fake API server.

One registered model of its own (three small versions); the last tests delete one's artifacts, then the version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import fake_kube
import pytest
from conftest import free_port
from housing_mlops import cli as cli_module
from housing_mlops import lifecycle, reconciler, registry
from housing_mlops.cli import main as cli_main
from housing_mlops.errors import ConfigError, Gone, ServiceUnavailable
from mlflow import MlflowClient
from mlflow.utils.request_utils import _cached_get_request_session

MODEL = "reconcile-model"
ISVC = "housing-model"


@pytest.fixture(scope="module")
def versions(stack, dvc_repo: Path, pushed: str) -> list[str]:
    """Three versions of MODEL (small fits), version 1 promoted to @production by `promote --version`."""
    for i in range(3):
        argv = ["train", "--model-name", MODEL, "--repo", str(dvc_repo), "--data", pushed, "--max-iter", "10",
                "--trigger", f"reconcile-{i}"]  # fmt: skip
        assert cli_main(argv) == 0
    assert cli_main(["promote", "--model-name", MODEL, "--version", "1"]) == 0
    return ["1", "2", "3"]


@pytest.fixture(scope="module")
def prefix(stack) -> str:
    return f"mlflow://127.0.0.1:{stack.mlflow_port}/"


@pytest.fixture(scope="module")
def rendered(prefix: str) -> str:
    """The storageUri the chart renders in alias mode (constant: the version is the pin annotation)."""
    uri = f"{prefix}{MODEL}/pinned"
    assert lifecycle.pinned_uri(prefix, MODEL) == uri == lifecycle.pinned_uri(prefix.rstrip("/"), MODEL)
    return uri


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rendered: str) -> Iterator[fake_kube.FakeCluster]:
    cluster_gen = fake_kube.serve(tmp_path / "sa", monkeypatch)
    cluster = next(cluster_gen)
    cluster.add_isvc(ISVC, uri=rendered)  # as the chart renders it: never pinned
    yield cluster
    next(cluster_gen, None)


def _round(prefix: str, alias: str = "production") -> str:
    return lifecycle.reconcile_once(MODEL, alias, ISVC, None, prefix)


def _move(version: str) -> None:
    """A person moves the alias (MLflow UI, API, CLI): no job records who."""
    MlflowClient().set_registered_model_alias(MODEL, "production", version)


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_reconcile_pins_the_alias_version_and_leaves_a_pin_in_sync_alone(
    api, versions, prefix, rendered
) -> None:
    started = time.monotonic()
    did = _round(prefix)
    first = time.monotonic() - started
    assert did == "pinned version 1 (was None; @production moved by trigger:cli)"
    assert api.pin_of(ISVC) == ("1", rendered)  # the annotation; the storageUri stays what Helm rendered
    (patch,) = api.patches()
    assert patch.body == {"spec": {"predictor": {"annotations": {"housing-mlops.io/model-version": "1"}}}}

    timings = []
    for _ in range(5):
        started = time.monotonic()
        assert _round(prefix) == "in sync: version 1"
        timings.append(time.monotonic() - started)
    assert len(api.patches()) == 1  # nothing patched while in sync
    print(f"reconcile round: {first * 1000:.0f} ms pinning, {1000 * sum(timings) / len(timings):.0f} ms in sync "
          f"(mean of {len(timings)}; one GET to MLflow, one to the API server)")  # fmt: skip


NOT_OURS = {
    "none (a multi-model server to KServe)": None,
    "an exact version (the former design's pin)": "mlflow://127.0.0.1:{port}/reconcile-model/1",
    "another release's MLflow": "mlflow://old-mlflow:5000/reconcile-model/pinned",
    "another model": "mlflow://127.0.0.1:{port}/housing-model/pinned",
    "the alias": "mlflow://127.0.0.1:{port}/reconcile-model@production",
    "s3 (the chart's pinned mode)": "s3://models/housing-model/1",
}


@pytest.mark.parametrize("uri", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_an_isvc_whose_storage_uri_is_not_the_pinned_uri_is_refused_and_nothing_patched(
    api, versions, prefix, rendered, stack, uri: str | None
) -> None:
    """Its pods would not fetch the pin (another server, a fixed version, an alias): the reconciler names both URIs
    and writes nothing, whatever the annotation says."""
    uri = None if uri is None else uri.format(port=stack.mlflow_port)
    path = api.add_isvc(ISVC, version="2", uri=uri)
    with pytest.raises(ConfigError) as err:
        _round(prefix)
    message = str(err.value)
    assert f"InferenceService {ISVC} has storageUri {uri!r}, not {rendered!r}" in message, message
    assert "would not fetch the pinned version" in message
    assert api.patches() == [] and api.pin_of(ISVC) == ("2", uri)
    assert api.objects[path]["metadata"]["generation"] == 1


def test_the_cli_and_the_loop_refuse_an_isvc_that_is_not_the_pinned_uri(
    cli, api, versions, prefix, rendered
) -> None:
    api.add_isvc(ISVC, uri=f"{prefix}{MODEL}/1")
    code, _, err = cli("reconcile", "--model-name", MODEL, "--isvc-name", ISVC, "--uri-prefix", prefix)
    assert code == 1 and f"not {rendered!r}" in err, err
    health = reconciler.Health(stale_after=60)
    failures = []
    reconciler.run(lambda: _round(prefix), 0.0, health, rounds=2, after_failure=lambda: failures.append(1))
    assert not health.ok() and f"not {rendered!r}" in health.last_error  # unhealthy: a person must fix it
    assert failures == [1, 1] and api.patches() == []


def test_an_alias_moved_by_a_job_or_a_person_is_pinned_and_who_is_recorded(
    cli, api, versions, prefix, rendered
) -> None:
    api.add_isvc(ISVC, version="1", uri=rendered)
    # a job (promote) moves it: it says who it was
    code, out, err = cli("promote", "--model-name", MODEL, "--version", "2", "--max-regression-pct", "1000")
    assert code == 0, out + err
    assert _round(prefix) == "pinned version 2 (was 1; @production moved by trigger:cli)"
    # a person moves it back: recorded as moved from outside, and pinned all the same
    _move("1")
    assert _round(prefix) == "pinned version 1 (was 2; @production moved by outside)"
    assert MlflowClient().get_registered_model(MODEL).tags["alias.production.moved"] == "1 outside"
    assert api.pin_of(ISVC) == ("1", rendered)
    assert _round(prefix) == "in sync: version 1"


def test_a_missing_alias_or_isvc(api, versions, prefix) -> None:
    assert _round(prefix, alias="staging") == "@staging does not exist: pin unchanged"
    assert api.patches() == []
    code = cli_main(
        ["reconcile", "--model-name", MODEL, "--isvc-name", "no-such-isvc", "--uri-prefix", prefix]
    )
    assert code == 1  # NotFound: InferenceService ml/no-such-isvc not found


def test_the_loop_survives_a_bad_round_and_healthz_tells(api, versions, prefix) -> None:
    health = reconciler.Health(stale_after=0.4)
    server = health.serve(free_port())
    port = server.server_address[1]
    try:
        assert _healthz(port) == (503, "no round completed yet\n")
        outcomes = iter(["ok", "MLflow down", "ok", "ok"])
        seen = []

        def round_() -> str:
            outcome = next(outcomes)
            if outcome != "ok":
                raise ServiceUnavailable("MLflow at http://mlflow:5000 did not answer within 60s")
            seen.append(_round(prefix))
            return seen[-1]

        reconciler.run(round_, 0.05, health, rounds=2)  # a good round, then a failed one
        assert health.last_error == "MLflow at http://mlflow:5000 did not answer within 60s"
        assert _healthz(port) == (200, "ok\n")  # the last good round is recent enough
        time.sleep(0.5)
        assert _healthz(port) == (503, "MLflow at http://mlflow:5000 did not answer within 60s\n")  # stale
        _move("2")
        reconciler.run(round_, 0.05, health, rounds=2)  # the loop goes on: the alias's move is pinned
        assert seen == ["pinned version 1 (was None; @production moved by outside)",
                        "pinned version 2 (was 1; @production moved by outside)", "in sync: version 2"]  # fmt: skip
        assert _healthz(port) == (200, "ok\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            pass
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            raise AssertionError("/metrics answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        server.shutdown()
        server.server_close()
        _move("1")


def test_run_calls_after_failure_after_each_failed_round_only() -> None:
    outcomes = iter(["ok", "fail", "ok", "fail", "fail", "ok"])
    events: list[str] = []

    def round_() -> str:
        outcome = next(outcomes)
        events.append(outcome)
        if outcome == "fail":
            raise ServiceUnavailable("MLflow answered 404")
        return "in sync: version 1"

    reconciler.run(round_, 0.0, reconciler.Health(stale_after=60), rounds=6,
                   after_failure=lambda: events.append("after_failure"))  # fmt: skip
    assert events == [
        "ok",
        "fail",
        "after_failure",
        "ok",
        "fail",
        "after_failure",
        "fail",
        "after_failure",
        "ok",
    ]


def test_fresh_connections_empties_mlflows_session_cache(versions) -> None:
    """After a failed round the loop (by default) drops MLflow's cached HTTP sessions: the next round opens new
    connections (a keep-alive connection opened before MLflow served kept answering 404 on the cluster)."""
    client = MlflowClient()
    client.get_registered_model(MODEL)
    assert _cached_get_request_session.cache_info().currsize > 0  # the client call cached a session
    reconciler.fresh_connections()
    assert _cached_get_request_session.cache_info().currsize == 0
    assert client.get_registered_model(MODEL).name == MODEL  # and the client opens a new one
    assert _cached_get_request_session.cache_info().currsize > 0

    health = reconciler.Health(stale_after=60)
    reconciler.run(lambda: client.get_registered_model(MODEL).name, 0.0, health, rounds=1)  # a good round
    assert health.ok() and _cached_get_request_session.cache_info().currsize > 0  # kept

    def failed() -> str:
        client.get_registered_model(MODEL)
        raise ServiceUnavailable("MLflow answered 404")

    reconciler.run(failed, 0.0, health, rounds=1)  # the default after_failure: fresh_connections
    assert health.last_error == "MLflow answered 404"
    assert _cached_get_request_session.cache_info().currsize == 0


def _reconciler_process(prefix: str, health_port: int, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "housing_mlops.cli", "reconcile", "--model-name", MODEL, "--isvc-name", ISVC,
            "--uri-prefix", prefix, "--interval", "0.5", "--health-port", str(health_port)]  # fmt: skip
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ),
                            start_new_session=True)  # fmt: skip


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} after {timeout}s"
        time.sleep(0.1)
    return found


def test_the_reconciler_process_pins_and_a_hook_waits_for_it(
    cli, api, versions, prefix, rendered, tmp_path
) -> None:
    """`reconcile --interval 0.5` as the reconciler Deployment runs it; `promote --isvc-name` returns once the
    reconciler has pinned the version it decided."""
    port, log = free_port(), tmp_path / "reconciler.log"
    proc = _reconciler_process(prefix, port, log)
    try:
        started = time.monotonic()
        _wait(lambda: api.pin_of(ISVC)[0] == "1", 60, f"not pinned to version 1: {log.read_text()}")
        first_pin = time.monotonic() - started  # printed at the end: the cli fixture reads (and drops) output
        assert _wait(lambda: _healthz(port)[0] == 200, 10, "/healthz not 200")

        started = time.monotonic()
        code, out, err = cli("promote", "--model-name", MODEL, "--version", "2", "--max-regression-pct", "1000",
                             "--isvc-name", ISVC, "--isvc-namespace", "ml")  # fmt: skip
        took = time.monotonic() - started
        assert code == 0 and out.startswith(f"promoted: {MODEL} version 2"), out + err
        assert api.pin_of(ISVC) == ("2", rendered)  # pinned before promote returned
        print(f"promote --isvc-name: decided and pinned in {took:.1f}s (reconciler interval 0.5s)")

        started = time.monotonic()
        _move("1")
        _wait(lambda: api.pin_of(ISVC)[0] == "1", 10, "a person's move not pinned")
        print(f"a person's move pinned {time.monotonic() - started:.1f}s later")
        patches = len(api.patches())
        time.sleep(1.5)
        assert len(api.patches()) == patches  # in sync: rounds read, never patch
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    text = log.read_text()
    assert "moved by outside" in text and "Traceback" not in text, text
    print(
        f"reconciler process: version 1 pinned {first_pin:.1f}s after it started (interpreter start included)"
    )


def test_a_hook_whose_reconciler_is_down_names_it(cli, api, versions, rendered, monkeypatch) -> None:
    api.add_isvc(ISVC, version="1", uri=rendered)
    monkeypatch.setattr(cli_module, "PIN_WAIT_S", 1.0)
    code, _, err = cli("rollback", "--model-name", MODEL, "--isvc-name", ISVC)
    assert code == 1, err
    assert "InferenceService housing-model is still pinned to version 1 after 1s, not 2" in err, err
    assert "is the reconciler running?" in err
    _move("1")


def test_a_version_whose_artifacts_are_gone_is_never_pinned(cli, api, versions, prefix, rendered) -> None:
    api.add_isvc(ISVC, version="1", uri=rendered)
    bucket, _, key = registry.physical_uri(MODEL, "3").removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key + "/")["Contents"]
    assert any(o["Key"].endswith("/MLmodel") for o in listed)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
    _move("3")
    with pytest.raises(
        Gone, match=rf"@production names version 3: the artifacts of '{MODEL}' version 3 .* are gone"
    ):
        _round(prefix)
    assert api.pin_of(ISVC) == ("1", rendered) and api.patches() == []
    # the CLI's one round: exit 6; the loop counts it as a healthy round (MLflow and the API answered)
    code, _, err = cli("reconcile", "--model-name", MODEL, "--isvc-name", ISVC, "--uri-prefix", prefix)
    assert code == 6 and "are gone; nothing changed" in err, err
    health = reconciler.Health(stale_after=60)
    reconciler.run(lambda: _round(prefix), 0.0, health, rounds=1)
    assert health.ok() and "are gone" in health.last_error
    # the version deleted too: MLflow drops its alias, and the pin stays
    MlflowClient().delete_model_version(MODEL, "3")
    assert _round(prefix) == "@production does not exist: pin unchanged"
    assert api.pin_of(ISVC) == ("1", rendered) and api.patches() == []


def test_an_unreachable_s3_is_not_a_gone_version(versions, monkeypatch) -> None:
    from housing_mlops.errors import HousingError

    dead = f"http://127.0.0.1:{free_port()}"
    for var in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(var, dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(HousingError) as err:
        lifecycle.check_restorable(MODEL, "1", "@production names version 1")
    assert not isinstance(err.value, Gone), err.value  # exit 1, retried; never the verdict "gone" (exit 6)
    assert "cannot list the artifacts" in str(err.value)
