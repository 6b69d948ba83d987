"""`ct lint` (chart-testing v3, built by `make tools`) over charts/, as `make ct-lint` and `make test` run it.

ct lints only the charts that changed since the merge-base with its target branch, and checks their version
bump against that branch's Chart.yaml. A clone of main has no change, so ct alone would lint nothing there.
This runs it in two ways:

1. `ct list-changed`: when a chart changed, `ct lint` in ct's own mode (version bump, yamale schema, yamllint,
   `helm lint` per ci/*-values.yaml) on the changed charts;
2. otherwise `ct lint --all --check-version-increment=false`: every check but the bump, on every chart.

The target branch is the config's (`main`): the local branch when there is one, else `origin/main`, given to
ct as `--remote refs/heads` or `--remote origin` (ct compares against `<remote>/<target-branch>`). Without
either ct cannot compare, and (2) runs, said as such. ct's schema and lint config are ci/ct/'s, given as
absolute paths so that a chart repository elsewhere (`--repo`, the tests) is checked by the same rules.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "ci" / "ct" / "ct.yaml"
TOOLS = ROOT / ".tools"
CT = TOOLS / "bin" / "ct"
# ct finds helm, git, yamllint and yamale on PATH
PATH_DIRS = (TOOLS / "bin", TOOLS / "scanners" / "bin")
NEEDED = (CT, TOOLS / "bin" / "helm", *(TOOLS / "scanners" / "bin" / name for name in ("yamllint", "yamale")))


def log(message: str) -> None:
    print(f"ct-lint: {message}", flush=True)


def git_ok(repo: Path, *args: str) -> bool:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=False).returncode == 0


def target_remote(repo: Path, remote: str, branch: str) -> str | None:
    """The `--remote` that makes ct's `<remote>/<branch>` name the local branch, else the remote-tracking one."""
    for prefix in ("refs/heads", remote):
        if git_ok(repo, "rev-parse", "--verify", "--quiet", f"{prefix}/{branch}^{{commit}}"):
            return prefix
    return None


def ct_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.pathsep.join([*map(str, PATH_DIRS), os.environ.get("PATH", "")]),
        "HELM_PLUGINS": str(TOOLS / "helm-plugins"),
        "HELM_CACHE_HOME": str(TOOLS / "helm-cache"),
    }


def ct(repo: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ct COMMAND, output echoed as it comes (ct prints each step and the tools' own findings)."""
    argv = [str(CT), command, *args]
    log("$ " + " ".join(argv))
    result = subprocess.run(
        argv, cwd=repo, env=ct_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", type=Path, default=ROOT, help="git repository holding the charts (default: this one)"
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="ct config (default: ci/ct/ct.yaml)")
    parser.add_argument("--target-branch", help="branch to compare versions against (default: the config's)")
    args = parser.parse_args(argv)
    for tool in NEEDED:
        if not tool.exists():
            print(f"ct-lint: {tool} missing: run `make tools`", file=sys.stderr)
            return 2
    config_path = args.config.resolve()
    if not config_path.is_file():
        print(f"ct-lint: no ct config at {config_path}", file=sys.stderr)
        return 2
    config = yaml.safe_load(config_path.read_text()) or {}
    repo = args.repo.resolve()
    if not git_ok(repo, "rev-parse", "--is-inside-work-tree"):
        print(
            f"ct-lint: {repo} is not a git work tree (ct compares chart versions through git)",
            file=sys.stderr,
        )
        return 2
    branch = args.target_branch or str(config.get("target-branch", "master"))
    remote = target_remote(repo, str(config.get("remote", "origin")), branch)
    here = config_path.parent
    common = ["--config", str(config_path), "--target-branch", branch]
    lint_files = [
        "--chart-yaml-schema",
        str(here / Path(config.get("chart-yaml-schema", "chart_schema.yaml")).name),
        "--lint-conf",
        str(here / Path(config.get("lint-conf", "lintconf.yaml")).name),
    ]
    changed: list[str] = []
    if remote is None:
        log(f"no branch {branch} (local or remote-tracking): no version to compare against")
    else:
        common += ["--remote", remote]
        listed = ct(repo, "list-changed", *common)
        if listed.returncode != 0:
            log(f"FAILED: ct list-changed against {remote}/{branch} exited {listed.returncode}")
            return 1
        changed = [line for line in listed.stdout.splitlines() if (repo / line / "Chart.yaml").is_file()]
    if changed:
        log(f"changed since {remote}/{branch}: {', '.join(changed)}: ct lint with the version-bump check")
        result = ct(repo, "lint", *common, *lint_files)
    else:
        log("no chart changed: ct lint --all, every check but the version bump")
        result = ct(repo, "lint", *common, *lint_files, "--all", "--check-version-increment=false")
    if result.returncode != 0:
        log(f"FAILED: ct lint exited {result.returncode} (its output above names the check)")
        return 1
    log("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
