"""A small typed Helm wrapper: every verb the e2e uses, returning what Helm says (revisions and hook objects read
from `helm history` and `helm get hooks`, never computed by counting)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class HelmError(AssertionError):
    """A Helm command failed where the scenario expected it to pass (its output is in the message)."""


@dataclass(frozen=True)
class Outcome:
    """One Helm command's result: the command line, exit code, output and how long it took."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> Outcome:
        if not self.ok:
            raise HelmError(
                f"{' '.join(self.argv)}: exit {self.returncode}\n{self.stdout[-4000:]}\n{self.stderr[-4000:]}"
            )
        return self


@dataclass(frozen=True)
class Revision:
    revision: int
    status: str
    description: str
    chart: str


@dataclass(frozen=True)
class Helm:
    """One Helm binary (4 by default; the staging scenario uses 3) on one kubeconfig."""

    binary: Path
    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 1800, echo: bool = True) -> Outcome:
        argv = [str(self.binary), *args, "--kubeconfig", str(self.kubeconfig)]
        shown = [Path(argv[0]).name, *args]
        if echo:
            print("+", " ".join(shown), flush=True)
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env or None)
        outcome = Outcome(shown, result.returncode, result.stdout, result.stderr, time.monotonic() - started)
        if echo and (result.stdout.strip() or result.returncode):
            print(result.stdout.rstrip(), result.stderr.rstrip(), sep="\n", flush=True)
        return outcome

    def version(self) -> str:
        return self.run("version", "--short", echo=False).check().stdout.strip()


@dataclass(frozen=True)
class Release:
    """One installed (or to-be-installed) release: its Helm, name, namespace, chart and values."""

    helm: Helm
    name: str
    namespace: str
    chart: str
    values: tuple[str, ...] = ()  # -f/--set style arguments every install/upgrade passes

    def _ns(self) -> list[str]:
        return ["-n", self.namespace]

    def install(self, *extra: str, wait: bool = True, timeout: str = "20m") -> Outcome:
        args = ["install", self.name, self.chart, *self._ns(), *self.values, *extra, "--timeout", timeout]
        return self.helm.run(*args, *(["--wait"] if wait else []))

    def upgrade(self, *extra: str, wait: bool = True, timeout: str = "20m", install: bool = False) -> Outcome:
        args = ["upgrade", self.name, self.chart, *self._ns(), *self.values, *extra, "--timeout", timeout]
        return self.helm.run(*args, *(["--install"] if install else []), *(["--wait"] if wait else []))

    def rollback(self, revision: int | None = None, timeout: str = "15m") -> Outcome:
        target = [str(revision)] if revision is not None else []
        return self.helm.run("rollback", self.name, *target, *self._ns(), "--wait", "--timeout", timeout)

    def test(self, logs: bool = True, timeout: str = "10m") -> Outcome:
        return self.helm.run(
            "test", self.name, *self._ns(), *(["--logs"] if logs else []), "--timeout", timeout
        )

    def uninstall(self, timeout: str = "10m") -> Outcome:
        return self.helm.run("uninstall", self.name, *self._ns(), "--wait", "--timeout", timeout)

    def history(self) -> list[Revision]:
        out = self.helm.run("history", self.name, *self._ns(), "-o", "json", echo=False).check().stdout
        return [
            Revision(int(r["revision"]), r["status"], r.get("description", ""), r.get("chart", ""))
            for r in json.loads(out)
        ]

    def last_revision(self) -> Revision:
        return max(self.history(), key=lambda r: r.revision)

    def install_key(self) -> str:
        """Which install of the release this is, as the hooks key their records: sha256 of Helm's
        info.first_deployed (one value per `helm install`), first 12 hex digits."""
        out = self.helm.run("status", self.name, *self._ns(), "-o", "json", echo=False).check().stdout
        return hashlib.sha256(str(json.loads(out)["info"]["first_deployed"]).encode()).hexdigest()[:12]

    def exists(self) -> bool:
        return self.helm.run("status", self.name, *self._ns(), echo=False).ok

    def manifest(self) -> list[dict[str, Any]]:
        """The objects of the deployed revision (`helm get manifest`)."""
        out = self.helm.run("get", "manifest", self.name, *self._ns(), echo=False).check().stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def hooks(self, revision: int) -> list[dict[str, Any]]:
        """The hook objects Helm rendered for ``revision`` (`helm get hooks --revision`)."""
        out = self.helm.run(
            "get", "hooks", self.name, *self._ns(), "--revision", str(revision), echo=False
        ).check()
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    def hook_job(self, revision: int, event: str) -> str:
        """The name of revision ``revision``'s hook Job that runs on ``event`` (e.g. post-upgrade)."""
        jobs = [
            h["metadata"]["name"]
            for h in self.hooks(revision)
            if h.get("kind") == "Job"
            and event in h["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")
        ]
        if len(jobs) != 1:
            raise AssertionError(
                f"revision {revision} of {self.name} has {len(jobs)} {event} hook Jobs: {jobs}"
            )
        return jobs[0]

    def objects(self, kind: str, component: str | None = None) -> list[dict[str, Any]]:
        """The manifest's objects of ``kind`` (and chart component, by its standard label)."""
        return [
            o
            for o in self.manifest()
            if o.get("kind") == kind
            and (
                component is None
                or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
            )
        ]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = self.objects(kind, component)
        if len(found) != 1:
            names = [o["metadata"]["name"] for o in found]
            raise AssertionError(f"{self.name}: expected one {kind} ({component}), found {names}")
        return found[0]
