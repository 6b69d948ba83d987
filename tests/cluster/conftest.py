"""The cluster e2e's session: the cluster ci/e2e-setup.sh brought up, typed clients, the seeded datasets,
diagnostics for each failure, the timings JSON. Scenarios: tests/cluster/test_*.py (docs/cluster.md)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .lib import diagnostics
from .lib.deployed import prepare_namespace, s3_env
from .lib.helm import Helm
from .lib.kube import Kube
from .lib.pods import start_pod
from .lib.setup import ROOT, TIMINGS, WORKDIR, Datasets, Setup, phase
from .lib.wait import wait_until

ARTIFACTS = WORKDIR / "artifacts"
SEED_NAMESPACE = "housing-seed"
# The DVC remotes of values/kind.yaml, values/staging.yaml and values/prod.yaml (each in its own bucket).
DVC_REMOTES = ("s3://housing-mlops/dvc", "s3://housing-mlops-staging/dvc", "s3://housing-mlops-prod/dvc")
MAIN_REMOTE = DVC_REMOTES[0]
_STATE: dict[str, object] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    provider = config.getoption("--provider")
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("provider")
        (drop if marker and provider not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def setup(request: pytest.FixtureRequest) -> Setup:
    loaded = Setup.load()
    wanted = request.config.getoption("--provider")
    if loaded.provider != wanted:
        raise pytest.UsageError(f"the cluster was brought up with --provider {loaded.provider}, not {wanted}")
    _STATE["setup"] = loaded
    return loaded


@pytest.fixture(scope="session")
def kube(setup: Setup) -> Kube:
    kubectl = shutil.which("kubectl", path=str(ROOT / ".tools" / "bin")) or shutil.which("kubectl")
    assert kubectl, "kubectl is missing: make tools"
    k = Kube(setup.kubeconfig, Path(kubectl))
    nodes = k.kubectl("get", "nodes", "-o", "name", timeout=60).stdout.split()
    assert nodes, f"the cluster at {setup.kubeconfig} has no node: is it up? (make e2e-setup)"
    _STATE["kube"] = k
    return k


@pytest.fixture(scope="session")
def helm(setup: Setup) -> Helm:
    return Helm(setup.helm, setup.kubeconfig)


@pytest.fixture(scope="session")
def helm3(setup: Setup) -> Helm:
    h = Helm(setup.helm3, setup.kubeconfig)
    assert h.version().startswith("v3."), f"{setup.helm3} is not Helm 3: {h.version()}"
    return h


@pytest.fixture(scope="session")
def datasets(setup: Setup, kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    """The DVC remotes seeded from the jobs image (`housing-mlops data push`), then a second dataset version
    pushed to the main remote: the real data minus its last 640 rows, or a generated one without HOUSING_CSV."""
    with phase("seed"):
        prepare_namespace(kube, SEED_NAMESPACE)
        start_pod(
            kube, SEED_NAMESPACE, "e2e-seed", setup.jobs_image, ["sleep", "1800"], env=s3_env(SEED_NAMESPACE)
        )
        wait_until(
            lambda: (
                kube.kubectl(
                    "get", "pod", "e2e-seed", "-n", SEED_NAMESPACE, "-o", "jsonpath={.status.phase}"
                ).stdout
                == "Running"
            ),
            what="the seed pod runs",
            timeout=300,
        )
        exec_ = ("exec", "-n", SEED_NAMESPACE, "e2e-seed", "--")
        csv = os.environ.get("HOUSING_CSV")
        work = tmp_path_factory.mktemp("seed")
        v2 = work / "housing-v2.csv"
        if csv:
            import pandas as pd

            frame = pd.read_csv(csv)
            frame.iloc[: len(frame) - 640].to_csv(v2, index=False)
            kube.kubectl("cp", csv, f"{SEED_NAMESPACE}/e2e-seed:/tmp/housing.csv", timeout=300)
            first = ["/tmp/housing.csv"]
        else:
            from housing_mlops.schema import synthetic_dataset

            synthetic_dataset(rows=20000, seed=3).to_csv(v2, index=False)
            first = []
        for remote in DVC_REMOTES:
            push = kube.kubectl(
                *exec_,
                "housing-mlops",
                "data",
                "push",
                *first,
                "--repo",
                "/app",
                "--dvc-remote-url",
                remote,
                "--no-synthetic",
                timeout=600,
            )
            print(push.stdout.rstrip())
        kube.kubectl("cp", str(v2), f"{SEED_NAMESPACE}/e2e-seed:/tmp/housing-v2.csv", timeout=300)
        kube.kubectl(*exec_, "cp", "-r", "/app", "/tmp/app")  # its .dvc gets the new md5
        kube.kubectl(
            *exec_,
            "housing-mlops",
            "data",
            "push",
            "/tmp/housing-v2.csv",
            "--repo",
            "/tmp/app",
            "--dvc-remote-url",
            MAIN_REMOTE,
            timeout=600,
        )
        dvc_file = yaml.safe_load(kube.kubectl(*exec_, "cat", "/tmp/app/data/housing.csv.dvc").stdout)
        md5 = hashlib.md5(v2.read_bytes()).hexdigest()
        assert dvc_file["outs"][0]["md5"] == md5, (
            f"DVC recorded {dvc_file['outs'][0]['md5']}, the file is {md5}"
        )
        print(f"    second dataset version: md5 {md5}")
        kube.kubectl("delete", "namespace", SEED_NAMESPACE, "--wait=false")
        return Datasets(md5)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call") and "kube" in _STATE:
        dest = diagnostics.test_dir(ARTIFACTS, item.nodeid)
        print(f"\ne2e: {item.nodeid} failed: diagnostics in {dest}", flush=True)
        diagnostics.collect(_STATE["setup"], _STATE["kube"], dest)  # type: ignore[arg-type]
    return report


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("--provider") and not session.config.option.collectonly:
        shutil.rmtree(ARTIFACTS, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--provider") or session.config.option.collectonly:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped:
        # A scenario skipped in CI would count as run: provider-specific tests are deselected, never skipped.
        print(f"\ne2e: {skipped} scenario(s) skipped in CI: that is a failure", flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if "setup" in _STATE:
        result = "passed" if session.exitstatus == 0 else "failed"
        TIMINGS.write(_STATE["setup"].provider, result)  # type: ignore[attr-defined]


# The release lifecycles' fixtures (a chain per release; see each module).
from .environments import prod, staging, staging_moves, tampered  # noqa: E402,F401
from .main_release import (  # noqa: E402,F401
    accepted,
    builtin_runtime,
    installed,
    kept_after_manual_move,
    kept_after_retrain,
    main,
    reconciled,
    rejected,
    restarted,
    retrained,
    rolled_back,
    rolled_back_first,
    rolled_back_to_gone,
    timed_out,
    timed_out_rolled_back,
    unchanged,
    uninstalled,
)
