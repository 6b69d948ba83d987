"""chart-testing's `ct lint`, step by step, with the tools ct itself runs (`make ct-lint`, part of `make test`).

chart-testing is not installable here, so this runs what `ct lint --config ci/ct/ct.yaml` runs for every chart
in the config's chart-dirs (charts/housing-mlops), with the same tools and configuration:

- version: the chart directory differs between the merge-base with the target branch (`main`, else
  `origin/main`) and the working tree (untracked files included) -> Chart.yaml `version` must be
  semver-greater than the target branch's. Nothing changed, no target branch or a new chart: passes.
- schema: `yamale --schema ci/ct/chart_schema.yaml Chart.yaml` (strict: unknown keys fail too).
- yamllint: `yamllint --config-file ci/ct/lintconf.yaml` on Chart.yaml, values.yaml and ci/*-values.yaml.
- maintainers: Chart.yaml lists maintainers (a deprecated chart none). ct's account look-up through GitHub's API
  is off (validate-maintainers: false, see ci/ct/ct.yaml).
- helm-lint: `helm lint <chart> --values <file> <helm-lint-extra-args>` for each ci/*-values.yaml in turn (plain
  `helm lint` when there is none), as ct's lint does.

Unlike ct, every step runs even after one failed; the last line names each failure, the exit status is 1.
yamllint and yamale come from .tools/scanners (`make tools`), helm from .tools/bin.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import total_ordering
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "ci" / "ct" / "ct.yaml"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
SCANNERS = TOOLS / "scanners" / "bin"
STEPS = ("version", "schema", "yamllint", "maintainers", "helm-lint")

# semver.org's regex; ct's parser (Masterminds semver) also takes a leading "v"
SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True)
class SemVer:
    """A semantic version ordered by SemVer 2.0 precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        match = SEMVER.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a semantic version")
        major, minor, patch, pre, _build = match.groups()
        return cls(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else ())

    def _key(self) -> tuple:
        # a release sorts after its prereleases; numeric identifiers sort before alphanumeric ones
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()


@dataclass(frozen=True)
class Config:
    """The parts of ci/ct/ct.yaml that lint reads."""

    remote: str
    target_branch: str
    chart_dirs: tuple[str, ...]
    chart_yaml_schema: Path
    lint_conf: Path
    check_version_increment: bool
    validate_maintainers: bool
    helm_lint_extra_args: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Config:
        data = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parents[2]  # ci/ct/ct.yaml -> the repository holding it
        return cls(
            remote=str(data.get("remote", "origin")),
            target_branch=str(data.get("target-branch", "master")),
            chart_dirs=tuple(data.get("chart-dirs", ["charts"])),
            chart_yaml_schema=base / data.get("chart-yaml-schema", "ci/ct/chart_schema.yaml"),
            lint_conf=base / data.get("lint-conf", "ci/ct/lintconf.yaml"),
            check_version_increment=bool(data.get("check-version-increment", True)),
            validate_maintainers=bool(data.get("validate-maintainers", True)),
            helm_lint_extra_args=tuple(shlex.split(str(data.get("helm-lint-extra-args", "")))),
        )


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def ok(self, step: str, message: str) -> None:
        print(f"ct-lint: {step}: ok: {message}", flush=True)

    def fail(self, step: str, message: str, output: str = "") -> None:
        print(f"ct-lint: {step}: FAIL: {message}", flush=True)
        for line in output.strip().splitlines():
            print(f"ct-lint:   {line}", flush=True)
        self.failures.append(f"{step}: {message}")


def run(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, check=False)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], repo)


def chart_yaml(chart: Path) -> dict:
    data = yaml.safe_load((chart / "Chart.yaml").read_text())
    return data if isinstance(data, dict) else {}


def target_ref(repo: Path, config: Config) -> str | None:
    """The target branch: the local branch, else the remote-tracking one; None without either."""
    for ref in (f"refs/heads/{config.target_branch}", f"refs/remotes/{config.remote}/{config.target_branch}"):
        if git(repo, "rev-parse", "--verify", "--quiet", ref).returncode == 0:
            return ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
    return None


def check_version(repo: Path, chart: str, config: Config, report: Report) -> None:
    step = "version"
    target = target_ref(repo, config)
    if target is None:
        report.ok(
            step,
            f"no target branch {config.target_branch} or {config.remote}/{config.target_branch}: skipped",
        )
        return
    base = git(repo, "merge-base", target, "HEAD")
    if base.returncode != 0:
        report.fail(step, f"no merge-base of {target} and HEAD (shallow clone? fetch {target}'s history)")
        return
    merge_base = base.stdout.strip()
    changed = git(repo, "diff", "--find-renames", "--name-only", merge_base, "--", chart).stdout.split()
    changed += git(repo, "ls-files", "--others", "--exclude-standard", "--", chart).stdout.split()
    if not changed:
        report.ok(step, f"no chart changes in {chart} since {target} (merge-base {merge_base[:12]})")
        return
    old = git(repo, "show", f"{target}:{chart}/Chart.yaml")
    if old.returncode != 0:
        report.ok(step, f"{chart} is new on {target}: no version to compare")
        return
    old_version = str((yaml.safe_load(old.stdout) or {}).get("version", ""))
    new_version = str(chart_yaml(repo / chart).get("version", ""))
    try:
        bumped = SemVer.parse(new_version) > SemVer.parse(old_version)
    except ValueError as error:
        report.fail(step, f"{chart}/Chart.yaml: {error}")
        return
    if not bumped:
        report.fail(
            step,
            f"{chart} changed since {target} ({len(changed)} files, e.g. {changed[0]}) but version {new_version} "
            f"is not greater than {target}'s {old_version}: bump `version` in Chart.yaml (CONTRIBUTING.md)",
        )
        return
    report.ok(step, f"{chart} changed since {target}, version {old_version} -> {new_version}")


def check_schema(repo: Path, chart: str, config: Config, report: Report) -> None:
    target = f"{chart}/Chart.yaml"
    result = run([str(SCANNERS / "yamale"), "--schema", str(config.chart_yaml_schema), target], repo)
    if result.returncode != 0:
        report.fail(
            "schema",
            f"{target} does not match {config.chart_yaml_schema.name}",
            result.stdout + result.stderr,
        )
    else:
        report.ok("schema", f"{target} matches {config.chart_yaml_schema.name}")


def check_yamllint(repo: Path, chart: str, config: Config, report: Report) -> None:
    files = [f"{chart}/Chart.yaml", f"{chart}/values.yaml", *ci_values(repo, chart)]
    # one run for every file (ct runs one per file: same findings); parsable lines are `file:line:col: [level] ...`
    args = [
        str(SCANNERS / "yamllint"),
        "--format",
        "parsable",
        "--config-file",
        str(config.lint_conf),
        *files,
    ]
    result = run(args, repo)
    findings: dict[str, list[str]] = {name: [] for name in files}
    for line in result.stdout.splitlines():
        name = line.split(":", 1)[0]
        findings.setdefault(name, []).append(line)
    if result.returncode != 0 and not any("[error]" in line for lines in findings.values() for line in lines):
        report.fail("yamllint", f"yamllint failed ({result.returncode})", result.stdout + result.stderr)
        return
    for name, lines in findings.items():
        if any("[error]" in line for line in lines):
            report.fail("yamllint", name, "\n".join(lines))
        else:
            warnings = len(lines)
            report.ok("yamllint", name + (f" ({warnings} warnings)" if warnings else ""))


def check_maintainers(repo: Path, chart: str, config: Config, report: Report) -> None:
    meta = chart_yaml(repo / chart)
    maintainers = meta.get("maintainers") or []
    if meta.get("deprecated"):
        if maintainers:
            report.fail("maintainers", f"{chart} is deprecated and must not list maintainers")
        else:
            report.ok("maintainers", f"{chart} is deprecated, no maintainers")
    elif not maintainers:
        report.fail("maintainers", f"{chart}/Chart.yaml has no maintainers")
    else:
        names = ", ".join(str(m.get("name")) for m in maintainers if isinstance(m, dict))
        lookup = "" if config.validate_maintainers else " (account look-up off: validate-maintainers: false)"
        report.ok("maintainers", f"{names}{lookup}")


def check_helm_lint(repo: Path, chart: str, config: Config, report: Report) -> None:
    env = {
        **os.environ,
        "HELM_PLUGINS": str(TOOLS / "helm-plugins"),
        "HELM_CACHE_HOME": str(TOOLS / "helm-cache"),
    }
    for values in ci_values(repo, chart) or [""]:
        args = [
            str(HELM),
            "lint",
            chart,
            *(["--values", values] if values else []),
            *config.helm_lint_extra_args,
        ]
        result = run(args, repo, env)
        label = values or f"{chart} (default values)"
        if result.returncode != 0:
            report.fail("helm-lint", label, result.stdout + result.stderr)
        else:
            report.ok("helm-lint", label)


def ci_values(repo: Path, chart: str) -> list[str]:
    return [str(p.relative_to(repo)) for p in sorted((repo / chart / "ci").glob("*-values.yaml"))]


def charts_of(repo: Path, config: Config) -> list[str]:
    """Every chart directly under the config's chart-dirs, as ct finds them."""
    return [
        str(path.parent.relative_to(repo))
        for chart_dir in config.chart_dirs
        for path in sorted((repo / chart_dir).glob("*/Chart.yaml"))
    ]


CHECKS: dict[str, Callable[[Path, str, Config, Report], None]] = {
    "version": check_version,
    "schema": check_schema,
    "yamllint": check_yamllint,
    "maintainers": check_maintainers,
    "helm-lint": check_helm_lint,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", type=Path, default=ROOT, help="git repository holding the charts (default: this)"
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="ct config (default: ci/ct/ct.yaml)")
    parser.add_argument("--target-branch", help="branch to compare versions against (default: the config's)")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)} (default: all)"
    )
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    config = Config.load(args.config)
    if args.target_branch:
        config = replace(config, target_branch=args.target_branch)
    if not config.check_version_increment and "version" in steps:
        steps.remove("version")
        print("ct-lint: version: skipped (check-version-increment: false)")
    for tool in (HELM, SCANNERS / "yamale", SCANNERS / "yamllint"):
        if not tool.exists():
            print(f"ct-lint: {tool} missing: run `make tools`", file=sys.stderr)
            return 2
    repo = args.repo.resolve()
    charts = charts_of(repo, config)
    if not charts:
        print(f"ct-lint: no charts under {', '.join(config.chart_dirs)} in {repo}", file=sys.stderr)
        return 2
    report = Report()
    for chart in charts:
        print(f"ct-lint: linting {chart} (version {chart_yaml(repo / chart).get('version')})")
        for step in steps:
            CHECKS[step](repo, chart, config, report)
    if report.failures:
        print(f"ct-lint: FAILED ({len(report.failures)}): " + "; ".join(report.failures))
        return 1
    print(f"ct-lint: ok: {', '.join(charts)} ({', '.join(steps)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
