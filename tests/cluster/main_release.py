"""The main release's lifecycle as a chain of session fixtures, each one Helm verb or event on the release
(values/kind.yaml): install → upgrade unchanged → accepted → rejected → rollback → rollback to the install →
scheduled retrain → values-only upgrade → alias moved by hand + predictor pod deleted (reconciler stopped) →
the reconciler pins, then a timed alias move → values-only upgrade → uninstall. Each returns what it observed (a typed record); a
scenario asks for the step it checks and gets every earlier one run first, so any scenario runs alone (`-k`)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from .lib.deployed import Deployed, Served, prepare_namespace
from .lib.helm import Helm, Outcome, Release
from .lib.kube import Kube
from .lib.leftovers import settled
from .lib.registry import ModelVersion
from .lib.setup import CHART, ROOT, TIMINGS, Datasets, Setup, phase
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
    """An upgrade turning on the retrain CronJob (it trains nothing itself), then the retrain run now: it trains
    on the newest pushed dataset version, gates and moves the alias; the reconciler pins the predictor to it."""
    with phase("retrain-scheduled"):
        enabled = observe(
            main, main.release.upgrade("-f", str(OVERLAYS / "schedule.yaml"), timeout=T_INSTALL).check()
        )
        run_cronjob(main, "training", "e2e-retrain")
        return Retrained(enabled, observe(main))


@dataclass(frozen=True)
class Kept:
    """A values-only upgrade: what it observed, and what its promotion hook recorded the revision serves."""

    observed: Observed
    recorded: int | None


def values_only_upgrade(d: Deployed, *overlays: str) -> Kept:
    args = [a for o in ("schedule.yaml", *overlays) for a in ("-f", str(OVERLAYS / o))]
    outcome = d.release.upgrade(*args, timeout=T_INSTALL).check()
    revision = d.release.last_revision().revision
    observed = observe(d, outcome)
    with d.registry() as reg:
        return Kept(observed, reg.served_record(d.ns, d.release.name, revision))


@pytest.fixture(scope="session")
def kept_after_retrain(main: Deployed, retrained: Retrained) -> Kept:
    """helm upgrade changing only the predictor's replicas (2), after the scheduled retrain moved the alias: the
    revision's training identity is the one the release deployed, so nothing trains and the alias stays."""
    with phase("upgrade-after-retrain"):
        return values_only_upgrade(main, "replicas.yaml")


@dataclass(frozen=True)
class Restarted:
    """The alias moved by hand while the reconciler was stopped, then a predictor pod deleted."""

    pinned: int  # the version the InferenceService was pinned to
    moved_to: int  # where the alias was moved
    replacement: str  # the predictor pod created for the deleted one
    versions: dict[str, int]  # model_version -> answers, 50 requests through the Service


@pytest.fixture(scope="session")
def restarted(main: Deployed, installed: Observed, kept_after_retrain: Kept) -> Restarted:
    """Pinned serving through a pod restart: with the reconciler stopped (so that it cannot act in between), the
    alias moved by hand and one predictor pod deleted; 50 answers through the Service name one version, the
    pinned one, on the old pod and its replacement alike."""
    pinned = kept_after_retrain.observed.served
    with phase("restart-pinned"):
        main.scale_reconciler(0)
        try:
            with main.registry() as reg:
                reg.set_alias(installed.served.version)
            victim = pinned.pods[0]
            print(f"    alias moved to v{installed.served.version} by hand; deleting predictor pod {victim}")
            main.kube.api.delete(Pod, victim, namespace=main.ns)
            served = main.wait_serving()
            (replacement,) = set(served.pods) - set(pinned.pods)
            TIMINGS.add("pinned-pod-created-to-ready", main.pod_ready_seconds(replacement))
            result = main.infer("e2e-infer-restarted", count=50)
        finally:
            main.scale_reconciler(1)
        return Restarted(pinned.version, installed.served.version, replacement, result.result["versions"])


@dataclass(frozen=True)
class Reconciled:
    observed: Observed
    moved_to: int
    alias_to_pinned_s: float
    alias_to_ready_s: float


@pytest.fixture(scope="session")
def reconciled(main: Deployed, accepted: Accepted, restarted: Restarted) -> Reconciled:
    """The reconciler back: it pins the version the alias was moved to while it was stopped; then the alias moved
    by hand again (MLflow's API, as from its UI), timed until the new version serves on every replica."""
    with phase("reconcile"):
        main.wait_serving_version(restarted.moved_to)
        target = accepted.observed.served.version
        with main.registry() as reg:
            reg.set_alias(target)
        moved = time.monotonic()
        wait_until(
            lambda: main.pinned_version() == target or None,
            what=f"the reconciler pins v{target}",
            timeout=60,
            interval=0.5,
        )
        pinned_s = time.monotonic() - moved
        main.wait_serving_version(target)
        ready_s = time.monotonic() - moved
        TIMINGS.add("alias-moved-to-pinned", pinned_s)
        TIMINGS.add("alias-moved-to-ready", ready_s)
        print(f"    alias moved -> pinned {pinned_s:.1f} s, -> ready on every replica {ready_s:.1f} s")
        return Reconciled(observe(main), target, pinned_s, ready_s)


@pytest.fixture(scope="session")
def kept_after_manual_move(main: Deployed, reconciled: Reconciled) -> Kept:
    """helm upgrade changing only resources, after a person moved the alias: nothing trains, the alias stays."""
    with phase("upgrade-after-manual-move"):
        return values_only_upgrade(main, "replicas.yaml", "upgrade-unchanged.yaml")


@dataclass(frozen=True)
class BuiltinRuntime:
    """The predictor on KServe's built-in kserve-mlserver runtime (MLServer's stock MLflow runtime; the test-only
    stand-in of its image on the local cluster), by a values-only upgrade, then back on ours."""

    observed: Observed
    images: list[str]  # the predictor pods' model server images
    test: Outcome  # helm test --logs against it (REST; the version checked)
    answers: dict[str, int]  # model_version -> answers, through the Service
    back: Observed  # after the upgrade back to our runtime


def upgrade_overlays(*overlays: str) -> list[str]:
    return [a for o in ("schedule.yaml", "replicas.yaml", "upgrade-unchanged.yaml", *overlays)
            for a in ("-f", str(OVERLAYS / o))]  # fmt: skip


@pytest.fixture(scope="session")
def builtin_runtime(main: Deployed, kept_after_manual_move: Kept) -> BuiltinRuntime:
    """`inference.runtime: kserve-mlserver` (the original recipe's server): nothing trains, the pinned version is
    fetched and checked as before and served by MLServer; `helm test` passes; then back to our runtime."""
    with phase("builtin-runtime"):
        outcome = main.release.upgrade(
            *upgrade_overlays(), "--set", "inference.runtime=kserve-mlserver", timeout=T_INSTALL
        ).check()
        observed = observe(main, outcome)
        images = [
            c.image
            for p in main.kube.pods(main.ns, main.predictor_labels())
            if p.metadata.name in observed.served.pods
            for c in p.spec.containers
            if c.name == "kserve-container"
        ]
        test = main.release.test()
        answers = main.infer("e2e-infer-mlserver", count=10).result["versions"]
        back = observe(main, main.release.upgrade(*upgrade_overlays(), timeout=T_INSTALL).check())
        return BuiltinRuntime(observed, images, test, answers, back)


@dataclass(frozen=True)
class TimedOut:
    """An upgrade whose training outlasted Helm's --timeout: what Helm recorded, what the hook did, and what is
    served once the late training has registered its version (when the old design promoted it)."""

    before: Observed
    outcome: Outcome
    statuses: dict[int, str]  # helm history after the late training finished: revision -> status
    hook_exit_codes: list[int]
    hook_job: str
    late_version: int  # the version the timed-out revision's training registered after Helm gave up
    after: Observed


def timed_out_upgrade(
    d: Deployed, before: Observed, nonce: str, *flags: str, timeout: str, training: str = "upgrade-slow.yaml"
) -> TimedOut:
    """`helm upgrade` with a slow (or never scheduled) training of a new identity and a --timeout it cannot meet;
    then wait for that training to finish (the late outcome) and observe that nothing it did was applied."""
    outcome = d.release.upgrade(
        *upgrade_overlays(training), "--set", f"training.retrainNonce={nonce}", *flags, timeout=timeout
    )
    assert not outcome.ok, f"helm upgrade --timeout {timeout} was meant to time out: {outcome.stdout[-500:]}"
    failed = max((r for r in d.release.history() if r.status == "failed"), key=lambda r: r.revision)
    hook = d.release.hook_job(failed.revision, "post-upgrade")

    def hook_done() -> list[int]:
        codes = d.job_exit_codes(hook)
        if not codes:
            raise NotYet(f"hook Job {hook} still runs")
        return codes

    codes = wait_until(hook_done, what=f"the timed-out revision's hook {hook} ends", timeout=300, interval=2)
    with d.registry() as reg:
        known = {v.version for v in before.versions}

        def late_version() -> int:
            new = [v.version for v in reg.versions() if v.version not in known]
            if not new:
                raise NotYet("the timed-out revision's training has not registered its version yet")
            return max(new)

        # --rollback-on-failure deletes the training Job with the revision: then nothing is registered
        late = (
            wait_until(late_version, what="the late training registers", timeout=600, interval=3)
            if not flags
            else 0
        )
    after = observe(d)
    statuses = {r.revision: r.status for r in d.release.history()}
    print(f"    helm history after the late training: {statuses}")
    return TimedOut(before, outcome, statuses, codes, hook, late, after)


@pytest.fixture(scope="session")
def timed_out(main: Deployed, kept_after_manual_move: Kept, builtin_runtime: BuiltinRuntime) -> TimedOut:
    """helm upgrade --timeout 10s while its training needs a minute: Helm marks the revision failed at once, the
    hook must apply nothing (exit 5), even after the training registers its version."""
    with phase("upgrade-timeout"):
        return timed_out_upgrade(main, kept_after_manual_move.observed, "timeout-1", timeout="10s")


@pytest.fixture(scope="session")
def timed_out_rolled_back(main: Deployed, timed_out: TimedOut) -> TimedOut:
    """The same with Helm 4's --rollback-on-failure: Helm rolls back to the last deployed revision (its
    rollback hook restores what that revision served) while the failed revision's hook still waits. The training
    never gets scheduled, so Helm gives up whatever the machine's speed, and the rollback has the whole --timeout
    (measured: a training meant to outlast 15 s sometimes did not, and a 15 s rollback sometimes did not fit)."""
    with phase("upgrade-timeout-rollback"):
        return timed_out_upgrade(
            main, timed_out.after, "timeout-2", "--rollback-on-failure", timeout="60s",
            training="upgrade-unschedulable.yaml",
        )  # fmt: skip


@dataclass(frozen=True)
class RollbackToGone:
    before: Observed
    outcome: Outcome
    deleted: int
    hook_exit_codes: list[int]
    hook_job: str
    after: Observed
    left_by_helm: str  # the failed rollback's revision status as Helm left it
    recovered: Outcome  # `helm rollback` to the last deployed revision, as an operator clears it
    statuses: dict[int, str]  # helm history after that


@pytest.fixture(scope="session")
def rolled_back_to_gone(main: Deployed, retrained: Retrained, kept_after_retrain: Kept,
                        timed_out_rolled_back: TimedOut) -> RollbackToGone:  # fmt: skip
    """helm rollback to the revision that served the scheduled retrain's version, after that version was
    deleted in MLflow: the rollback hook fails naming it (exit 6) and nothing served changes."""
    before = timed_out_rolled_back.after
    gone = retrained.observed.alias
    assert before.alias != gone, "the version to delete is not the one serving"
    with phase("rollback-to-gone"):
        with main.registry() as reg:
            target = max(
                r.revision
                for r in main.release.history()
                if reg.served_record(main.ns, RELEASE, r.revision) == gone
            )
            reg.delete_version(gone)
        deployed = max(r.revision for r in main.release.history() if r.status == "deployed")
        outcome = main.release.rollback(target, timeout="5m")
        last = main.release.last_revision()
        hook = main.release.hook_job(target, "post-rollback")
        codes = main.job_exit_codes(hook)
        print(main.kube.kubectl("logs", "-n", main.ns, f"job/{hook}", "--tail=5", check=False).stdout)
        print(
            f"    rollback to revision {target} (v{gone} deleted) -> revision {last.revision} {last.status}"
        )
        after = observe(main)
        # Helm 4.1.4 (pkg/action/rollback.go) returns on a failed post-rollback hook before recording a status:
        # the revision stays pending-rollback and blocks upgrades; a rollback to a good revision clears it
        recovered = main.release.rollback(deployed, timeout="5m")
        statuses = {r.revision: r.status for r in main.release.history()}
        print(f"    helm rollback {deployed} after it: {statuses}")
        return RollbackToGone(before, outcome, gone, codes, hook, after, last.status, recovered, statuses)


@dataclass(frozen=True)
class Uninstalled:
    outcome: Outcome
    kept_hooks: dict[str, tuple[int | None, list[int]]]  # Job kept until its TTL -> (TTL, exit codes)
    hooks: tuple[str, ...]  # the failed hook Jobs among them
    running_after_s: float  # uninstall returned -> no pod of the release running
    leftovers: list[str]
    status_after: Outcome


@pytest.fixture(scope="session")
def uninstalled(
    main: Deployed,
    rejected: Rejected,
    timed_out: TimedOut,
    timed_out_rolled_back: TimedOut,
    rolled_back_to_gone: RollbackToGone,
) -> Uninstalled:
    """helm uninstall --wait while a training and its promotion hook run (an upgrade that timed out a moment
    before): nothing of the release may keep running. Failed hook Jobs are kept on purpose (until their TTL, for
    `kubectl logs` and their exit code): checked, then deleted rather than waited for."""
    with phase("uninstall"):
        # the release's last good values (rolled_back_to_gone restored them) plus a slow new training only, so that
        # Helm's --wait finds every resource Ready at once and the 10 s run out while the hook waits for the training
        late = main.release.upgrade(
            *upgrade_overlays("upgrade-slow.yaml"), "--set", "training.retrainNonce=uninstall", timeout="10s"
        )
        assert not late.ok
        revision = main.release.last_revision().revision
        running_hook = main.release.hook_job(revision, "post-upgrade")
        outcome = main.release.uninstall().check()
        returned = time.monotonic()

        def nothing_runs() -> bool:
            pods = [p for p in main.kube.pods(main.ns, {"app.kubernetes.io/instance": RELEASE})
                    if p.status.phase in ("Pending", "Running")]  # fmt: skip
            if pods:
                raise NotYet(f"still running: {[p.metadata.name for p in pods]}")
            return True

        wait_until(nothing_runs, what="no pod of the uninstalled release runs", timeout=180, interval=1)
        running_after = time.monotonic() - returned
        TIMINGS.add("uninstall-to-nothing-running", running_after)
        kept = {}
        # Jobs kept on purpose until their TTL: failed hooks (not release objects), and the training Jobs of the
        # timed-out revisions (Helm never deletes what a failed revision created: no later manifest names it)
        left_jobs = [j.metadata.name for j in main.kube.api.list(Job, namespace=main.ns,
                     labels={"app.kubernetes.io/instance": RELEASE})]  # fmt: skip
        for name in left_jobs:
            job = main.job(name)
            kept[name] = (job.spec.ttlSecondsAfterFinished, main.job_exit_codes(name))
            assert not (job.status and job.status.active), f"Job {name} still runs after the uninstall"
            main.kube.kubectl("delete", "job", name, "-n", main.ns, "--cascade=foreground", "--wait",
                              "--timeout=120s")  # fmt: skip
        for hook in (rejected.hook_job, timed_out.hook_job, timed_out_rolled_back.hook_job,
                     rolled_back_to_gone.hook_job, running_hook):  # fmt: skip
            assert hook in kept, f"the failed hook Job {hook} was kept until its TTL"
        print(f"    failed hooks kept: {kept}; nothing ran {running_after:.1f} s after uninstall returned")
        left = settled(main.kube, main.ns, RELEASE, lambda found: not found, "nothing of the release is left")
        status = main.release.helm.run("status", RELEASE, "-n", main.ns, echo=False)
        main.kube.kubectl("delete", "namespace", main.ns, "--wait", "--timeout=180s")
        hooks = (rejected.hook_job, timed_out.hook_job, timed_out_rolled_back.hook_job,
                 rolled_back_to_gone.hook_job, running_hook)  # fmt: skip
        return Uninstalled(outcome, kept, hooks, running_after, left, status)


def newest(versions: list[ModelVersion]) -> ModelVersion:
    return max(versions, key=lambda v: v.version)
