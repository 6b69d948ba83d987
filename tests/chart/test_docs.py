"""charts/housing-mlops/README.md is helm-docs' output (README.md.gotmpl + the `# --` comments of values.yaml).

The drift test re-renders it with the pinned helm-docs (`make chart-docs` writes it) and fails on any difference;
the coverage test fails on a value that neither it nor an ancestor documents (helm-docs' own strict mode also
demands comments on every parent map, which no chart writes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT, TOOLS

HELM_DOCS = TOOLS / "bin" / "helm-docs"
# The same flags as `make chart-docs` (mk/chart.mk); test_make_target_uses_the_same_flags keeps them equal.
FLAGS = ["--sort-values-order", "file", "--ignore-non-descriptions"]
ROW = re.compile(r"^\| (\S+) \| ")


def helm_docs(root: Path) -> str:
    """The README helm-docs renders for `root`/charts/housing-mlops, without writing it."""
    if not HELM_DOCS.exists():
        pytest.fail(f"{HELM_DOCS} missing: run `make tools`")
    run = subprocess.run(
        [
            str(HELM_DOCS),
            "--chart-search-root",
            "charts",
            "--chart-to-generate",
            "charts/housing-mlops",
            *FLAGS,
            "--dry-run",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout, f"helm-docs rendered nothing under {root}: {run.stderr}"
    return run.stdout


def documented_keys(readme: str) -> set[str]:
    return {m.group(1) for line in readme.splitlines() if (m := ROW.match(line))}


def undocumented(values: dict, documented: set[str]) -> list[str]:
    """Leaf values that neither they nor an ancestor have a row for."""
    missing: list[str] = []

    def walk(node, path: list[str]) -> None:
        key = ".".join(path)
        if key in documented:
            return
        if isinstance(node, dict) and node:
            for child, value in node.items():
                walk(value, [*path, child])
        else:
            missing.append(key)

    walk(values, [])
    return missing


def copy_chart(tmp_path: Path) -> Path:
    dest = tmp_path / "charts" / "housing-mlops"
    shutil.copytree(CHART, dest, ignore=shutil.ignore_patterns("unittests", "*.tgz"))
    return dest


def test_readme_is_helm_docs_output():
    rendered = helm_docs(ROOT)
    assert (CHART / "README.md").read_text() == rendered, (
        "charts/housing-mlops/README.md drifted: run `make chart-docs`"
    )


def test_every_value_is_documented():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert undocumented(values, documented_keys((CHART / "README.md").read_text())) == []


def test_make_target_uses_the_same_flags():
    recipe = (ROOT / "mk" / "chart.mk").read_text()
    assert (
        "helm-docs --chart-search-root charts --chart-to-generate charts/housing-mlops " + " ".join(FLAGS)
        in recipe
    )


def test_an_edited_comment_is_drift(tmp_path):
    chart = copy_chart(tmp_path)
    values = chart / "values.yaml"
    values.write_text(
        values.read_text().replace("Pull policy of every image", "Pull policy of each image", 1)
    )
    rendered = helm_docs(tmp_path)
    assert "Pull policy of each image" in rendered
    assert rendered != (CHART / "README.md").read_text()


def test_an_undocumented_value_is_detected(tmp_path):
    chart = copy_chart(tmp_path)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("\ntests:\n", "\ntests:\n  undocumentedKnob: 1\n", 1))
    rendered = helm_docs(tmp_path)
    assert undocumented(yaml.safe_load(values.read_text()), documented_keys(rendered)) == [
        "tests.undocumentedKnob"
    ]
