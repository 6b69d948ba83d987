"""helm rollback: after the rejected upgrade (the champion keeps serving), then to the install's revision."""

from __future__ import annotations

import pytest

from .lib.deployed import Deployed
from .main_release import Accepted, Observed, Rejected

pytestmark = pytest.mark.cluster


def test_rollback_keeps_the_champion(accepted: Accepted, rejected: Rejected, rolled_back: Observed) -> None:
    assert rolled_back.alias == accepted.observed.alias, "production stayed on the accepted retrain"
    assert rolled_back.served.version == accepted.observed.served.version, (
        "the predictor serves the accepted retrain"
    )
    assert rolled_back.versions == rejected.observed.versions, "nothing was trained"


def test_rollback_to_the_install_restores_its_model(
    main: Deployed, installed: Observed, rejected: Rejected, rolled_back_first: Observed
) -> None:
    assert rolled_back_first.alias == installed.alias, "the rollback put the first model back"
    assert rolled_back_first.served.version == installed.served.version, (
        "the predictor serves the first model again"
    )
    assert rolled_back_first.versions == rejected.observed.versions, "nothing was trained"
    main.infer("e2e-infer-rollback-first")
    main.release.test().check()
    main.release.helm.run("history", main.release.name, "-n", main.ns)
