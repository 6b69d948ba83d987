"""Continuous training (the retrain CronJob on the newest dataset version), pinned serving and an alias moved
outside Helm: the model that answers is the decided one through values-only upgrades, pod restarts and the
reconciler."""

from __future__ import annotations

import pytest

from .lib.deployed import Deployed
from .lib.setup import Datasets
from .main_release import BuiltinRuntime, Kept, Observed, Reconciled, Rejected, Restarted, Retrained, newest

pytestmark = pytest.mark.cluster

RECONCILE_TARGET_S = (
    30  # issue 21: alias moved -> rollout started, and -> Ready on every replica (direct swap)
)


def test_scheduled_retrain_trains_on_the_newest_data(
    main: Deployed, installed: Observed, rejected: Rejected, retrained: Retrained, datasets: Datasets
) -> None:
    assert retrained.schedule_enabled.versions == rejected.observed.versions, (
        "enabling the schedule trained nothing"
    )
    after = retrained.observed
    assert after.served.version != installed.served.version, "the predictor serves the scheduled retrain"
    latest = newest(after.versions)
    assert latest.version == after.served.version == after.alias, "the retrain is the version served"
    assert latest.dataset_md5 == datasets.v2_md5, "it trained on the newest pushed dataset version"
    main.infer("e2e-infer-retrained")


def test_values_only_upgrade_after_a_retrain_keeps_the_alias(
    main: Deployed, retrained: Retrained, kept_after_retrain: Kept
) -> None:
    before, after = retrained.observed, kept_after_retrain.observed
    assert after.versions == before.versions, "nothing trained"
    assert after.alias == before.alias, "the upgrade left the retrain's alias alone"
    assert after.served.version == before.served.version, "the retrain still serves"
    assert len(after.served.pods) == 2, "on both replicas"
    assert kept_after_retrain.recorded == before.alias, (
        "the hook recorded that the revision serves the retrain"
    )
    result = main.infer("e2e-infer-kept-after-retrain", count=10)
    assert result.result["versions"] == {str(before.alias): 10}


def test_a_recreated_predictor_pod_serves_the_pin_not_the_alias(restarted: Restarted) -> None:
    assert restarted.moved_to != restarted.pinned
    assert restarted.versions == {str(restarted.pinned): 50}, (
        f"50 answers after the alias moved to v{restarted.moved_to} and {restarted.replacement} was recreated "
        f"all come from the pinned v{restarted.pinned}: {restarted.versions}"
    )


def test_alias_moved_outside_helm_serves_on_every_replica_within_seconds(
    main: Deployed, reconciled: Reconciled
) -> None:
    after = reconciled.observed
    assert after.alias == after.served.version == reconciled.moved_to
    assert reconciled.alias_to_pinned_s <= RECONCILE_TARGET_S, (
        f"alias moved -> pinned took {reconciled.alias_to_pinned_s:.1f} s"
    )
    assert reconciled.alias_to_ready_s - reconciled.alias_to_pinned_s <= RECONCILE_TARGET_S, (
        f"pinned -> Ready on every replica took {reconciled.alias_to_ready_s - reconciled.alias_to_pinned_s:.1f} s"
    )
    result = main.infer("e2e-infer-reconciled", count=20)
    assert result.result["versions"] == {str(reconciled.moved_to): 20}


def test_values_only_upgrade_after_a_manual_move_keeps_the_alias(
    reconciled: Reconciled, kept_after_manual_move: Kept
) -> None:
    before, after = reconciled.observed, kept_after_manual_move.observed
    assert after.versions == before.versions, "nothing trained"
    assert after.alias == after.served.version == reconciled.moved_to, "the person's choice still serves"
    assert kept_after_manual_move.recorded == reconciled.moved_to


def test_kserve_builtin_mlserver_runtime_serves_the_pinned_version(
    kept_after_manual_move: Kept, builtin_runtime: BuiltinRuntime
) -> None:
    """inference.runtime=kserve-mlserver (issue 22: the original recipe's way still works, on a test-only stand-in
    of KServe's MLServer image): the same pinned version, fetched and checked by our storage initializer, answers
    through MLServer; nothing trains; back on our runtime afterwards."""
    b, before = builtin_runtime, kept_after_manual_move.observed
    assert b.observed.versions == before.versions and b.observed.alias == before.alias, (
        "nothing trained or moved"
    )
    assert b.observed.served.version == before.served.version
    assert b.images and all("mlserver" in i for i in b.images), f"MLServer serves: {b.images}"
    assert b.test.ok, (
        "helm test passes against KServe's MLServer runtime (REST; the answer names the version)"
    )
    assert b.answers == {str(before.served.version): 10}, b.answers
    assert b.back.served.version == before.served.version and set(b.back.served.pods).isdisjoint(
        b.observed.served.pods
    )
