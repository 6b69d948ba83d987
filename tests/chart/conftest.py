"""Shared fixtures of the chart tests: the pinned tools in .tools/, rendering, KServe's CRD schemas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "housing-mlops"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
HELM_PLUGINS = TOOLS / "helm-plugins"
KSERVE_MODULE = "github.com/kserve/kserve"
# The KServe objects are validated against the CRDs of every KServe an e2e installs: both providers install the
# one ci/cluster/pins.env pins (ci/e2e-setup.sh).
KSERVE_VERSIONS = (
    re.search(r"^KSERVE_VERSION=(v\S+)$", (ROOT / "ci/cluster/pins.env").read_text(), re.MULTILINE)[1],
)
KUBE_VERSIONS = ("1.30.0", "1.35.0")
KSERVE_APIS = (
    "serving.kserve.io/v1beta1/InferenceService",
    "serving.kserve.io/v1alpha1/ServingRuntime",
    "serving.kserve.io/v1alpha1/ClusterStorageContainer",
)
RELEASE = "housing"
NAMESPACE = "ml"

# every values file a user or CI installs with: values/*.yaml and the chart's ci/ scenarios
VALUES_FILES = sorted((ROOT / "values").glob("*.yaml")) + sorted((CHART / "ci").glob("*.yaml"))


def values_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def helm_env() -> dict[str, str]:
    return {**os.environ, "HELM_PLUGINS": str(HELM_PLUGINS), "HELM_CACHE_HOME": str(TOOLS / "helm-cache")}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} missing: run `make tools`")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=helm_env(), check=False)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def template_args(
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = KSERVE_APIS,
    kube_version: str = "1.35.0",
    upgrade: bool = False,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version]
    if upgrade:
        args.append("--is-upgrade")
    for api in api_versions:
        args += ["--api-versions", api]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@cache
def render(
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    kube_version: str = "1.35.0",
    api_versions: tuple[str, ...] = KSERVE_APIS,
    upgrade: bool = False,
) -> tuple[dict, ...]:
    """`helm template` (tests included) parsed into objects; cached per argument set.

    Renders a first install unless `upgrade` (then .Release.IsUpgrade: no bootstrap promotion).
    """
    out = helm(*template_args(values, sets, api_versions, kube_version, upgrade)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def pods_of(obj: dict) -> list[dict]:
    """Pod specs inside a rendered object (Deployment, StatefulSet, Job, CronJob, Pod)."""
    kind = obj["kind"]
    if kind == "Pod":
        return [obj["spec"]]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


@cache
def kserve_crd_dir(version: str) -> Path:
    """KServe's own CRDs at a version, fetched at test time from its Go module (never committed)."""
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False)
    cached = Path(modcache.stdout.strip()) / f"{KSERVE_MODULE}@{version}" / "config" / "crd" / "full"
    if modcache.returncode == 0 and modcache.stdout.strip() and cached.is_dir():
        return cached  # the module cache is read-only and checksum-verified when it was filled
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{KSERVE_MODULE}@{version}"],
            capture_output=True,
            text=True,
            cwd=tmp,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            check=False,
        )
    if result.returncode != 0:
        pytest.fail(f"go mod download {KSERVE_MODULE}@{version} failed:\n{result.stderr}{result.stdout}")
    crds = Path(json.loads(result.stdout)["Dir"]) / "config" / "crd" / "full"
    if not crds.is_dir():
        pytest.fail(f"{crds} missing from the KServe module")
    return crds


@pytest.fixture(scope="session", params=KSERVE_VERSIONS, ids=lambda v: f"kserve-{v}")
def kserve_schemas(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every KServe CRD, for each KServe version of KSERVE_VERSIONS."""
    schemas = {}
    # v0.20 keeps some CRDs in subfolders (clusterstoragecontainer/, localmodel/, llmisvc/)
    for path in sorted(kserve_crd_dir(request.param).rglob("serving.kserve.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas
