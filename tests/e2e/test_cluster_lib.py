"""The cluster e2e's framework (tests/cluster/lib), the parts that run without a cluster: the one wait, the
timings file, the setup file, what counts as left over, where diagnostics go, the port-forward handshake."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cluster.lib import diagnostics, kube, leftovers, setup
from cluster.lib.wait import NotYet, wait_until


def test_wait_returns_the_first_passing_value() -> None:
    answers = iter([None, False, 0, "ready"])
    assert wait_until(lambda: next(answers), what="ready", timeout=5, interval=0) == "ready"


def test_wait_holds_needs_consecutive_passes() -> None:
    seen = []
    answers = iter([True, False, True, True, True])

    def check() -> bool:
        seen.append(1)
        return next(answers)

    assert wait_until(check, what="stable", timeout=5, interval=0, holds=3)
    assert len(seen) == 5, "a failure in between restarts the count"


def test_wait_times_out_naming_what_and_the_last_reason() -> None:
    def check() -> None:
        raise NotYet("2 of 3 replicas ready")

    started = time.monotonic()
    with pytest.raises(
        TimeoutError, match=r"waiting until the rollout is done \(last: 2 of 3 replicas ready\)"
    ):
        wait_until(check, what="the rollout is done", timeout=0.3, interval=0.05)
    assert time.monotonic() - started < 2


def test_wait_counts_assertions_as_not_yet_and_propagates_real_errors() -> None:
    calls = iter([AssertionError("not yet"), "ok"])

    def check() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(check, what="ok", timeout=5, interval=0) == "ok"

    def broken() -> None:
        raise KeyError("status")

    with pytest.raises(KeyError):
        wait_until(broken, what="never", timeout=5, interval=0)


def test_timings_merge_the_setup_steps_first(tmp_path: Path) -> None:
    (tmp_path / "setup-timings.json").write_text(
        '{"provider": "local", "phases_s": {"images": 56, "cluster": 106}}'
    )
    timings = setup.Timings(tmp_path)
    timings.add("install", 55.46)
    timings.add("install", 1.0)
    timings.write("local", "passed")
    written = json.loads((tmp_path / "timings.json").read_text())
    assert written["phases_s"] == {"images": 56, "cluster": 106, "install": 56.5}
    assert list(written["phases_s"]) == ["images", "cluster", "install"]
    assert (written["provider"], written["result"]) == ("local", "passed")
    assert written["total_s"] >= 162


def test_setup_file_missing_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make e2e-setup"):
        setup.Setup.load(tmp_path)


def test_setup_file_is_read(tmp_path: Path) -> None:
    keys = (
        "PROVIDER=local",
        "KUBECONFIG=/k",
        "VERSION=0.1.0",
        "MLFLOW_IMAGE=m",
        "JOBS_IMAGE=j",
        "SERVING_IMAGE=s",
        "TEST_SERVICES_IMAGE=t",
        "HELM=/h",
        "HELM3=/h3",
        "REGISTRY_ADDR=127.0.0.1:5000",
        "PUBLISH_DIR=/p",
        "COSIGN=/c",
    )
    (tmp_path / "setup.env").write_text("\n".join(keys) + "\n")
    loaded = setup.Setup.load(tmp_path)
    assert (loaded.provider, loaded.kubeconfig, loaded.registry_addr) == (
        "local",
        Path("/k"),
        "127.0.0.1:5000",
    )


def test_only_the_retained_volume_and_its_password() -> None:
    kept = [
        "persistentvolumeclaim/data-housing-postgresql-0",
        "persistentvolume/pvc-1",
        "secret/housing-postgresql",
    ]
    assert leftovers.only_volume_left(kept, "housing")
    assert leftovers.only_volume_left(kept[:2], "housing")
    assert not leftovers.only_volume_left([*kept, "configmap/housing-training"], "housing")
    assert not leftovers.only_volume_left(kept[1:], "housing"), "the claim itself is kept"
    assert not leftovers.only_volume_left([*kept, "persistentvolume/pvc-2"], "housing")


def test_diagnostics_folder_per_test_id(tmp_path: Path) -> None:
    folder = diagnostics.test_dir(tmp_path, "tests/cluster/test_10_install.py::test_fault[a b/c]")
    assert folder.parent == tmp_path
    assert folder.name == "tests_cluster_test_10_install.py_test_fault_a_b_c"


def test_port_forward_announcement_is_read() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "echo 'Forwarding from 127.0.0.1:43117 -> 5000'; sleep 5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert kube._forwarded_port(proc, timeout=5) == 43117
    finally:
        proc.kill()
        proc.wait()


def test_port_forward_that_exits_says_why() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "echo 'error: services \"nope\" not found' >&2; exit 1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(RuntimeError, match='services "nope" not found'):
        kube._forwarded_port(proc, timeout=5)
