"""The chart and images as ci/e2e-setup.sh published them to the loopback registry: signatures verify."""

from __future__ import annotations

import subprocess

import pytest

from .lib.setup import ROOT, Setup, phase

pytestmark = [pytest.mark.cluster, pytest.mark.provider("local")]


def test_published_chart_and_images_verify(setup: Setup) -> None:
    with phase("verify"):
        result = subprocess.run(
            [
                str(ROOT / "ci" / "verify.sh"),
                "--registry",
                setup.registry_addr,
                "--plain-http",
                "--key",
                str(setup.publish_dir / "cosign.pub"),
                "--published",
                str(setup.publish_dir / "published.txt"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"ci/verify.sh: exit {result.returncode}: {result.stderr[-2000:]}"
