"""Continuous training (the retrain CronJob on the newest dataset version) and an alias moved outside Helm."""

from __future__ import annotations

import pytest

from .lib.deployed import Deployed
from .lib.setup import Datasets
from .main_release import Observed, Rejected, Retrained, newest

pytestmark = pytest.mark.cluster


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


def test_alias_moved_outside_helm_is_served(
    main: Deployed, installed: Observed, reconciled: Observed
) -> None:
    assert reconciled.alias == installed.served.version
    assert reconciled.served.version == installed.served.version, (
        "the predictor serves the alias moved outside Helm"
    )
    main.infer("e2e-infer-reconciled")
