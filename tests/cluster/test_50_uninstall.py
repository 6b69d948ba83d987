"""helm uninstall: nothing of the release is left."""

from __future__ import annotations

import pytest

from .main_release import Uninstalled

pytestmark = pytest.mark.cluster


def test_uninstall_leaves_nothing(uninstalled: Uninstalled) -> None:
    assert uninstalled.kept_hook_failed and uninstalled.kept_hook_ttl, (
        "the rejected candidate's hook Job was kept on purpose: failed, with a TTL "
        f"(failed={uninstalled.kept_hook_failed}, ttl={uninstalled.kept_hook_ttl})"
    )
    assert uninstalled.leftovers == [], f"left behind by helm uninstall: {uninstalled.leftovers}"
    assert not uninstalled.status_after.ok, "the release is gone"
