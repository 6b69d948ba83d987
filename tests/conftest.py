"""Options of the cluster e2e (tests/cluster/): `make test` never collects it; `--provider` selects it."""

from __future__ import annotations

from pathlib import Path

import pytest

CLUSTER_DIR = Path(__file__).parent / "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cluster e2e (tests/cluster, docs/cluster.md)")
    group.addoption(
        "--provider",
        choices=("local", "kind"),
        default=None,
        help="run the cluster e2e against the cluster ci/e2e-setup.sh brought up with this provider",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("--provider") is None and CLUSTER_DIR in (collection_path, *collection_path.parents):
        return True
    return None
