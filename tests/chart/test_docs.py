"""The chart README lists every value with its default and meaning, and matches values.yaml."""

from __future__ import annotations

from .conftest import CHART
from .values_doc import parse, render_readme, undocumented


def test_readme_matches_values():
    committed = (CHART / "README.md").read_text()
    assert committed == render_readme(), "charts/housing-mlops/README.md drifted: run `make chart-docs`"


def test_every_value_is_documented():
    values = CHART / "values.yaml"
    assert undocumented(values, parse(values)) == []


def test_undocumented_values_are_detected(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("a:\n  # -- documented\n  b: 1\n  c: 2\n")
    assert undocumented(values, parse(values)) == ["a.c"]
