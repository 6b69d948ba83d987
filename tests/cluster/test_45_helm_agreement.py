"""Helm and the cluster agree: an upgrade whose training outlasts Helm's --timeout (with and without
--rollback-on-failure) applies nothing, even once the late training registers; a rollback to a version deleted
since fails naming it and changes nothing served."""

from __future__ import annotations

import pytest

from .lib.deployed import Deployed
from .main_release import RollbackToGone, TimedOut

pytestmark = pytest.mark.cluster

SUPERSEDED, GONE = 5, 6  # housing_mlops.errors: Superseded, Gone


def agree(t: TimedOut) -> None:
    assert not [s for s in t.statuses.values() if s.startswith("pending")], (
        f"a revision left pending: {t.statuses}"
    )
    assert t.after.alias == t.before.alias, "the timed-out revision moved nothing"
    assert t.after.served.version == t.before.alias, "and the predictor serves what the alias says"
    assert t.hook_exit_codes and set(t.hook_exit_codes) == {SUPERSEDED}, (
        f"the hook saw Helm give up and applied nothing, or undid its move (exit 5): {t.hook_exit_codes}"
    )


def test_upgrade_timed_out_applies_nothing_even_after_its_training_registers(timed_out: TimedOut) -> None:
    agree(timed_out)
    assert timed_out.late_version, "the training went on and registered a version"
    assert timed_out.after.alias != timed_out.late_version, "which was not promoted"
    assert sorted(timed_out.statuses.values()).count("failed") >= 1


def test_upgrade_timed_out_with_rollback_on_failure_agrees(
    main: Deployed, timed_out_rolled_back: TimedOut
) -> None:
    agree(timed_out_rolled_back)
    last = main.release.last_revision()
    assert last.status == "deployed", (
        f"the rollback-on-failure revision is deployed: {timed_out_rolled_back.statuses}"
    )
    main.infer("e2e-infer-after-timeouts", count=10)


def test_rollback_to_a_deleted_version_fails_and_changes_nothing(rolled_back_to_gone: RollbackToGone) -> None:
    r = rolled_back_to_gone
    assert not r.outcome.ok, "helm rollback failed"
    assert set(r.hook_exit_codes) == {GONE}, f"the rollback hook exited 6 (gone): {r.hook_exit_codes}"
    assert r.after.alias == r.before.alias and r.after.served.version == r.before.served.version, (
        "nothing served changed"
    )
    assert r.deleted not in {v.version for v in r.after.versions}
    # Helm 4.1.4 records no status when a post-rollback hook fails (pkg/action/rollback.go returns first): that
    # revision stays pending-rollback in `helm history`; a rollback to the last deployed revision gets the release
    # going again (upgrades look at the last revision only)
    print(f"the failed rollback's revision as Helm left it: {r.left_by_helm}")
    assert r.recovered.ok, "a rollback to the last deployed revision succeeds after it"
    last = max(r.statuses)
    assert r.statuses[last] == "deployed", f"the release is deployed again: {r.statuses}"
