"""helm install → Ready → helm test; the predictor and PostgreSQL pods deleted: nothing lost, nothing moves."""

from __future__ import annotations

import pytest
from lightkube.resources.core_v1 import Pod

from .lib.deployed import Deployed
from .lib.pods import probe_command, run_pod
from .lib.registry import one_version_per_identity
from .lib.setup import TIMINGS, phase
from .lib.wait import wait_until
from .main_release import Observed, observe

pytestmark = pytest.mark.cluster


def test_install_serves_the_production_alias(installed: Observed) -> None:
    assert installed.served.version == installed.alias, "the predictor serves the version production names"
    one_version_per_identity(installed.versions)


def test_helm_test_answers_over_rest_grpc_and_binary(main: Deployed, installed: Observed) -> None:
    with phase("test"):
        outcome = main.release.test().check()
    # The pods' phase and the V2 answer with its price, as Helm printed them (also in this run's log).
    assert "Phase: Succeeded" in " ".join(outcome.stdout.split())


def test_predictor_service_carries_rest_grpc_and_metrics(main: Deployed, installed: Observed) -> None:
    svc = main.predictor_service()
    assert svc.metadata.labels.get("component") == "predictor"
    ports = [f"{p.name}:{p.port}" for p in svc.spec.ports]
    assert ports == ["http1:80", "grpc:9000", "metrics:8082"]


def test_metrics_counted_the_requests(main: Deployed, installed: Observed) -> None:
    main.infer("e2e-infer-metrics")  # at least one request, whatever ran before
    result = run_pod(
        main.kube,
        main.ns,
        "e2e-metrics",
        main.setup.test_services_image,
        probe_command("metrics", f"http://{main.predictor_host()}:8082/metrics"),
    )
    assert result.exit_code == 0, f"no successful inference counted: {result.result or result.logs}"


def test_fault_predictor_pod_deleted(main: Deployed, installed: Observed) -> None:
    """A new predictor pod fetches the model again, serves the same version and answers."""
    with phase("fault-predictor"):
        old = installed.served.pods
        for pod in old:
            main.kube.delete(Pod, pod, main.ns, timeout=120)
        after = main.wait_serving()
        assert not set(after.pods) & set(old), "a new predictor pod serves"
        assert after.version == installed.served.version, "the new predictor serves the same version"
        seconds = main.pod_ready_seconds(after.pods[0])
        TIMINGS.add("predictor-pod-created-to-ready", seconds)
        print(f"    predictor pod created -> Ready: {seconds:.0f} s")
        main.infer("e2e-infer-fault-predictor")


def test_fault_postgres_pod_deleted(main: Deployed, installed: Observed) -> None:
    """PostgreSQL's volume keeps every version and the alias."""
    with phase("fault-postgres"):
        sts = main.release.one("StatefulSet")["metadata"]["name"]
        pod = f"{sts}-0"  # the StatefulSet recreates it under the same name: told apart by its UID
        old_uid = main.kube.api.get(Pod, pod, namespace=main.ns).metadata.uid
        main.kube.delete(Pod, pod, main.ns, wait=False)

        def replaced_and_ready() -> bool:
            if not main.kube.exists(Pod, pod, main.ns):
                return False
            p = main.kube.api.get(Pod, pod, namespace=main.ns)
            conditions = (p.status.conditions if p.status else None) or []
            ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            return p.metadata.uid != old_uid and ready

        wait_until(replaced_and_ready, what=f"a new {pod} is Ready", timeout=600)
        after = observe(main)
        assert after.versions == installed.versions, "every registered version survived"
        assert after.alias == installed.alias, "production did not move"
        main.release.test().check()
