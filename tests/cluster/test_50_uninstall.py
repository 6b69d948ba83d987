"""helm uninstall while a training and its promotion hook run: nothing of the release keeps running, nothing is
left."""

from __future__ import annotations

import pytest

from .main_release import Uninstalled

pytestmark = pytest.mark.cluster

SUPERSEDED = 5  # housing_mlops.errors.Superseded


def test_uninstall_leaves_nothing_running_and_nothing_behind(uninstalled: Uninstalled) -> None:
    for job, (ttl, codes) in uninstalled.kept_hooks.items():
        assert ttl, f"Job {job} was left until a TTL: ttl={ttl}, exits={codes}"
        if job in uninstalled.hooks:
            assert codes and 0 not in codes, f"failed hook Job {job}: exits={codes}"
    running_hook = uninstalled.hooks[-1]
    assert set(uninstalled.kept_hooks[running_hook][1]) == {SUPERSEDED}, (
        f"the hook running at uninstall saw its release gone and applied nothing (exit 5): {uninstalled.kept_hooks}"
    )
    print(f"uninstall returned -> nothing running: {uninstalled.running_after_s:.1f} s")
    assert uninstalled.leftovers == [], f"left behind by helm uninstall: {uninstalled.leftovers}"
    assert not uninstalled.status_after.ok, "the release is gone"
