"""The cluster e2e's provisioning (ci/e2e-setup.sh), its kind pins and manifests (ci/kind/), the CI workflow and
the pytest plan (tests/cluster/), checked without a cluster.

shellcheck and actionlint clean; the script's arguments; everything the kind path installs beyond our chart
pinned, every wait bounded; every helm/kubectl/kind command line it runs parses with the pinned tools; KServe's
and cert-manager's own charts at the pinned tags take the settings it passes; setup.env is written where, and
with what, the pytest session reads; `make e2e-plan` collects the scenarios and `make test` does not.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ci" / "e2e-setup.sh"
KIND_DIR = ROOT / "ci" / "kind"
WORKFLOWS = ROOT / ".github" / "workflows"
TOOLS_BIN = ROOT / ".tools" / "bin"
SEMVER = r"v?\d+\.\d+\.\d+"


def _tool(name: str) -> str | None:
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


@pytest.fixture(scope="session")
def linters() -> dict[str, str]:
    """shellcheck and actionlint; `make e2e-tools` installs them once if missing, else the tests skip."""
    found = {name: _tool(name) for name in ("shellcheck", "actionlint")}
    if not all(found.values()):
        result = subprocess.run(
            ["make", "-s", "e2e-tools"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        found = {name: _tool(name) for name in found}
        missing = [name for name, path in found.items() if not path]
        if missing:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            pytest.skip(f"cannot install {', '.join(missing)} (`make e2e-tools`: {' | '.join(tail)})")
    return found  # type: ignore[return-value]


def script_var(name: str) -> str:
    """A variable's value as ci/e2e-setup.sh sets it (KSERVE_VERSION: from ci/cluster/pins.env, as it does)."""
    if name == "KSERVE_VERSION":
        match = re.search(r"^KSERVE_VERSION=(\S+)$", (ROOT / "ci/cluster/pins.env").read_text(), re.MULTILINE)
    else:
        match = re.search(rf"^\s*{name}=([^$\s(]\S*)", SCRIPT.read_text(), re.MULTILINE)
    assert match, f"{name} is not set in ci/e2e-setup.sh"
    return match.group(1)


def run_lines() -> list[list[str]]:
    """The argv of every `run ...` line of ci/e2e-setup.sh (continuations joined), with the script's own
    literal values substituted and any other variable as `x`."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    names = set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    values = {n: script_var(n) for n in names if re.search(rf"^\s*{n}=[^$\s(]", text, re.MULTILINE)}
    values["KSERVE_VERSION"] = script_var("KSERVE_VERSION")

    def expand(words: str, depth: int = 0) -> str:
        assert depth < 5, words
        return re.sub(
            r"\$\{?([A-Za-z_]\w*)\}?", lambda m: expand(values.get(m.group(1), "x"), depth + 1), words
        )

    argvs = [shlex.split(expand(m.group(1))) for m in re.finditer(r"^\s*run (.+)$", text, re.MULTILINE)]
    assert len(argvs) > 20, argvs
    return argvs


def _command(argv: list[str]) -> list[str]:
    """The command under `timeout N` and `env VAR=...` prefixes."""
    if argv[0] == "timeout":
        argv = argv[2:]
    if argv[0] == "env":
        argv = argv[1:]
        while "=" in argv[0]:
            argv = argv[1:]
    return argv


def _flag(argv: list[str], name: str) -> str:
    """The value after flag ``name`` (`--flag value`), or "" when absent."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else ""


def _setup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- linters ---------------------------------------------------------------------------------------------


def test_shell_scripts_pass_shellcheck(linters: dict[str, str]) -> None:
    scripts = sorted(str(p) for p in (ROOT / "ci").rglob("*.sh"))
    assert str(SCRIPT) in scripts
    result = subprocess.run(
        [linters["shellcheck"], "--severity=style", "--external-sources", *scripts],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint(linters: dict[str, str]) -> None:
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert workflows, "no workflow under .github/workflows"
    result = subprocess.run(
        [linters["actionlint"], f"-shellcheck={linters['shellcheck']}", *workflows],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- arguments (each refused before anything runs) -----------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("--help",), ("-h",), ("up", "--help"), ("down", "--provider", "kind", "-h")]
)
def test_help(args: tuple[str, ...]) -> None:
    result = _setup(*args)
    assert result.returncode == 0, result.stderr
    assert "ci/e2e-setup.sh up   [--provider local|kind]" in result.stdout
    assert "ci/e2e-setup.sh down [--provider local|kind]" in result.stdout
    assert "E2E_WORKDIR" in result.stdout
    assert "set -" not in result.stdout and not result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "unknown action '' (up or down)"),
        (("upp",), {}, "unknown action 'upp' (up or down)"),
        (("up", "--provider", "minikube"), {}, "unknown provider 'minikube' (kind or local)"),
        (("down", "--provider=minikube"), {}, "unknown provider 'minikube' (kind or local)"),
        (("up", "--provider"), {}, "--provider needs a value (kind or local)"),
        (("up",), {"E2E_PROVIDER": "minikube"}, "unknown provider 'minikube' (kind or local)"),
        (("up", "--bogus"), {}, "unknown argument: --bogus (see --help)"),
    ],
    ids=[
        "no-action",
        "bad-action",
        "bad-provider",
        "bad-provider=",
        "provider-without-name",
        "env",
        "bad-flag",
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = _setup(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"e2e-setup: {message}"
    assert not result.stdout


# --- pins and bounds -----------------------------------------------------------------------------------------


def test_pins_are_at_the_top_of_the_script() -> None:
    """The kind path's pins: the kind binary (mk/e2e.mk reads it from here), the node image by digest, the
    cert-manager and KServe charts by version; KServe is the one ci/cluster/pins.env pins for both providers."""
    text = SCRIPT.read_text()
    assert re.fullmatch(SEMVER, script_var("KIND_VERSION"))
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", script_var("KIND_NODE_IMAGE"))
    assert re.fullmatch(SEMVER, script_var("CERT_MANAGER_VERSION"))
    assert re.fullmatch(SEMVER, script_var("KSERVE_VERSION"))
    for chart in ("CERT_MANAGER_CHART", "KSERVE_CRD_CHART", "KSERVE_CHART"):
        assert script_var(chart).startswith("oci://"), f"{chart}: from a mutable repository alias"
    assert "KSERVE_VERSION=$(sed -n 's/^KSERVE_VERSION=//p' ci/cluster/pins.env)" in text
    assert (
        "KIND_VERSION := $(shell sed -n 's/^KIND_VERSION=//p' ci/e2e-setup.sh)"
        in (ROOT / "mk" / "e2e.mk").read_text()
    )


def test_everything_beyond_our_chart_is_pinned() -> None:
    for argv in map(_command, run_lines()):
        cmd = shlex.join(argv)
        if argv[:2] == ["helm", "install"]:
            chart = argv[3]
            assert chart.startswith("oci://"), f"chart from a mutable repo alias: {cmd}"
            assert re.fullmatch(SEMVER, _flag(argv, "--version")), f"chart not pinned: {cmd}"
        if argv[:2] == ["kubectl", "apply"]:
            target = _flag(argv, "-f")
            assert target.startswith("ci/kind/"), f"manifest outside ci/kind: {cmd}"
        if argv[:2] == ["go", "install"]:
            assert re.search(rf"@{SEMVER}$", argv[-1]), f"go install without a version: {cmd}"
        if argv[:3] == ["kind", "create", "cluster"]:
            assert _flag(argv, "--image") == script_var("KIND_NODE_IMAGE")


def test_every_wait_is_bounded() -> None:
    unbounded = []
    long_running = (
        r"(go install|make (tools|images)|kind load|docker build|images/build\.sh|ci/publish\.sh|"
        r"ci/cluster/(build|kserve)\.sh|ci/cluster/cluster\.sh (up|import))\b"
    )
    for argv in run_lines():
        cmd = shlex.join(argv)
        if re.search(long_running, cmd) and not (argv[0] == "timeout" and re.fullmatch(r"\d+[sm]", argv[1])):
            unbounded.append(cmd)
        argv = _command(argv)
        if argv[:2] in (["kubectl", "wait"], ["kubectl", "rollout"]) and not any(
            re.fullmatch(r"--timeout=\d+[sm]", a) for a in argv
        ):
            unbounded.append(cmd)
        if argv[:2] == ["helm", "install"] and not (
            "--wait" in argv and re.fullmatch(r"\d+[sm]", _flag(argv, "--timeout"))
        ):
            unbounded.append(cmd)
        if argv[:3] == ["kind", "create", "cluster"] and not re.fullmatch(r"\d+[sm]", _flag(argv, "--wait")):
            unbounded.append(cmd)
    assert not unbounded, "\n".join(unbounded)


def test_every_command_line_parses_with_the_pinned_tools() -> None:
    """helm v4, kubectl and kind accept every `run helm|kubectl|kind ...` line of the script (`--help` parses the
    flags and runs nothing). The scenarios' own commands go through tests/cluster/lib and fail loudly there."""
    tools = {name: TOOLS_BIN / name for name in ("helm", "kubectl", "kind")}
    missing = [name for name, path in tools.items() if not path.is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in .tools/bin (`make tools e2e-tools` installs them)")
    argvs = {tuple(argv) for argv in map(_command, run_lines()) if argv[0] in tools}
    bad = []
    for name, *args in sorted(argvs):
        argv = [str(tools[name]), *args, "--help"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            bad.append(f"{name} {shlex.join(args)}\n    {result.stderr.strip().splitlines()[-1:]}")
    assert {a[0] for a in argvs} == set(tools), sorted(argvs)
    assert len(argvs) >= 10, sorted(argvs)
    assert not bad, "\n".join(bad)


# --- the third-party charts take the settings we pass ------------------------------------------------------


def _module_source(module: str, version: str, cwd: Path) -> Path:
    """A Go module's source at a version (through the Go module proxy), e.g. a project's Helm charts."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed")
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot download {module}@{version}: {result.stdout.strip()[-200:]}")
    return Path(json.loads(result.stdout)["Dir"])


def _helm_install_sets(release: str) -> list[str]:
    (argv,) = [a for a in map(_command, run_lines()) if a[:3] == ["helm", "install", release]]
    return [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]


def test_kserve_charts_take_our_settings(tmp_path: Path) -> None:
    """KServe's own charts at the pinned tag render with our --set flags: Standard mode, no Ingress objects."""
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    version = script_var("KSERVE_VERSION")
    charts = _module_source("github.com/kserve/kserve", version, tmp_path) / "charts"
    # Since v0.17 each chart's folder in the module is the chart's name (v0.16's charts/kserve-resources was `kserve`)
    for oci in ("KSERVE_CRD_CHART", "KSERVE_CHART"):
        name = script_var(oci).rsplit("/", 1)[1]
        meta = yaml.safe_load((charts / name / "Chart.yaml").read_text())
        assert (meta["name"], meta["version"]) == (name, version)
    args = [str(helm), "template", "kserve-resources", str(charts / "kserve-resources"), "-n", "kserve"]
    sets = _helm_install_sets("kserve-resources")
    assert sets
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (config,) = [
        d
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "inferenceservice-config"
    ]
    assert json.loads(config["data"]["deploy"])["defaultDeploymentMode"] == "Standard"
    assert json.loads(config["data"]["ingress"])["disableIngressCreation"] is True


def test_cert_manager_chart_takes_our_settings(tmp_path: Path) -> None:
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    source = _module_source(
        "github.com/cert-manager/cert-manager", script_var("CERT_MANAGER_VERSION"), tmp_path
    )
    chart = source / "deploy" / "charts" / "cert-manager"
    assert (
        yaml.safe_load((chart / "Chart.yaml").read_text())["name"]
        == script_var("CERT_MANAGER_CHART").rsplit("/", 1)[1]
    )
    args = [str(helm), "template", "cert-manager", str(chart), "-n", "cert-manager"]
    for value in _helm_install_sets("cert-manager"):
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    crds = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    assert len(crds) >= 6, (
        "crds.enabled=true installs cert-manager's CRDs (KServe's webhook certificates need them)"
    )


# --- ci/kind: the cluster's config and the manifests the script applies -------------------------------------


def _manifests() -> list[tuple[str, dict]]:
    """The Kubernetes objects in ci/kind/*.yaml (the values overlays there have no apiVersion)."""
    return [
        (path.name, doc)
        for path in sorted(KIND_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and "apiVersion" in doc
    ]


def test_manifests_we_apply_are_valid_for_the_node_version() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    node = re.search(r":v(\d+\.\d+)\.", script_var("KIND_NODE_IMAGE"))
    assert node
    errors = []
    for name, doc in _manifests():
        if doc["apiVersion"].startswith("kind.x-k8s.io/"):
            continue
        try:
            kubernetes_validate.validate(doc, f"{node.group(1)}.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert any(name == "s3.yaml" for name, _ in _manifests())
    assert not errors, "\n".join(errors)


def test_kind_cluster_config() -> None:
    config = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]
    assert all("image" not in n for n in config["nodes"]), "the node image is pinned in ci/e2e-setup.sh only"


def _images(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_manifests_we_apply_pin_their_images() -> None:
    images = [(name, image) for name, doc in _manifests() for image in _images(doc)]
    assert images, "no image in ci/kind/*.yaml"
    for name, image in images:
        ref = image.split("@")[0]
        tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
        assert "@sha256:" in image or re.fullmatch(r"v?\d+(\.\d+)+[-\w.]*", tag), (
            f"{name}: {image} not pinned"
        )
        assert tag != "latest", f"{name}: {image}"


def test_s3_store_matches_the_lock() -> None:
    """The in-cluster store runs the moto version the local stack runs (requirements.lock)."""
    match = re.search(r"^moto==([\d.]+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert match, "moto is not in requirements.lock"
    assert f"motoserver/moto:{match.group(1)}" in (KIND_DIR / "s3.yaml").read_text()


def test_the_s3_store_is_where_the_scenarios_reach_it() -> None:
    """Both providers' stores: Deployment and Service s3 on port 9000 in namespace housing-s3 (the script waits
    for them; tests/cluster/lib/setup.py's S3_HOST points every namespace's minio Service there)."""
    setup = (ROOT / "tests" / "cluster" / "lib" / "setup.py").read_text()
    assert 'S3_NAMESPACE = "housing-s3"' in setup
    assert 'S3_HOST = f"s3.{S3_NAMESPACE}.svc.cluster.local"' in setup
    for path in (KIND_DIR / "s3.yaml", ROOT / "ci" / "cluster" / "s3.yaml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        named = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs}
        assert {("Deployment", "s3", "housing-s3"), ("Service", "s3", "housing-s3")} <= named, path
        (svc,) = [d for d in docs if d["kind"] == "Service"]
        assert [p["port"] for p in svc["spec"]["ports"]] == [9000]
    waits = [shlex.join(_command(a)) for a in run_lines() if "housing-s3" in a]
    assert "kubectl rollout status deployment/s3 -n housing-s3 --timeout=180s" in waits
    assert "kubectl wait --for=condition=Complete job/s3-buckets -n housing-s3 --timeout=180s" in waits


# --- the contract with the pytest session -------------------------------------------------------------------


def test_setup_env_is_written_where_and_with_what_the_session_reads() -> None:
    """`up` writes $E2E_WORKDIR/setup.env, by default .local/e2e/, where tests/cluster/lib/setup.py reads it
    (fixed: CI sets no E2E_WORKDIR), with every key Setup.load reads."""
    text = SCRIPT.read_text()
    assert "WORKDIR=${E2E_WORKDIR:-$ROOT/.local/e2e}" in text
    setup = (ROOT / "tests" / "cluster" / "lib" / "setup.py").read_text()
    assert 'WORKDIR = ROOT / ".local" / "e2e"' in setup
    heredoc = re.search(r'^cat >"\$WORKDIR/setup\.env" <<EOF\n(.*?)^EOF$', text, re.MULTILINE | re.DOTALL)
    assert heredoc
    written = set(re.findall(r"^([A-Z0-9_]+)=", heredoc.group(1), re.MULTILINE))
    read = set(re.findall(r'env(?:\["|\.get\(")([A-Z0-9_]+)"', setup))
    assert read and read <= written, f"setup.env lacks {read - written}"


def test_workflow_actions_are_pinned_to_commits() -> None:
    uses = []
    for path in WORKFLOWS.glob("*.y*ml"):
        for line in path.read_text().splitlines():
            if m := re.match(r"\s*-?\s*uses:\s*(\S+)(.*)$", line):
                uses.append((path.name, m.group(1), m.group(2)))
    assert uses
    for name, ref, comment in uses:
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{name}: {ref} is not a commit SHA"
        assert re.search(rf"#\s*{SEMVER}", comment), f"{name}: {ref} has no version comment"


def test_workflow_runs_make_test_and_the_e2e() -> None:
    """`make test`; then on kind the plan (no cluster needed: fails fast on a broken scenario module), `make e2e`,
    and the failed tests' diagnostics uploaded from where the session writes them."""
    workflow = yaml.safe_load((WORKFLOWS / "ci.yaml").read_text())
    for job, spec in workflow["jobs"].items():
        assert spec.get("timeout-minutes"), f"job {job} has no timeout"
    runs = [s.get("run", "").strip() for spec in workflow["jobs"].values() for s in spec["steps"]]
    assert "make test" in runs
    steps = workflow["jobs"]["e2e-kind"]["steps"]
    e2e_runs = [s.get("run", "").strip() for s in steps]
    assert e2e_runs.index("make e2e-plan E2E_PROVIDER=kind") < e2e_runs.index("make e2e")
    assert not any("E2E_WORKDIR" in json.dumps(s) for s in [workflow, *steps]), "the session reads .local/e2e"
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == ".local/e2e/artifacts"
    assert 'ARTIFACTS = WORKDIR / "artifacts"' in (ROOT / "tests" / "cluster" / "conftest.py").read_text()
    mk = "\n".join(p.read_text() for p in (ROOT / "mk").glob("*.mk"))
    assert re.search(r"^e2e:", mk, re.MULTILINE) and re.search(r"^e2e-plan:", mk, re.MULTILINE)
    plan = subprocess.run(
        ["make", "-n", "e2e-plan", "E2E_PROVIDER=kind"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "pytest tests/cluster --provider kind --collect-only" in plan.stdout, plan.stdout + plan.stderr


# --- the plan: tests/cluster is collected with --provider, never without --------------------------------------


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    venv = ROOT / ".venv" / "bin" / "pytest"
    argv = [str(venv)] if venv.is_file() else [sys.executable, "-m", "pytest"]
    return subprocess.run(
        [*argv, *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("provider", ["local", "kind"])
def test_the_plan_collects_every_scenario(provider: str) -> None:
    result = _pytest("tests/cluster", "--provider", provider)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    collected = [
        line for line in result.stdout.splitlines() if line.startswith("tests/cluster/") and "::" in line
    ]
    assert len(collected) > 15, out
    assert not re.search(r"\berrors?\b", result.stdout.splitlines()[-1]), out


def test_make_test_does_not_collect_the_cluster_scenarios() -> None:
    """`make test` runs `pytest tests`: without --provider, tests/conftest.py ignores tests/cluster."""
    result = _pytest("tests/e2e", "tests/cluster")
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/e2e/") for line in collected)
    assert not any("tests/cluster" in line for line in collected), collected
