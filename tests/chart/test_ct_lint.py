"""tests/chart/ct_lint.py (ct lint's steps): passes on the chart, and each step fails what ct would fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT
from .ct_lint import SemVer

SCRIPT = ROOT / "tests" / "chart" / "ct_lint.py"
CHART_REL = "charts/housing-mlops"


def ct_lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def set_version(chart: Path, version: str) -> None:
    text = (chart / "Chart.yaml").read_text()
    lines = [f"version: {version}" if line.startswith("version:") else line for line in text.splitlines()]
    (chart / "Chart.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose `main` holds a copy of the chart, checked out on a branch `feature`."""
    shutil.copytree(CHART, tmp_path / CHART_REL)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "chart")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    return tmp_path


def chart_of(repo: Path) -> Path:
    return repo / CHART_REL


def test_real_chart_passes():
    result = ct_lint()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ct-lint: ok: charts/housing-mlops (version, schema, yamllint, maintainers, helm-lint)" in out
    # ct's lint installs the ci/ values files one by one: one helm lint each
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        assert f"ct-lint: helm-lint: ok: {values.relative_to(ROOT)}" in out
        assert f"ct-lint: yamllint: ok: {values.relative_to(ROOT)}" in out


def test_copy_passes_every_step(repo: Path):
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ct-lint: version: ok: no chart changes in charts/housing-mlops since main" in result.stdout


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text.replace("\nname:", "\n# name:", 1), "name: Required field missing"),
        (lambda text: text + "unknown: 1\n", "unknown: Unexpected element"),
        (
            lambda text: text.replace("artifacthub.io/license: Apache-2.0", "artifacthub.io/license: 2"),
            "not a str",
        ),
    ],
    ids=["name-missing", "unknown-key", "annotation-not-a-string"],
)
def test_schema_violation_fails(repo: Path, edit, expected: str):
    chart_yaml = chart_of(repo) / "Chart.yaml"
    chart_yaml.write_text(edit(chart_yaml.read_text()))
    result = ct_lint("--repo", str(repo), "--steps", "schema")
    assert result.returncode == 1, result.stdout
    assert (
        "ct-lint: schema: FAIL: charts/housing-mlops/Chart.yaml does not match chart_schema.yaml"
        in result.stdout
    )
    assert expected in result.stdout.split("FAIL:", 1)[1]


def test_version_not_a_string_fails(repo: Path):
    set_version(chart_of(repo), "0.3")  # YAML reads a float
    result = ct_lint("--repo", str(repo), "--steps", "schema")
    assert result.returncode == 1
    assert "version: '0.3' is not a str" in result.stdout


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ("postgresql:\n  enabled: true   \n", "trailing-spaces"),
        ("postgresql:\n  enabled: true\npostgresql:\n  enabled: false\n", "key-duplicates"),
        ("postgresql:\n  enabled: true", "new-line-at-end-of-file"),
        ("postgresql:   {enabled: true}\n", "colons"),
    ],
)
def test_yamllint_error_fails(repo: Path, content: str, rule: str):
    (chart_of(repo) / "ci" / "99-bad-values.yaml").write_text(content)
    result = ct_lint("--repo", str(repo), "--steps", "yamllint")
    assert result.returncode == 1
    assert "ct-lint: yamllint: FAIL: charts/housing-mlops/ci/99-bad-values.yaml" in result.stdout
    assert f"({rule})" in result.stdout
    assert "ct-lint: FAILED (1): yamllint: charts/housing-mlops/ci/99-bad-values.yaml" in result.stdout


def test_yamllint_checks_values_yaml(repo: Path):
    values = chart_of(repo) / "values.yaml"
    values.write_text(values.read_text() + "\n\n\n")
    result = ct_lint("--repo", str(repo), "--steps", "yamllint")
    assert result.returncode == 1
    assert "ct-lint: yamllint: FAIL: charts/housing-mlops/values.yaml" in result.stdout


def test_helm_lint_runs_each_ci_values_file(repo: Path):
    (chart_of(repo) / "ci" / "99-bad-values.yaml").write_text("postgresql:\n  enabled: maybe\n")
    result = ct_lint("--repo", str(repo), "--steps", "helm-lint")
    assert result.returncode == 1
    assert "ct-lint: helm-lint: FAIL: charts/housing-mlops/ci/99-bad-values.yaml" in result.stdout
    assert "ct-lint: helm-lint: ok: charts/housing-mlops/ci/01-defaults-values.yaml" in result.stdout


def test_missing_maintainers_fails(repo: Path):
    chart_yaml = chart_of(repo) / "Chart.yaml"
    text = chart_yaml.read_text()
    start = text.index("maintainers:\n")
    end = text.index("keywords:", start)
    chart_yaml.write_text(text[:start] + text[end:])
    result = ct_lint("--repo", str(repo), "--steps", "maintainers")
    assert result.returncode == 1
    assert "ct-lint: maintainers: FAIL: charts/housing-mlops/Chart.yaml has no maintainers" in result.stdout


def test_chart_change_without_version_bump_fails(repo: Path):
    template = chart_of(repo) / "templates" / "NOTES.txt"
    template.write_text(template.read_text() + "\nchanged\n")
    git(repo, "commit", "-q", "-am", "change a template")
    result = ct_lint("--repo", str(repo), "--steps", "version")
    assert result.returncode == 1
    assert "ct-lint: version: FAIL: charts/housing-mlops changed since main" in result.stdout
    assert "is not greater than main's" in result.stdout
    assert "bump `version` in Chart.yaml" in result.stdout

    set_version(chart_of(repo), _bumped(_version(repo)))
    result = ct_lint("--repo", str(repo), "--steps", "version")
    assert result.returncode == 0, result.stdout
    assert f"version {_version_on(repo, 'main')} -> {_version(repo)}" in result.stdout


def test_uncommitted_and_untracked_changes_count(repo: Path):
    (chart_of(repo) / "templates" / "new.yaml").write_text("# new\n")
    result = ct_lint("--repo", str(repo), "--steps", "version")
    assert result.returncode == 1
    assert "e.g. charts/housing-mlops/templates/new.yaml" in result.stdout


def test_lower_version_fails(repo: Path):
    set_version(chart_of(repo), "0.0.9")
    result = ct_lint("--repo", str(repo), "--steps", "version")
    assert result.returncode == 1
    assert "version 0.0.9 is not greater than main's" in result.stdout


def test_origin_main_is_the_fallback_target(repo: Path, tmp_path: Path):
    clone = tmp_path / "clone"
    git(repo, "clone", "-q", "--branch", "feature", str(repo), str(clone))
    assert "main" not in git(clone, "branch", "--list", "main")  # only origin/main
    template = chart_of(clone) / "templates" / "NOTES.txt"
    template.write_text(template.read_text() + "\nchanged\n")
    result = ct_lint("--repo", str(clone), "--steps", "version")
    assert result.returncode == 1
    assert "changed since origin/main" in result.stdout


def test_no_target_branch_passes(repo: Path):
    template = chart_of(repo) / "templates" / "NOTES.txt"
    template.write_text(template.read_text() + "\nchanged\n")
    result = ct_lint("--repo", str(repo), "--steps", "version", "--target-branch", "trunk")
    assert result.returncode == 0, result.stdout
    assert "ct-lint: version: ok: no target branch trunk or origin/trunk: skipped" in result.stdout


def test_every_failure_is_named(repo: Path):
    chart = chart_of(repo)
    set_version(chart, "0.3")
    (chart / "ci" / "99-bad-values.yaml").write_text("a: 1   \n")
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("ct-lint: FAILED (")
    for step in ("version:", "schema:", "yamllint:"):
        assert step in summary


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("0.1.0", "0.2.0"),
        ("0.9.0", "0.10.0"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.2", "1.0.0-alpha.10"),
        ("1.0.0-alpha.10", "1.0.0-beta"),
        ("1.2.3", "v1.2.4"),
    ],
)
def test_semver_precedence(older: str, newer: str):
    assert SemVer.parse(older) < SemVer.parse(newer)
    assert not SemVer.parse(newer) < SemVer.parse(older)


def test_semver_build_metadata_is_no_bump():
    assert not SemVer.parse("0.2.0+build.1") > SemVer.parse("0.2.0")
    with pytest.raises(ValueError, match="not a semantic version"):
        SemVer.parse("0.2")


def _version(repo: Path) -> str:
    return str(yaml.safe_load((chart_of(repo) / "Chart.yaml").read_text())["version"])


def _version_on(repo: Path, branch: str) -> str:
    return str(yaml.safe_load(git(repo, "show", f"{branch}:{CHART_REL}/Chart.yaml"))["version"])


def _bumped(version: str) -> str:
    parsed = SemVer.parse(version)
    return f"{parsed.major}.{parsed.minor}.{parsed.patch + 1}"
