"""helm-unittest suites (charts/housing-mlops/unittests/<component>/*_test.yaml), run by the pinned plugin."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .conftest import CHART, helm

MIN_CASES = 60


def test_helm_unittest_suites(tmp_path: Path):
    report = tmp_path / "unittest.xml"
    result = helm(
        "unittest",
        "--file",
        "unittests/**/*_test.yaml",
        "--output-type",
        "JUnit",
        "--output-file",
        str(report),
        str(CHART),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cases = ET.parse(report).getroot().iter("testcase")
    names = [case.get("name") for case in cases]
    print(f"helm-unittest: {len(names)} cases passed")
    assert len(names) >= MIN_CASES


def test_every_subchart_has_a_suite():
    suites = {p.parent.name for p in (CHART / "unittests").glob("*/*_test.yaml")}
    subcharts = {p.name for p in (CHART / "charts").iterdir() if p.is_dir()}
    assert subcharts <= suites
