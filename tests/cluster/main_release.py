"""The main release's lifecycle as a chain of session fixtures, each one Helm verb or event on the release
(values/kind.yaml): install → upgrade unchanged → accepted → rejected → rollback → rollback to the install →
scheduled retrain → alias moved outside Helm → uninstall. Each returns what it observed (a typed record); a
scenario asks for the step it checks and gets every earlier one run first, so any scenario runs alone (`-k`)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

import pytest
from lightkube.resources.core_v1 import Pod

from .lib.deployed import Deployed, Served, prepare_namespace
from .lib.helm import Helm, Outcome, Release
from .lib.kube import Kube
from .lib.leftovers import settled
from .lib.registry import ModelVersion
from .lib.setup import CHART, ROOT, Datasets, Setup, phase
from .lib.wait import NotYet, wait_until

NAMESPACE = "housing"
RELEASE = "housing"
T_INSTALL = "20m"
OVERLAYS = ROOT / "ci" / "kind"  # the upgrade overlays on top of values/kind.yaml


def provider_values(setup: Setup) -> tuple[str, ...]:
    """What the provider needs on top of every values file (local: imported images, the PostgreSQL stand-in)."""
    return ("-f", str(ROOT / "values" / "local.yaml")) if setup.provider == "local" else ()


@dataclass(frozen=True)
class Observed:
    """What one step left: the version served, the alias, every registered version, the training Job."""

    served: Served
    alias: int
    versions: list[ModelVersion]
    training_job: str
    outcome: Outcome | None = None


def observe(d: Deployed, outcome: Outcome | None = None) -> Observed:
    served = d.wait_serving()
    with d.registry() as reg:
        alias, versions = reg.alias(), reg.versions()
    print(
        f"    production -> v{alias}; versions: {[(v.version, v.identity[:8], v.dataset_md5[:8]) for v in versions]}"
    )
    return Observed(served, alias, versions, d.training_job(), outcome)


@pytest.fixture(scope="session")
def main(setup: Setup, kube: Kube, helm: Helm, datasets: Datasets) -> Deployed:
    release = Release(
        helm,
        RELEASE,
        NAMESPACE,
        str(CHART),
        ("-f", str(ROOT / "values" / "kind.yaml"), *provider_values(setup)),
    )
    return Deployed(release, kube, setup)


@pytest.fixture(scope="session")
def installed(main: Deployed) -> Observed:
    """helm install (trains, then the post-install hook promotes); the InferenceService Ready and serving."""
    with phase("install"):
        prepare_namespace(main.kube, NAMESPACE)
        outcome = main.release.install(timeout=T_INSTALL).check()
        print(main.kube.kubectl("get", "pods,jobs", "-n", NAMESPACE, "-o", "wide").stdout)
    with phase("ready"):
        return observe(main, outcome)


@pytest.fixture(scope="session")
def unchanged(main: Deployed, installed: Observed) -> tuple[Observed, list[str], list[str]]:
    """helm upgrade changing only resources and replicas (same identity, so the same training Job)."""
    with phase("upgrade-unchanged"):
        pods_before = main.training_pods()
        outcome = main.release.upgrade(
            "-f", str(OVERLAYS / "upgrade-unchanged.yaml"), timeout=T_INSTALL
        ).check()
        return observe(main, outcome), pods_before, main.training_pods()


@dataclass(frozen=True)
class Accepted:
    observed: Observed
    fault_at: dt.datetime
    trained_at: dt.datetime


@pytest.fixture(scope="session")
def accepted(main: Deployed, unchanged: tuple[Observed, list[str], list[str]]) -> Accepted:
    """helm upgrade with a retrain the gate accepts; the MLflow pod is deleted as soon as the training pod runs,
    seconds before it can register anything."""
    before = unchanged[0]
    with phase("upgrade-accepted"):
        box: dict[str, Outcome] = {}
        thread = threading.Thread(
            target=lambda: box.update(
                out=main.release.upgrade("-f", str(OVERLAYS / "upgrade-accepted.yaml"), timeout=T_INSTALL)
            )
        )
        thread.start()

        def training_runs() -> str:
            job = main.training_job()
            if job == before.training_job:
                raise NotYet("the new revision's training Job is not there yet")
            phases = [p.status.phase for p in main.kube.pods(main.ns, {"batch.kubernetes.io/job-name": job})]
            if "Running" not in phases:
                raise NotYet(f"training pods: {phases}")
            return job

        job = wait_until(training_runs, what="the accepted upgrade's training runs", timeout=600, interval=1)
        mlflow = main.release.one("Deployment", "mlflow")
        fault_at = dt.datetime.now(dt.UTC)
        for pod in main.kube.pods(main.ns, mlflow["spec"]["selector"]["matchLabels"]):
            print(f"    fault: deleting {pod.metadata.name} while {job} trains")
            main.kube.api.delete(Pod, pod.metadata.name, namespace=main.ns)
        thread.join()
        box["out"].check()
        finished = [
            s.state.terminated.finishedAt
            for p in main.kube.pods(main.ns, {"batch.kubernetes.io/job-name": job})
            for s in (p.status.containerStatuses or [])
            if s.state and s.state.terminated and s.state.terminated.exitCode == 0
        ]
        assert finished, f"no training pod of {job} finished successfully"
        print(main.kube.kubectl("logs", "-n", main.ns, f"job/{job}", "--all-containers", "--tail=30").stdout)
        return Accepted(observe(main, box["out"]), fault_at, max(finished))


@dataclass(frozen=True)
class Rejected:
    observed: Observed
    hook_job: str  # the promotion hook Job of the rejected revision (kept: it failed)
    hook_exit_codes: list[int]


@pytest.fixture(scope="session")
def rejected(main: Deployed, accepted: Accepted) -> Rejected:
    """helm upgrade with a worse retrain that the gate rejects: the promotion hook exits 3, which fails the
    release on purpose."""
    with phase("upgrade-rejected"):
        outcome = main.release.upgrade("-f", str(OVERLAYS / "upgrade-rejected.yaml"), timeout=T_INSTALL)
        revision = main.release.last_revision()
        hook = main.release.hook_job(revision.revision, "post-upgrade")
        print(main.kube.kubectl("logs", "-n", main.ns, f"job/{hook}", "--tail=20", check=False).stdout)
        codes = main.job_exit_codes(hook)
        return Rejected(observe(main, outcome), hook, codes)


@pytest.fixture(scope="session")
def rolled_back(main: Deployed, rejected: Rejected) -> Observed:
    """helm rollback (to the accepted revision): its post-rollback hook restores what that revision served."""
    with phase("rollback"):
        return observe(main, main.release.rollback().check())


@pytest.fixture(scope="session")
def rolled_back_first(main: Deployed, rolled_back: Observed) -> Observed:
    """helm rollback to the install's revision (the first in `helm history`)."""
    with phase("rollback-first"):
        first = min(main.release.history(), key=lambda r: r.revision).revision
        return observe(main, main.release.rollback(first).check())


def run_cronjob(d: Deployed, component: str, name: str, timeout: float = 600) -> None:
    """Run the release's CronJob of ``component`` now, as a Job named ``name``, until it completes."""
    cron = d.release.one("CronJob", component)["metadata"]["name"]
    d.kube.kubectl("create", "job", name, "-n", d.ns, f"--from=cronjob/{cron}")

    def complete() -> bool:
        status = d.job(name).status
        if status and status.failed and not status.active:
            raise AssertionError(
                f"Job {name} failed: {d.kube.kubectl('logs', '-n', d.ns, f'job/{name}', '--all-containers', check=False).stdout[-2000:]}"
            )
        return bool(status and status.succeeded)

    wait_until(complete, what=f"Job {name} (from cronjob/{cron}) completes", timeout=timeout)
    print(d.kube.kubectl("logs", "-n", d.ns, f"job/{name}", "--all-containers", "--tail=20").stdout)


@dataclass(frozen=True)
class Retrained:
    schedule_enabled: Observed
    observed: Observed


@pytest.fixture(scope="session")
def retrained(main: Deployed, rolled_back_first: Observed) -> Retrained:
    """An upgrade turning on the retrain and reconcile CronJobs (it trains nothing itself), then the retrain run
    now: it trains on the newest pushed dataset version, gates, promotes, rolls the predictor."""
    with phase("retrain-scheduled"):
        enabled = observe(
            main, main.release.upgrade("-f", str(OVERLAYS / "schedule.yaml"), timeout=T_INSTALL).check()
        )
        run_cronjob(main, "training", "e2e-retrain")
        return Retrained(enabled, observe(main))


@pytest.fixture(scope="session")
def reconciled(main: Deployed, installed: Observed, retrained: Retrained) -> Observed:
    """The alias moved outside Helm (the MLflow API, as from the UI), then the reconcile CronJob run now."""
    with phase("reconcile"):
        with main.registry() as reg:
            reg.set_alias(installed.served.version)
        run_cronjob(main, "promotion", "e2e-reconcile")
        return observe(main)


@dataclass(frozen=True)
class Uninstalled:
    outcome: Outcome
    kept_hook_ttl: int | None
    kept_hook_failed: int | None
    leftovers: list[str]
    status_after: Outcome


@pytest.fixture(scope="session")
def uninstalled(main: Deployed, rejected: Rejected, reconciled: Observed) -> Uninstalled:
    """helm uninstall --wait; the rejected candidate's hook Job is kept on purpose (failed hooks are, until their
    TTL): checked, then deleted rather than waited for."""
    with phase("uninstall"):
        outcome = main.release.uninstall().check()
        job = main.job(rejected.hook_job)
        ttl, failed = job.spec.ttlSecondsAfterFinished, job.status.failed if job.status else None
        main.kube.kubectl(
            "delete",
            "job",
            rejected.hook_job,
            "-n",
            main.ns,
            "--cascade=foreground",
            "--wait",
            "--timeout=120s",
        )
        left = settled(main.kube, main.ns, RELEASE, lambda found: not found, "nothing of the release is left")
        status = main.release.helm.run("status", RELEASE, "-n", main.ns, echo=False)
        main.kube.kubectl("delete", "namespace", main.ns, "--wait", "--timeout=180s")
        return Uninstalled(outcome, ttl, failed, left, status)


def newest(versions: list[ModelVersion]) -> ModelVersion:
    return max(versions, key=lambda v: v.version)
