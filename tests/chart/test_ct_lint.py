"""`make ct-lint` (tests/chart/ct_lint.py around chart-testing's real `ct lint`): passes on the chart, and each of
ct's checks fails what it should, in a throwaway git repository holding a copy of the chart."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT

SCRIPT = ROOT / "tests" / "chart" / "ct_lint.py"
CHART_REL = "charts/housing-mlops"


def ct_lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, check=False
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


def version_of(chart: Path) -> str:
    return str(yaml.safe_load((chart / "Chart.yaml").read_text())["version"])


def bumped(version: str) -> str:
    major, minor, patch = version.split("-")[0].split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


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


def change_template(repo: Path) -> None:
    notes = chart_of(repo) / "templates" / "NOTES.txt"
    notes.write_text(notes.read_text() + "\nchanged\n")


def out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_real_chart_passes():
    result = ct_lint()
    assert result.returncode == 0, out(result)
    text = result.stdout
    assert "All charts linted successfully" in text
    assert f'✔︎ housing-mlops => (version: "{version_of(CHART)}", path: "{CHART_REL}")' in text
    # ct lints with each ci/ values file in turn, after the schema and yamllint
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        assert f'Linting chart with values file "{values.relative_to(ROOT)}"' in text
    assert "Validating " in text and "Linting " in text
    assert text.rstrip().endswith("ct-lint: ok")


def test_unchanged_copy_lints_everything_but_the_bump(repo: Path):
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 0, out(result)
    assert "no chart changed: ct lint --all" in result.stdout
    assert "--check-version-increment=false" in result.stdout
    assert "All charts linted successfully" in result.stdout


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
    set_version(chart_of(repo), bumped(version_of(chart_of(repo))))
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert expected in result.stdout
    assert "Error validating data" in result.stdout
    assert "ct-lint: FAILED: ct lint exited" in result.stdout


def test_version_not_a_string_fails(repo: Path):
    # YAML reads a float; one above the chart's version, so that the bump check lets it through to the schema
    major = int(version_of(chart_of(repo)).split(".")[0])
    set_version(chart_of(repo), f"{major + 1}.5")
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert f"version: '{major + 1}.5' is not a str." in result.stdout
    assert "ct-lint: FAILED" in result.stdout


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
    git(repo, "add", ".")
    set_version(chart_of(repo), bumped(version_of(chart_of(repo))))
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert "charts/housing-mlops/ci/99-bad-values.yaml" in result.stdout
    assert f"({rule})" in result.stdout


def test_yamllint_checks_values_yaml(repo: Path):
    values = chart_of(repo) / "values.yaml"
    values.write_text(values.read_text() + "\n\n\n")
    set_version(chart_of(repo), bumped(version_of(chart_of(repo))))
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert "(empty-lines)" in result.stdout


def test_helm_lint_runs_each_ci_values_file(repo: Path):
    (chart_of(repo) / "ci" / "99-bad-values.yaml").write_text("postgresql:\n  enabled: maybe\n")
    git(repo, "add", ".")
    set_version(chart_of(repo), bumped(version_of(chart_of(repo))))
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    text = result.stdout
    assert 'Linting chart with values file "charts/housing-mlops/ci/01-defaults-values.yaml"' in text
    assert 'Linting chart with values file "charts/housing-mlops/ci/99-bad-values.yaml"' in text
    # the schema error, naming the key as a JSON pointer (helm's WARN line with `path=postgresql.enabled` is a log
    # line that comes and goes: a cold run lacked it)
    assert "'/postgresql/enabled': got string, want boolean" in text.split("99-bad-values.yaml", 1)[1]


def test_chart_change_without_version_bump_fails(repo: Path):
    change_template(repo)
    git(repo, "commit", "-q", "-am", "change a template")
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert "changed since refs/heads/main: charts/housing-mlops" in result.stdout
    assert "chart version not ok. Needs a version bump!" in result.stdout

    old = version_of(chart_of(repo))
    set_version(chart_of(repo), bumped(old))
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 0, out(result)
    assert f"Old chart version: {old}" in result.stdout
    assert f"New chart version: {bumped(old)}" in result.stdout
    assert "Chart version ok." in result.stdout


def test_uncommitted_change_counts(repo: Path):
    change_template(repo)
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert "Needs a version bump!" in result.stdout


def test_lower_version_fails(repo: Path):
    set_version(chart_of(repo), "0.0.9")
    result = ct_lint("--repo", str(repo))
    assert result.returncode == 1, out(result)
    assert "New chart version: 0.0.9" in result.stdout
    assert "Needs a version bump!" in result.stdout


def test_origin_main_is_the_fallback_target(repo: Path, tmp_path: Path):
    clone = tmp_path / "clone"
    git(repo, "clone", "-q", "--branch", "feature", str(repo), str(clone))
    assert "main" not in git(clone, "branch", "--list", "main")  # only origin/main
    change_template(clone)
    result = ct_lint("--repo", str(clone))
    assert result.returncode == 1, out(result)
    assert "changed since origin/main" in result.stdout
    assert "Needs a version bump!" in result.stdout


def test_no_target_branch_lints_without_the_bump(repo: Path):
    change_template(repo)
    result = ct_lint("--repo", str(repo), "--target-branch", "trunk")
    assert result.returncode == 0, out(result)
    assert "no branch trunk (local or remote-tracking)" in result.stdout
    assert "All charts linted successfully" in result.stdout


def test_not_a_git_repository_is_named(tmp_path: Path):
    shutil.copytree(CHART, tmp_path / CHART_REL)
    result = ct_lint("--repo", str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path} is not a git work tree" in result.stderr


def test_missing_config_is_named(tmp_path: Path):
    result = ct_lint("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert f"no ct config at {tmp_path / 'nope.yaml'}" in result.stderr


def test_chart_lists_maintainers():
    """ct's maintainer check is off (it looks every name up as an account online); Chart.yaml still lists them."""
    assert yaml.safe_load((CHART / "Chart.yaml").read_text()).get("maintainers")
