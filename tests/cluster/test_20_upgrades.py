"""helm upgrade: one that changes nothing the model depends on, a retrain the gate accepts (with the MLflow pod
deleted mid-training), and one it rejects."""

from __future__ import annotations

import pytest

from .lib.deployed import Deployed
from .lib.registry import one_version_per_identity
from .main_release import Accepted, Observed, Rejected

pytestmark = pytest.mark.cluster


def test_unchanged_upgrade_trains_nothing(
    installed: Observed, unchanged: tuple[Observed, list[str], list[str]]
) -> None:
    after, pods_before, pods_after = unchanged
    assert after.training_job == installed.training_job, "the same training Job stands for the new revision"
    assert pods_after == pods_before, "no training pod ran"
    assert after.versions == installed.versions, "no version was registered"
    assert after.served.version == installed.served.version, "the predictor serves the same version"


def test_accepted_retrain_rides_out_mlflow_restart(
    main: Deployed, installed: Observed, accepted: Accepted
) -> None:
    assert accepted.trained_at > accepted.fault_at, (
        f"the training finished ({accepted.trained_at}) after the MLflow pod was deleted ({accepted.fault_at})"
    )
    after = accepted.observed
    assert after.alias != installed.alias, "the accepted retrain is in production"
    assert after.served.version == after.alias != installed.served.version, (
        "the predictor serves the accepted retrain"
    )
    one_version_per_identity(after.versions)
    main.infer("e2e-infer-accepted")


def test_rejected_retrain_fails_the_release_on_the_gate(
    main: Deployed, accepted: Accepted, rejected: Rejected
) -> None:
    assert rejected.observed.outcome is not None and not rejected.observed.outcome.ok, (
        "the gate failed the release"
    )
    assert main.release.last_revision().status == "failed"
    assert rejected.hook_exit_codes == [3], (
        f"the promotion hook exited 3 (the gate), got {rejected.hook_exit_codes}"
    )
    assert rejected.observed.alias == accepted.observed.alias, "the rejected retrain left production alone"
    assert rejected.observed.served.version == accepted.observed.served.version, (
        "the accepted retrain still serves"
    )
    main.infer("e2e-infer-rejected")
