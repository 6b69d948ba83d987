"""values/staging.yaml (with Helm 3) and values/prod.yaml, each in its own namespace with ci/overlays/<env>.yaml
on top (the in-cluster S3 store, locally built images, a 2-core node's CPU requests). Independent of the main
release: they need only the seeded DVC remotes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from .lib.deployed import VERSION_ANNOTATION, Deployed, Served, prepare_namespace
from .lib.helm import Helm, Outcome, Release
from .lib.kube import E2E_LABELS, Kube
from .lib.leftovers import only_volume_left, settled
from .lib.registry import ModelVersion
from .lib.setup import (
    CHART,
    ROOT,
    S3_ACCESS_KEY,
    S3_NAMESPACE,
    S3_SECRET_KEY,
    TIMINGS,
    Datasets,
    Setup,
    phase,
)
from .lib.wait import NotYet, wait_until
from .main_release import RELEASE, provider_values

STAGING_NS = "housing-staging"
PROD_NS = "housing-prod"
T_INSTALL = "20m"
RESTRICTED_NS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# The prod Secrets' contents (the names are values/prod.yaml's)
E2E_MLFLOW_USER, E2E_MLFLOW_PASSWORD, E2E_DB_PASSWORD = "e2e-admin", "e2e-mlflow-password", "e2e-db-password"


def env_values(env: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "values" / f"{env}.yaml").read_text())


def env_args(env: str, setup: Setup) -> tuple[str, ...]:
    return (
        "-f",
        str(ROOT / "values" / f"{env}.yaml"),
        "-f",
        str(ROOT / "ci" / "overlays" / f"{env}.yaml"),
        *provider_values(setup),
    )


def uninstall_keeping_volume(d: Deployed, keep_namespace: bool = False) -> list[str]:
    """`helm uninstall`, then nothing of the release is left but what persistence.whenDeleted=Retain keeps; the
    namespace goes (and the volume with it) unless kept for a reinstall. Returns what was left."""
    d.release.uninstall().check()
    left = settled(
        d.kube,
        d.ns,
        RELEASE,
        lambda found: only_volume_left(found, RELEASE),
        f"only the retained volume is left in {d.ns}",
    )
    if not keep_namespace:
        d.kube.kubectl("delete", "namespace", d.ns, "--wait", "--timeout=180s")
    return left


@dataclass(frozen=True)
class Staging:
    deployed: Deployed
    failed_install: Outcome
    failed_install_s: float
    failed_hook_log: str
    served: Served
    alias: int
    artifact_uri: str
    versions: list[ModelVersion]
    left_after_uninstall: list[str]
    reinstalled: Served
    reinstalled_alias: int
    reinstalled_versions: list[ModelVersion]
    test_after_converge: Outcome
    test_after_reinstall: Outcome


@pytest.fixture(scope="session")
def staging(setup: Setup, kube: Kube, helm3: Helm, datasets: Datasets) -> Staging:
    """values/staging.yaml with Helm 3: an install whose training fails fails fast (the hook stops waiting once
    the training failed); `helm upgrade --install` then converges (the bootstrap is decided by "no champion yet",
    not by the verb); uninstall keeps the volume and its password; a reinstall opens the same database."""
    with phase("staging"):
        prepare_namespace(kube, STAGING_NS)
        d = Deployed(Release(helm3, RELEASE, STAGING_NS, str(CHART), env_args("staging", setup)), kube, setup)
        started = time.monotonic()
        failed = d.release.install(
            "--set", "training.data.path=data/missing.csv", wait=False, timeout=T_INSTALL
        )
        failed_s = time.monotonic() - started
        TIMINGS.add("staging-failed-install", failed_s)
        hook = d.release.hook_job(d.release.last_revision().revision, "post-install")
        log = kube.kubectl("logs", "-n", STAGING_NS, f"job/{hook}", "--tail=5", check=False).stdout
        kube.kubectl(
            "delete", "job", hook, "-n", STAGING_NS, "--wait", "--timeout=120s"
        )  # failed hooks are kept
        d.release.upgrade(install=True, timeout=T_INSTALL).check()
        served = d.wait_serving()
        # Helm 3 deletes succeeded test pods before reading their logs: Helm 3 users run it without --logs.
        test1 = d.release.test(logs=False)
        with d.registry() as reg:
            alias, versions = reg.alias(), reg.versions()
            uri = reg.download_uri(alias)
        d.infer("e2e-infer-staging")
        left = uninstall_keeping_volume(d, keep_namespace=True)
        d.release.install(timeout=T_INSTALL).check()
        again = d.wait_serving()
        with d.registry() as reg:
            alias2, versions2 = reg.alias(), reg.versions()
        test2 = d.release.test(logs=False)
        return Staging(
            d,
            failed,
            failed_s,
            log,
            served,
            alias,
            uri,
            versions,
            left,
            again,
            alias2,
            versions2,
            test1,
            test2,
        )


@dataclass(frozen=True)
class StagingMoves:
    """Helm 3 (three-way merge) beside the reconciler's pin, on the reinstalled staging release: a person registers
    and promotes a version, a values-only `helm upgrade` rolls the predictor, the person moves the alias back, then
    `helm rollback` to the upgrade's revision, which the first install had recorded serving something else."""

    registered: (
        int  # the version the person registered (the champion's model once more) and moved the alias to
    )
    upgraded: Outcome  # helm upgrade changing only the predictor's CPU request (its pods are recreated)
    after_upgrade: Served
    alias_after_upgrade: int
    upgraded_revision: int
    recorded_by_this_install: int | None  # what the upgrade's hook recorded, keyed by the reinstall
    recorded_by_first_install: int | None  # what the first install recorded for the same revision number
    moved_back_to: int
    rolled_back: Outcome
    after_rollback: Served
    alias_after_rollback: int
    pin_managers: list[str]  # the field managers owning the pin annotation at the end


def pin_managers(isvc: Any) -> list[str]:
    """The field managers that own the pin annotation (managedFields): the reconciler's, never Helm's."""
    key = f"f:{VERSION_ANNOTATION}"
    owners = []
    for m in isvc.metadata.managedFields or []:
        fields = ((m.fieldsV1 or {}).get("f:spec") or {}).get("f:predictor") or {}
        if key in (fields.get("f:annotations") or {}):
            owners.append(m.manager)
    return owners


@pytest.fixture(scope="session")
def staging_moves(staging: Staging) -> StagingMoves:
    d = staging.deployed
    with phase("staging-helm3-pin"):
        champion = staging.reinstalled_alias
        with d.registry() as reg:
            registered = reg.register_copy(champion)
            reg.set_alias(registered)
        print(f"    a person registered v{registered} (v{champion}'s model) and moved the alias to it")
        d.wait_serving_version(registered)
        before = d.wait_serving()
        # a Helm-rendered field of the predictor changes: KServe recreates its pods, which must fetch the pin
        upgraded = d.release.upgrade(
            "--set", "inference.resources.requests.cpu=110m", timeout=T_INSTALL
        ).check()
        revision = d.release.last_revision().revision
        after_upgrade = d.wait_serving()
        assert set(after_upgrade.pods).isdisjoint(before.pods), "the upgrade recreated the predictor pods"
        install = d.release.install_key()
        with d.registry() as reg:
            alias_after_upgrade = reg.alias()
            mine = reg.served_record(d.ns, RELEASE, revision, install)
            prefix, suffix = f"release.{d.ns}.{RELEASE}.", f".served.{revision}"
            first = [int(v) for k, v in reg.tags().items()
                     if k.startswith(prefix) and k.endswith(suffix) and install not in k]  # fmt: skip
            reg.set_alias(champion)
        print(f"    revision {revision} recorded v{mine} (this install), {first} (the first install)")
        d.wait_serving_version(champion)
        rolled_back = d.release.rollback(revision, timeout="10m").check()
        with d.registry() as reg:
            alias_after_rollback = reg.alias()
        after_rollback = d.wait_serving_version(alias_after_rollback)
        managers = pin_managers(d.isvc())
        print(
            f"    after helm rollback {revision}: @production v{alias_after_rollback}; pin owned by {managers}"
        )
        return StagingMoves(
            registered, upgraded, after_upgrade, alias_after_upgrade, revision, mine,
            first[0] if first else None, champion, rolled_back, after_rollback, alias_after_rollback, managers,
        )  # fmt: skip


@dataclass(frozen=True)
class Tampered:
    """A model file of the served version changed in S3 after its promotion, then a new predictor pod asked for."""

    version: int
    key: str  # the S3 object changed
    refused_pod: str
    exit_codes: list[int]  # the new pod's storage initializer's exit codes
    log: str  # its log
    ready_while_refused: bool  # the new pod was never Ready while the file was changed
    answers: dict[str, int]  # model_version -> answers through the Service meanwhile
    old_pods: dict[str, int]  # the serving pods before -> restart count
    old_pods_after: dict[str, int]  # the same pods after -> restart count
    recovered: Served  # the file restored: the new pod's successor verifies and serves


def _restarts(pod: Any) -> int:
    return sum(s.restartCount for s in (pod.status.containerStatuses or []))


def _initializer_exits(pod: Any) -> list[int]:
    codes = []
    for s in pod.status.initContainerStatuses or []:
        if s.name != "storage-initializer":
            continue
        for state in (s.state, s.lastState):
            if state and state.terminated:
                codes.append(state.terminated.exitCode)
    return codes


@pytest.fixture(scope="session")
def tampered(staging: Staging, staging_moves: StagingMoves) -> Tampered:
    """Integrity (issue 24): one byte appended to the served version's model file in S3; a new predictor pod
    (an annotation on spec.predictor: KServe rolls out, the old pod stays until the new one is Ready) refuses to
    start, its storage initializer exiting 7 naming the file; the old pod keeps serving. Then the file restored."""
    import boto3

    d = staging.deployed
    kube = d.kube
    with phase("staging-tampered-artifact"):
        before = d.wait_serving()
        version = before.version
        old = {
            p.metadata.name: _restarts(p)
            for p in kube.pods(d.ns, d.predictor_labels())
            if p.metadata.name in before.pods
        }
        with d.registry() as reg:
            uri = reg.download_uri(version)
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        with kube.port_forward(S3_NAMESPACE, "service/s3", 9000) as port:
            s3 = boto3.client(
                "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
            )  # fmt: skip
            keys = [
                o["Key"]
                for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")["Contents"]
            ]
            key = next(k for k in keys if k.endswith(".pkl"))
            original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            s3.put_object(Bucket=bucket, Key=key, Body=original + b"\n")
            print(f"    changed s3://{bucket}/{key} (v{version}'s model file) after its promotion")
            try:
                kube.kubectl("patch", "inferenceservice", d.isvc_name, "-n", d.ns, "--type", "merge", "-p",
                             '{"spec":{"predictor":{"annotations":{"e2e.housing-mlops.io/rollout":"tampered"}}}}')  # fmt: skip

                def refused() -> Any:
                    new = [p for p in kube.pods(d.ns, d.predictor_labels()) if p.metadata.name not in old]
                    for p in new:
                        ready = any(
                            c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])
                        )
                        assert not ready, f"{p.metadata.name} got Ready on a changed model file"
                        if _initializer_exits(p):
                            return p
                    raise NotYet(
                        f"no new predictor pod's storage initializer has exited yet: {[p.metadata.name for p in new]}"
                    )

                pod = wait_until(
                    refused,
                    what="the new predictor pod's storage initializer refuses",
                    timeout=300,
                    interval=1,
                )
                name = pod.metadata.name
                log = kube.kubectl("logs", "-n", d.ns, name, "-c", "storage-initializer", check=False).stdout
                if "refusing" not in log:
                    log = kube.kubectl("logs", "-n", d.ns, name, "-c", "storage-initializer", "--previous",
                                       check=False).stdout  # fmt: skip
                answers = d.infer("e2e-infer-tampered", count=20).result["versions"]
                still = {p.metadata.name: p for p in kube.pods(d.ns, d.predictor_labels())}
                ready_while = any(
                    c.type == "Ready" and c.status == "True" for c in (still[name].status.conditions or [])
                )
                old_after = {n: _restarts(still[n]) for n in old if n in still}
                codes = _initializer_exits(still[name])
            finally:
                s3.put_object(Bucket=bucket, Key=key, Body=original)
        kube.kubectl("delete", "pod", name, "-n", d.ns, "--wait=false")  # its successor skips the back-off
        recovered = d.wait_serving()
        print(f"    refused pod {name} (exits {codes}); restored, now serving on {recovered.pods}")
        return Tampered(version, key, name, codes, log, ready_while, answers, old, old_after, recovered)


@dataclass(frozen=True)
class Probe:
    name: str
    namespace: str
    labels: dict[str, str]
    host: str
    port: int
    want: str  # open | blocked
    what: str


@dataclass(frozen=True)
class Prod:
    deployed: Deployed
    privileged: str  # "admitted", or "refused: <code> <message>"
    test: Outcome
    alias: int
    artifact_uri: str
    served: Served


@pytest.fixture(scope="session")
def prod(setup: Setup, kube: Kube, helm: Helm, datasets: Datasets) -> Prod:
    """values/prod.yaml under Pod Security `restricted`, with the Secrets prod expects (MLflow admin, database
    password); the local provider installs the chart as published and signed, every image by digest."""
    from lightkube import ApiError

    values = env_values("prod")
    auth_secret = values["global"]["mlflow"]["auth"]["existingSecret"]
    db_secret = values["global"]["database"]["existingSecret"]
    with phase("prod"):
        prepare_namespace(kube, PROD_NS, RESTRICTED_NS)
        for name, data in (
            (auth_secret, {"username": E2E_MLFLOW_USER, "password": E2E_MLFLOW_PASSWORD}),
            (db_secret, {"password": E2E_DB_PASSWORD}),
        ):
            kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": PROD_NS, "labels": E2E_LABELS},
                    "stringData": data,
                }
            )
        try:
            kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "e2e-privileged", "namespace": PROD_NS},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": setup.jobs_image,
                                "imagePullPolicy": "Never",
                                "command": ["true"],
                                "securityContext": {"privileged": True},
                            }
                        ]
                    },
                }
            )
            privileged = "admitted"
        except ApiError as exc:
            privileged = f"refused: {exc.status.code} {exc.status.message}"
        print(f"    a privileged pod in {PROD_NS}: {privileged}")
        args = env_args("prod", setup)
        if setup.provider == "local":
            chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
            chart = f"oci://{setup.registry_addr}/charts/housing-mlops"
            args = (
                *args,
                "-f",
                str(setup.publish_dir / "digests.yaml"),
                "--set",
                "global.image.pullPolicy=IfNotPresent",
                "--version",
                chart_version,
                "--plain-http",
            )
        else:
            chart = str(CHART)
        d = Deployed(
            Release(helm, RELEASE, PROD_NS, chart, args), kube, setup, (E2E_MLFLOW_USER, E2E_MLFLOW_PASSWORD)
        )
        d.release.install(timeout=T_INSTALL).check()
        served = d.wait_serving()
        test = d.release.test()
        with d.registry() as reg:
            alias = reg.alias()
            uri = reg.download_uri(alias)
        return Prod(d, privileged, test, alias, uri, served)
