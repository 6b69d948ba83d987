"""helm uninstall while a training and its promotion hook run: nothing of the release keeps running, nothing is
left."""

from __future__ import annotations

import pytest

from .main_release import Uninstalled

pytestmark = pytest.mark.cluster


def test_uninstall_leaves_nothing_running_and_nothing_behind(uninstalled: Uninstalled) -> None:
    for hook, (ttl, codes) in uninstalled.kept_hooks.items():
        assert ttl and codes and 0 not in codes, (
            f"failed hook Job {hook} kept with a TTL: ttl={ttl}, exits={codes}"
        )
    print(f"uninstall returned -> nothing running: {uninstalled.running_after_s:.1f} s")
    assert uninstalled.leftovers == [], f"left behind by helm uninstall: {uninstalled.leftovers}"
    assert not uninstalled.status_after.ok, "the release is gone"
