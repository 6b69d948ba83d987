"""The kind e2e (ci/e2e.sh) and the CI workflow, checked without a cluster.

No container registry is reachable here, so the e2e cannot run; these tests make sure it is right by
construction: shellcheck and actionlint clean; `--dry-run` walks every phase in order with every wait
bounded and everything installed beyond our chart pinned; the real code path, driven by stand-in tools,
passes when every verdict is right, fails on each wrong one, and on failure collects diagnostics and deletes
the cluster; every helm/kubectl/kind command line parses with the pinned tools; and the names the script
relies on are the chart's and values/kind.yaml's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ci" / "e2e.sh"
KIND_DIR = ROOT / "ci" / "kind"
WORKFLOWS = ROOT / ".github" / "workflows"
TOOLS_BIN = ROOT / ".tools" / "bin"

PHASES = [
    "preflight",
    "cluster",
    "cert-manager",
    "kserve",
    "s3",
    "images",
    "seed",
    "install",
    "ready",
    "test",
    "fault-predictor",
    "fault-postgres",
    "upgrade-unchanged",
    "upgrade-accepted",
    "upgrade-rejected",
    "rollback",
    "rollback-first",
    "retrain-scheduled",
    "reconcile",
    "uninstall",
    "staging",
    "prod",
    "side-by-side",
    "teardown",
]
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


def run_dry_run(tmp_path_factory: pytest.TempPathFactory, *args: str) -> list[str]:
    """The lines of `ci/e2e.sh --dry-run ARGS`, run with nothing but coreutils on PATH."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path_factory.mktemp("home")),
        "E2E_WORKDIR": str(tmp_path_factory.mktemp("e2e")),
    }
    result = subprocess.run(
        [str(SCRIPT), "--dry-run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of `ci/e2e.sh --dry-run` (the kind provider)."""
    return run_dry_run(tmp_path_factory)


def _commands(lines: list[str]) -> list[str]:
    return [line[2:] for line in lines if line.startswith("+ ")]


def _main_run(lines: list[str]) -> list[str]:
    """The dry run up to the failure section (what runs when nothing fails)."""
    end = next(i for i, line in enumerate(lines) if line.startswith("==> on failure"))
    return lines[:end]


def _script_text() -> str:
    return SCRIPT.read_text()


def _script_var(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", _script_text(), re.MULTILINE)
    assert match, f"{name} is not set in ci/e2e.sh"
    return match.group(1)


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


# --- the dry run -----------------------------------------------------------------------------------------


def test_help_and_bad_arguments() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert "--dry-run" in result.stdout
    assert "set -" not in result.stdout
    result = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "unknown argument: --bogus" in result.stderr


def test_dry_run_walks_every_phase_in_order(dry_run: list[str]) -> None:
    phases = [m.group(1) for line in dry_run if (m := re.match(r"==> phase (\S+):", line))]
    assert phases == PHASES


def test_dry_run_commands_in_order(dry_run: list[str]) -> None:
    """The story of the e2e, one expected command per step, each after the previous one."""
    steps = [
        r"GOBIN=\S+ go install sigs\.k8s\.io/kind@v[\d.]+$",
        r"^timeout \d+m make tools$",
        r"^kind create cluster --name \S+ --image kindest/node:v[\d.]+@sha256:[0-9a-f]{64} "
        r"--config ci/kind/cluster\.yaml",
        r"^helm install cert-manager oci://\S+/cert-manager --version v[\d.]+ .*--set crds\.enabled=true",
        r"^helm install kserve-crd oci://ghcr\.io/kserve/charts/kserve-crd --version v[\d.]+ ",
        r"^helm install kserve oci://ghcr\.io/kserve/charts/kserve --version v[\d.]+ .*"
        r"--set kserve\.controller\.deploymentMode=Standard",
        r"^kubectl apply -f ci/kind/s3\.yaml$",
        r"^kubectl wait --for=condition=Complete job/s3-buckets ",
        r"^timeout \d+m make images$",
        r"^timeout \d+m kind load docker-image --name \S+ housing-mlops/mlflow:\S+ housing-mlops/jobs:\S+ "
        r"housing-mlops/serving:\S+$",
        r"^kubectl run e2e-seed-0 .* -- data push --repo /app --dvc-remote-url s3://housing-mlops/dvc ",
        r"^kubectl run e2e-seed-2 .* -- data push --repo /app --dvc-remote-url s3://housing-mlops-prod/dvc ",
        r"^kubectl run e2e-seed-v2 .*data push /tmp/v2\.csv --repo /tmp/app --dvc-remote-url s3://housing-mlops/dvc",
        r"^helm install housing charts/housing-mlops -n housing -f values/kind\.yaml ",
        r"^kubectl wait --for=condition=Ready inferenceservice/housing-model ",
        r"^kubectl run e2e-resolve-install .* -- resolve --alias production$",
        r"^helm test housing -n housing --logs ",
        r"^kubectl run e2e-versions-install .* --command -- python3 -c ",
        r"^kubectl delete -n housing pod/\S+ --wait ",
        r"^kubectl wait --for=condition=Ready pod -l serving\.kserve\.io/inferenceservice=housing-model ",
        r"^kubectl run e2e-infer-fault-predictor .* -- infer --url ",
        r"^kubectl delete pod housing-postgresql-0 -n housing ",
        r"^kubectl run e2e-versions-fault-postgres ",
        r"^kubectl run e2e-resolve-fault-postgres ",
        r"^helm test housing -n housing --logs ",
        r"^helm upgrade housing charts/housing-mlops .*-f ci/kind/upgrade-unchanged\.yaml ",
        r"^kubectl run e2e-versions-unchanged ",
        r"^helm upgrade housing charts/housing-mlops .*-f ci/kind/upgrade-accepted\.yaml .*'&'$",
        r"^poll --timeout=\d+s new_training_started \S+$",
        r"^kubectl delete -n housing pod/\S+ --wait=false$",
        r"^kubectl run e2e-resolve-accepted ",
        r"^kubectl run e2e-infer-accepted .* -- infer --url ",
        r"^helm upgrade housing charts/housing-mlops .*-f ci/kind/upgrade-rejected\.yaml ",
        r"^kubectl run e2e-resolve-rejected ",
        r"^helm rollback housing -n housing ",
        r"^kubectl wait --for=condition=Ready inferenceservice/housing-model ",
        r"^kubectl run e2e-resolve-rollback ",
        r"^kubectl run e2e-versions-rollback ",
        r"^helm rollback housing 1 -n housing ",
        r"^kubectl run e2e-resolve-rollback-first ",
        r"^kubectl run e2e-infer-rollback-first .* -- infer --url ",
        r"^helm test housing -n housing --logs ",
        r"^helm upgrade housing charts/housing-mlops .*-f ci/kind/schedule\.yaml ",
        r"^kubectl create job e2e-retrain -n housing --from=cronjob/housing-retrain$",
        r"^kubectl wait --for=condition=Complete job/e2e-retrain ",
        r"^kubectl run e2e-move-alias ",
        r"^kubectl create job e2e-reconcile -n housing --from=cronjob/housing-reconcile$",
        r"^helm uninstall housing -n housing ",
        r"^poll --timeout=\d+s nothing_left$",
        r"^kubectl create namespace housing-staging$",
        r"install housing charts/housing-mlops -n housing-staging -f values/staging\.yaml "
        r"-f ci/overlays/staging\.yaml .*--set training\.data\.path=data/missing\.csv",
        r"^kubectl logs -n housing-staging job/housing-promote-1 ",
        r"upgrade --install housing charts/housing-mlops -n housing-staging -f values/staging\.yaml ",
        r"test housing -n housing-staging --timeout ",
        r"uninstall housing -n housing-staging ",
        r"^poll --timeout=\d+s only_volume_left$",
        r"install housing charts/housing-mlops -n housing-staging -f values/staging\.yaml .*--wait",
        r"^kubectl run e2e-versions-staging-reinstalled ",
        r"test housing -n housing-staging --timeout ",
        r"^kubectl label namespace housing-prod pod-security\.kubernetes\.io/enforce=restricted ",
        r"^kubectl create secret generic housing-mlops-mlflow-auth -n housing-prod ",
        r"^kubectl create secret generic housing-mlops-db -n housing-prod ",
        r"^kubectl run e2e-privileged -n housing-prod .*--privileged ",
        r"^helm install housing charts/housing-mlops -n housing-prod -f values/prod\.yaml -f ci/overlays/prod\.yaml ",
        r"^helm test housing -n housing-prod --logs ",
        r"^kubectl run e2e-resolve-prod .*--env=MLFLOW_TRACKING_USERNAME=",
        r"^kubectl label namespace housing-clients housing-mlops\.io/predictor-clients=true ",
        r"^kubectl run e2e-np-outside-predictor -n housing-outside ",
        r"^kubectl get clusterstoragecontainers -o name$",
        r"^kubectl get inferenceservice housing-model -n housing-prod -o 'jsonpath=\{\.spec\.predictor\.model\.storageUri\}'$",
        r"^kubectl run e2e-infer-staging-beside-prod -n housing-staging ",
        r"uninstall housing -n housing-staging ",
        r"^poll --timeout=\d+s only_volume_left$",
        r"^helm uninstall housing -n housing-prod ",
        r"^poll --timeout=\d+s only_volume_left$",
        r"^kind delete cluster --name \S+$",
    ]
    commands = _commands(_main_run(dry_run))
    at = 0
    for step in steps:
        pattern = re.compile(step)
        for i in range(at, len(commands)):
            if pattern.search(commands[i]):
                at = i + 1
                break
        else:
            seen = "\n".join(commands[max(0, at - 3) : at + 3])
            pytest.fail(f"no command matching {step!r} after:\n{seen}")


def test_dry_run_seeds_from_housing_csv(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "E2E_WORKDIR": str(tmp_path),
        "HOUSING_CSV": "/d/h.csv",
    }
    result = subprocess.run(
        [str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    seed = "\n".join(
        _commands(result.stdout.split("==> phase seed")[1].split("==> phase install")[0].splitlines())
    )
    assert "kubectl cp /d/h.csv housing/e2e-seed:/tmp/housing.csv" in seed
    assert re.search(r"kubectl exec .* -- housing-mlops data push /tmp/housing.csv .*--no-synthetic", seed)
    assert "kubectl delete pod e2e-seed" in seed


def test_dry_run_checks_each_verdict_in_order(dry_run: list[str]) -> None:
    checks = [line.strip() for line in dry_run if line.strip().startswith("check:")]
    expected = [
        ("the predictor Service's ports", "http1:80 grpc:9000 metrics:8082 =="),
        ("a new predictor pod serves", "!="),
        ("the new predictor serves the same version", "=="),
        ("every registered version survived", "=="),
        ("production did not move", "=="),
        ("the same training Job stands for revision 2", "=="),
        ("no training pod ran", "=="),
        ("no version was registered", "=="),
        ("the predictor serves the same version", "=="),
        ("the training finished after the MLflow pod was deleted", "deleted"),
        ("the accepted retrain is in production", "!="),
        ("the predictor serves the accepted retrain", "!="),
        ("the promotion hook exited 3: rejected by the gate", "=="),
        ("the rejected retrain left production alone", "=="),
        ("the predictor still serves the accepted retrain", "=="),
        ("production stayed on the accepted retrain", "=="),
        ("the predictor serves the accepted retrain", "=="),
        ("nothing was trained", "=="),
        ("the rollback put the first model back", "=="),
        ("the predictor serves the first model again", "=="),
        ("nothing was trained", "=="),
        ("enabling the schedule trained nothing", "=="),
        ("the predictor serves the scheduled retrain", "!="),
        ("the retrain is the version served", "=="),
        ("it trained on the newest pushed dataset version", "=="),
        ("the predictor serves the alias moved outside Helm", "=="),
        ("the kept hook Job housing-promote-4 failed and has a TTL", "ttl/failed"),
        ("the release is gone", "fails"),
        ("an install whose training fails fails", "fails"),
        ("the promotion hook named the failed training", "failed"),
        ("the model is in the environment's bucket", "housing-mlops-staging"),
        ("MLflow came back with its history, nothing retrained", "=="),
        ("the same champion serves", "=="),
        ("Pod Security restricted refuses a privileged pod in housing-prod", "fails"),
        ("the model is in the environment's bucket", "housing-mlops-prod"),
        ("an MLflow client reaches MLflow: open", "== 0"),
        ("only MLflow reaches PostgreSQL: blocked", "== 1"),
        ("an unlabelled pod does not reach MLflow: blocked", "== 1"),
        ("an unlabelled pod does not reach the predictor: blocked", "== 1"),
        ("a predictor-clients namespace reaches it: open", "== 0"),
        ("another namespace does not: blocked", "== 1"),
        ("a predictor-clients namespace reaches gRPC: open", "== 0"),
        ("another namespace does not reach gRPC: blocked", "== 1"),
        ("only inference.metrics.from scrapes: blocked", "== 1"),
        ("training reaches S3: open", "== 0"),
        ("a test pod does not reach S3: blocked", "== 1"),
        ("one storage container per release", "== 2"),
        ("the housing-staging predictor fetches from its own MLflow", "=="),
        ("the housing-prod predictor fetches from its own MLflow", "=="),
        ("staging still serves its own version", "=="),
    ]
    assert len(checks) == len(expected), checks
    for check, (what, how) in zip(checks, expected, strict=True):
        assert what in check and how in check, (check, what)


def test_every_wait_is_bounded(dry_run: list[str]) -> None:
    unbounded = []
    for cmd in _commands(dry_run):
        if re.match(r"(kubectl (wait|rollout status)|poll)\b", cmd) and not re.search(
            r"--timeout=\d+[sm]\b", cmd
        ):
            unbounded.append(cmd)
        if re.match(r"helm (install|upgrade|rollback|uninstall|test)\b", cmd) and not re.search(
            r"--timeout \d+[sm]\b", cmd
        ):
            unbounded.append(cmd)
        if re.match(r"helm (install|upgrade|rollback)\b", cmd) and "--wait" not in cmd.split():
            unbounded.append(f"{cmd}  (no --wait)")
        if cmd.startswith("kind create cluster") and not re.search(r"--wait \d+[sm]\b", cmd):
            unbounded.append(cmd)
        if re.match(r"kubectl delete\b", cmd) and "--wait" in cmd.split() and "--timeout=" not in cmd:
            unbounded.append(cmd)
    assert not unbounded, "\n".join(unbounded)


def test_polls_and_long_commands_are_bounded(dry_run: list[str]) -> None:
    text = _script_text()
    assert re.search(r"deadline=\$\(\(SECONDS \+ limit\)\)", text), "poll() has no deadline"
    assert not re.search(r"kubectl (run|logs)\b[^\n]*(--rm|-f\b|--follow)", text), (
        "an attached kubectl can hang"
    )
    long_running = r"(go install|make tools|make images|kind load|kubectl (exec|cp))\b"
    for cmd in _commands(_main_run(dry_run)):
        words = cmd.split()
        if re.search(long_running, cmd):
            assert words[0] == "timeout" and re.fullmatch(r"\d+[sm]", words[1]), f"unbounded: {cmd}"


def test_failure_trap_collects_diagnostics(dry_run: list[str]) -> None:
    start = next(i for i, line in enumerate(dry_run) if line.startswith("==> on failure"))
    on_failure = "\n".join(_commands(dry_run[start:]))
    for needle in (
        "kubectl describe pods",
        "kubectl get events -n housing --sort-by=.lastTimestamp",
        "kubectl logs -n housing",
        "--previous",
        "kubectl get events -n kserve",
        "helm history housing",
        "kind export logs",
    ):
        assert needle in on_failure, needle
    assert re.search(r"^\s*trap on_exit EXIT$", _script_text(), re.MULTILINE)


# --- the e2e's contract with the chart and values/kind.yaml -----------------------------------------------

KSERVE_APIS = (
    "serving.kserve.io/v1beta1/InferenceService",
    "serving.kserve.io/v1alpha1/ServingRuntime",
    "serving.kserve.io/v1alpha1/ClusterStorageContainer",
)


def _render(*overlays: str) -> list[dict]:
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    if not (ROOT / "charts/housing-mlops/Chart.yaml").is_file() or not (ROOT / "values/kind.yaml").is_file():
        pytest.skip("the chart or values/kind.yaml is not there yet")
    args = [
        str(helm),
        "template",
        "housing",
        "charts/housing-mlops",
        "-n",
        "housing",
        "-f",
        "values/kind.yaml",
    ]
    for overlay in overlays:
        args += ["-f", overlay]
    for api in KSERVE_APIS:
        args += ["--api-versions", api]
    env = {**os.environ, "HELM_CACHE_HOME": str(ROOT / ".tools" / "helm-cache")}
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"{shlex.join(args[1:])}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _env(docs: list[dict], kind: str, name_re: str) -> dict[str, str]:
    (obj,) = [d for d in docs if d["kind"] == kind and re.fullmatch(name_re, d["metadata"]["name"])]
    spec = obj["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    return {e["name"]: e.get("value", "<from secret>") for c in containers for e in c.get("env", [])}


@pytest.mark.parametrize("overlay", ["", "ci/kind/upgrade-accepted.yaml", "ci/kind/upgrade-rejected.yaml"])
def test_the_chart_accepts_what_the_e2e_installs(overlay: str) -> None:
    """values/kind.yaml and each upgrade overlay pass the chart's strict schema and render."""
    docs = _render(*filter(None, [overlay]))
    assert any(d["kind"] == "InferenceService" for d in docs)


def test_the_rejected_retrain_is_worse_and_the_gate_strict() -> None:
    env = _env(_render("ci/kind/upgrade-rejected.yaml"), "Job", r"housing-train-[0-9a-f]{10}-[0-9a-f]{5}")
    assert env["HOUSING_MAX_ITER"] == "1"
    assert env["HOUSING_MAX_DEPTH"] == "1"
    promote = _env(_render("ci/kind/upgrade-rejected.yaml"), "Job", r"housing-promote-\d+")
    assert promote["HOUSING_GATE_MAX_REGRESSION_PCT"] == "0"


def test_names_the_e2e_relies_on_match_the_chart() -> None:
    docs = _render()
    by_kind: dict[str, set[str]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    assert _script_var("ISVC") in by_kind["InferenceService"]
    mlflow = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "housing-mlflow"]
    assert mlflow, by_kind.get("Service")
    assert 5000 in [p["port"] for p in mlflow[0]["spec"]["ports"]]
    train = _env(docs, "Job", r"housing-train-[0-9a-f]{10}-[0-9a-f]{5}")
    assert train["MLFLOW_TRACKING_URI"] == "http://housing-mlflow.housing.svc.cluster.local:5000"
    assert train["HOUSING_DVC_REMOTE_URL"] == _script_var("DVC_REMOTE")
    endpoint = _script_var("S3_ENDPOINT").replace("${NS}", "housing")
    assert endpoint in {train.get("AWS_ENDPOINT_URL_S3"), train.get("MLFLOW_S3_ENDPOINT_URL")}, train
    # the rejected upgrade (revision 3) reads the verdict from the hook Job <release>-promote-<revision>
    assert "housing-promote-1" in by_kind["Job"], by_kind["Job"]


def test_secret_bucket_and_remote_match_values_kind() -> None:
    kind = (
        yaml.safe_load((ROOT / "values/kind.yaml").read_text())
        if (ROOT / "values/kind.yaml").is_file()
        else None
    )
    if kind is None:
        pytest.skip("values/kind.yaml is not there yet")
    s3 = kind["global"]["s3"]
    assert s3["existingSecret"] == _script_var("S3_SECRET")
    assert s3["endpoint"].replace("{{ .Release.Namespace }}", "${NS}") == _script_var("S3_ENDPOINT")
    bucket_job = (KIND_DIR / "s3.yaml").read_text()
    assert f'"{s3["bucket"]}"' in bucket_job, "ci/kind/s3.yaml does not create the chart's bucket"
    remote = kind["training"]["data"]["remoteUrl"]
    assert remote == _script_var("DVC_REMOTE")
    assert remote.startswith(f"s3://{s3['bucket']}/"), "the DVC remote is in a bucket nobody creates"
    assert kind["postgresql"]["persistence"]["whenDeleted"] == "Delete", "uninstall would leave the PVC"


def test_the_images_the_e2e_loads_are_the_ones_the_chart_runs() -> None:
    """ci/e2e.sh loads housing-mlops/*:<hooks/pyproject.toml version>; the chart defaults to its appVersion."""
    chart_yaml = ROOT / "charts/housing-mlops/Chart.yaml"
    if not chart_yaml.is_file():
        pytest.skip("the chart is not there yet")
    version = re.search(r'^version = "(.+)"', (ROOT / "hooks/pyproject.toml").read_text(), re.MULTILINE)
    assert version
    assert str(yaml.safe_load(chart_yaml.read_text())["appVersion"]) == version.group(1)
    dry = subprocess.run(
        ["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if dry.returncode != 0 or "Nothing to be done" in dry.stdout:
        pytest.skip(f"`make images` is not defined yet (images issue): {dry.stderr.strip()[-200:]}")
    called = " ".join((ROOT / w).read_text() for w in dry.stdout.split() if (ROOT / w).is_file())
    for name in ("mlflow", "jobs", "serving"):
        assert re.search(rf"\b{name}\b", dry.stdout), f"`make images` does not build {name}"
    assert "housing-mlops" in dry.stdout + called, "`make images` does not tag the images housing-mlops/*"


# --- the third-party charts take the settings we pass -------------------------------------------------------


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


def _helm_install_sets(dry_run: list[str], release: str) -> list[str]:
    (cmd,) = [c for c in _commands(dry_run) if c.startswith(f"helm install {release} ")]
    words = shlex.split(cmd)
    return [words[i + 1] for i, w in enumerate(words) if w == "--set"]


def test_kserve_charts_take_our_settings(dry_run: list[str], tmp_path: Path) -> None:
    """KServe's own charts at the pinned tag render with our --set flags: Standard mode, no Ingress objects."""
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    version = _script_var("KSERVE_VERSION")
    charts = _module_source("github.com/kserve/kserve", version, tmp_path) / "charts"
    for oci, folder in (("KSERVE_CRD_CHART", "kserve-crd"), ("KSERVE_CHART", "kserve-resources")):
        meta = yaml.safe_load((charts / folder / "Chart.yaml").read_text())
        assert meta["name"] == _script_var(oci).rsplit("/", 1)[1]
        assert meta["version"] == version
    args = [str(helm), "template", "kserve", str(charts / "kserve-resources"), "-n", "kserve"]
    for value in _helm_install_sets(dry_run, "kserve"):
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


def test_cert_manager_chart_takes_our_settings(dry_run: list[str], tmp_path: Path) -> None:
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    source = _module_source(
        "github.com/cert-manager/cert-manager", _script_var("CERT_MANAGER_VERSION"), tmp_path
    )
    chart = source / "deploy" / "charts" / "cert-manager"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["name"] == "cert-manager"
    args = [str(helm), "template", "cert-manager", str(chart), "-n", "cert-manager"]
    for value in _helm_install_sets(dry_run, "cert-manager"):
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    crds = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    assert len(crds) >= 6, (
        "crds.enabled=true installs cert-manager's CRDs (KServe's webhook certificates need them)"
    )


def test_manifests_we_apply_are_valid_for_the_node_version() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    node = re.search(r":v(\d+\.\d+)\.", _script_var("KIND_NODE_IMAGE"))
    assert node
    errors = []
    for path in sorted(KIND_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            # values overlays (no apiVersion) are checked against the chart's schema elsewhere
            if not doc or "apiVersion" not in doc or doc["apiVersion"].startswith("kind.x-k8s.io/"):
                continue
            try:
                kubernetes_validate.validate(doc, f"{node.group(1)}.0", strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kind_cluster_config() -> None:
    config = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]
    assert all("image" not in n for n in config["nodes"]), "the node image is pinned in ci/e2e.sh only"


# --- pins ------------------------------------------------------------------------------------------------


def test_everything_beyond_our_chart_is_pinned(dry_run: list[str]) -> None:
    for cmd in _commands(_main_run(dry_run)):
        words = cmd.split()
        if re.match(r"helm (install|upgrade|template|pull)\b", cmd):
            chart = words[3]
            if not chart.startswith("charts/"):
                assert chart.startswith("oci://"), f"chart from a mutable repo alias: {cmd}"
                version = words[words.index("--version") + 1] if "--version" in words else ""
                assert re.fullmatch(SEMVER, version), f"chart not pinned: {cmd}"
        if re.match(r"kubectl (apply|create) -f\b", cmd):
            target = words[3]
            if target.startswith(("http://", "https://")):
                assert re.search(rf"/{SEMVER}/", target), f"manifest URL without a version: {cmd}"
            else:
                assert target.startswith("ci/kind/"), f"manifest outside ci/kind: {cmd}"
        if re.search(r"\bgo install\b", cmd):
            assert re.search(rf"@{SEMVER}$", cmd), f"go install without a version: {cmd}"
        if cmd.startswith("kind create cluster"):
            image = words[words.index("--image") + 1]
            assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", image), image
    assert re.fullmatch(SEMVER, _script_var("KIND_VERSION"))
    assert re.fullmatch(SEMVER, _script_var("CERT_MANAGER_VERSION"))
    assert re.fullmatch(SEMVER, _script_var("KSERVE_VERSION"))


def test_manifests_we_apply_pin_their_images() -> None:
    images = []
    for path in sorted(KIND_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            images += [(path.name, image) for image in _images(doc)]
    assert images, "no image in ci/kind/*.yaml"
    for name, image in images:
        ref = image.split("@")[0]
        tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
        assert "@sha256:" in image or re.fullmatch(r"v?\d+(\.\d+)+[-\w.]*", tag), (
            f"{name}: {image} not pinned"
        )
        assert tag != "latest", f"{name}: {image}"


def _images(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_s3_store_matches_the_lock() -> None:
    """The in-cluster store runs the moto version the local stack runs (requirements.lock)."""
    lock = (ROOT / "requirements.lock").read_text()
    match = re.search(r"^moto==([\d.]+)", lock, re.MULTILINE)
    if not match:
        pytest.skip("moto is not in requirements.lock")
    assert f"motoserver/moto:{match.group(1)}" in (KIND_DIR / "s3.yaml").read_text()


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
    workflow = yaml.safe_load((WORKFLOWS / "ci.yaml").read_text())
    runs = {job: [s.get("run", "") for s in spec["steps"]] for job, spec in workflow["jobs"].items()}
    assert any("make test" in r for steps in runs.values() for r in steps)
    assert any(r.strip() == "ci/e2e.sh" for steps in runs.values() for r in steps)
    for job, spec in workflow["jobs"].items():
        assert spec.get("timeout-minutes"), f"job {job} has no timeout"


# --- the real code path, driven by stand-in tools ---------------------------------------------------

STUB = r"""#!/usr/bin/env bash
# stand-in for docker/kind/kubectl/helm/make/go/git: log the call, answer what the e2e reads, fail on demand
name=$(basename "$0")
line="$name $*"
V2=0123456789abcdef0123456789abcdef  # the second dataset version's md5
echo "$line" >>"$STUB_LOG"
printf '%s\0' "$name" "$@" $'\x1e' >>"$STUB_LOG.argv"  # exact argv, for the flag check
if [[ -n ${STUB_FAIL:-} && $line =~ $STUB_FAIL ]]; then echo "stub: $line fails" >&2; exit 1; fi
case "$line" in
  "kind version"*) echo "kind v0.33.0 go1.26 linux/amd64" ;;
  "helm status"*) echo "Error: release: not found" >&2; exit 1 ;;
  "kind get clusters"*) echo "${STUB_CLUSTERS:-}" ;;
  "kubectl run e2e-privileged "*)
    [[ -n ${STUB_PSA_OPEN:-} ]] && exit 0
    echo 'Error from server (Forbidden): pods "e2e-privileged" is forbidden: violates PodSecurity' >&2; exit 1 ;;
  *"jsonpath={.status.phase}"*) echo Succeeded ;;
  *"--field-selector=status.phase=Running -o name") echo pod/stub-1 ;;
  "kubectl get pods -n "*" -o name") echo pod/stub-0 ;;
  "kubectl logs -n "*" pod/e2e-resolve-"*)
    tag=${line##*pod/e2e-resolve-}
    for pair in ${STUB_URIS:-}; do [[ ${pair%%=*} == "$tag" ]] && echo "${pair#*=}"; done ;;
  "kubectl logs -n "*" pod/e2e-versions-"*)
    printf '%b\n' "${STUB_VERSIONS:-1 aaaa d1c47305887e2252bf1ccbd74ff159a6}"
    if [[ -n ${STUB_RETRAINED:-} ]] && grep -F upgrade-unchanged "$STUB_LOG" >/dev/null; then echo "2 cccc x"; fi
    if grep -F "create job e2e-retrain" "$STUB_LOG" >/dev/null; then echo "3 - ${STUB_RETRAIN_MD5:-$V2}"; fi ;;
  "kubectl logs -n housing pod/e2e-seed-v2"*) echo "target=data/housing.csv md5=$V2" ;;
  "kubectl get clusterstoragecontainers -o name")
    for ns in ${STUB_CSC_NAMESPACES:-housing-staging housing-prod}; do
      echo "clusterstoragecontainer.serving.kserve.io/$ns-housing-mlflow"
    done ;;
  *"{.spec.predictor.model.storageUri}"*)
    echo "mlflow://housing-mlflow.$5.svc.cluster.local:5000/housing-model@production" ;;
  *"job-name=housing-train-"*"{.items[*].status.phase}"*) echo Running ;;
  "kubectl get configmap housing-training "*"{.data.job}"*)  # the accepted upgrade applies a new identity
    if grep -F upgrade-accepted "$STUB_LOG" >/dev/null; then echo housing-train-bbbb-2; else echo housing-train-aaaa-1; fi ;;
  "helm install "*"training.data.path=data/missing.csv"*) [[ -n ${STUB_INSTALL_PASSES:-} ]] || exit 1 ;;
  "kubectl logs -n housing-staging job/housing-promote-1"*)
    echo "${STUB_HOOK_LOG:-error: the training of identity 0123456789abcdef failed: no data/missing.csv.dvc}" ;;
  "kubectl get pod e2e-np-"*"exitCode}"*)
    want=1
    case $3 in *-client-mlflow | *-clients-predictor | *-clients-grpc | *-training-s3) want=0 ;; esac
    [[ ${STUB_OPEN_PROBE:-} == "$3" ]] && want=0
    echo "$want" ;;
  *"state.terminated.exitCode}"*) echo "${STUB_HOOK_EXIT:-}" ;;
  *"state.terminated.finishedAt}"*) echo "${STUB_TRAINED_AT:-2099-01-01T00:00:00Z}" ;;
  *"{.metadata.creationTimestamp} {.status.conditions"*) echo 2026-01-01T00:00:00Z 2026-01-01T00:00:21Z ;;
  "kubectl api-resources"*) printf 'pods\npersistentvolumeclaims\n' ;;
  "kubectl get pods,persistentvolumeclaims -n housing-staging -o name"* | \
    "kubectl get pods,persistentvolumeclaims -n housing-prod -o name"*)
    echo persistentvolumeclaim/data-housing-postgresql-0
    [[ ${STUB_LEFT_NS:-} == "$4" ]] && echo pod/housing-left-behind ;;
  *"{.spec.claimRef.namespace}"*) printf 'pvc-a housing-staging\npvc-b housing-prod\n' ;;
  *"ttlSecondsAfterFinished}/{.status.failed}"*) echo 600/1 ;;
  *"jsonpath={.status.address.url}"*) echo "http://housing-model-predictor.housing.svc.cluster.local" ;;
  *"component=predictor -o jsonpath={range .items[*].spec.ports[*]}"*)
    echo "${STUB_PREDICTOR_PORTS-http1:80 grpc:9000 metrics:8082 }" ;;
  *"jsonpath={.spec.predictor.annotations.housing-mlops"*)
    n=$(( $(cat "$STUB_LOG.served" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$STUB_LOG.served"
    read -ra served <<<"${STUB_SERVED:-}"
    echo "${served[n-1]:-}" ;;
esac
exit 0
"""
URIS = (
    "install=s3://mlflow/1/m-a/artifacts fault-postgres=s3://mlflow/1/m-a/artifacts "
    "accepted=s3://mlflow/1/m-b/artifacts"
)
ENVS = (
    "staging=s3://housing-mlops-staging/mlflow/1/m-s/artifacts "
    "staging-reinstalled=s3://housing-mlops-staging/mlflow/1/m-s/artifacts "
    "prod=s3://housing-mlops-prod/mlflow/1/m-p/artifacts"
)
URIS_OK = (
    f"{URIS} rejected=s3://mlflow/1/m-b/artifacts rollback=s3://mlflow/1/m-b/artifacts "
    f"rollback-first=s3://mlflow/1/m-a/artifacts {ENVS}"
)
# the model version the predictor is annotated with, at each wait_serving: install, fault-predictor, unchanged,
# accepted, rejected, rollback, rollback-first, schedule-enabled, retrained, reconciled, staging,
# staging-reinstalled, prod, staging-beside-prod
SERVED_OK = "1 1 1 2 2 2 1 1 3 1 1 1 1 1"


def _stub_run(
    tmp_path: Path,
    fail: str = "^$",
    clusters: str = "",
    uris: str = "",
    served: str = SERVED_OK,
    hook_exit: str = "",
    **stub_env: str,
) -> tuple[int, str, list[str]]:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("docker", "kind", "kubectl", "helm", "make", "go", "git"):
        path = stubs / name
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "E2E_TOOLS_BIN": str(stubs),
        "E2E_WORKDIR": str(tmp_path / "e2e"),
        "STUB_LOG": str(log),
        "STUB_FAIL": fail,
        "STUB_CLUSTERS": clusters,
        "STUB_URIS": uris,
        "STUB_SERVED": served,
        "STUB_HOOK_EXIT": hook_exit,
        "E2E_HELM3": str(stubs / "helm"),
        "E2E_GONE_SECONDS": "1",
        **{f"STUB_{k.upper()}": v for k, v in stub_env.items()},
    }
    result = subprocess.run(
        [str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, result.stdout + result.stderr, calls


def _index(calls: list[str], pattern: str) -> int:
    return next(i for i, call in enumerate(calls) if re.search(pattern, call))


def test_the_happy_path_passes_and_checks_each_verdict(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, uris=URIS_OK)
    assert rc == 0, out
    # the closing line lists every phase that ran (kind provider: its own cluster phases first)
    passed = next(line for line in out.splitlines() if line.startswith("e2e: PASSED"))
    assert "install ready test fault-predictor" in passed and "side-by-side teardown" in passed, passed
    assert _index(calls, r"^helm rollback housing 1 ") < _index(
        calls, r"^kubectl run e2e-infer-rollback-first "
    )
    assert calls[-1] == "kind delete cluster --name housing-e2e"
    assert not (tmp_path / "e2e" / "artifacts").exists()
    timings = json.loads((tmp_path / "e2e" / "timings.json").read_text())
    assert timings["result"] == "passed"
    assert timings["phases_s"]["predictor-pod-created-to-ready"] == 21  # the stand-in's two timestamps
    assert {"install", "fault-postgres", "staging", "prod"} <= set(timings["phases_s"])


def test_a_release_failed_by_the_gate_is_the_expected_verdict(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, fail="upgrade-rejected", uris=URIS_OK, hook_exit="3")
    assert rc == 0, out
    assert "the promotion hook exited 3: rejected by the gate (3 == 3)" in out
    assert _index(calls, "upgrade-rejected") < _index(
        calls, r"^kubectl logs -n housing job/housing-promote-4"
    )


def test_a_release_failed_by_anything_else_fails_the_run(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, fail="upgrade-rejected", uris=URIS_OK, hook_exit="1")
    assert rc != 0
    assert "the promotion hook exited 3: rejected by the gate: got '1', expected '3'" in out
    assert calls[-1] == "kind delete cluster --name housing-e2e"


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        (f"{URIS} rejected=s3://mlflow/1/m-c/artifacts", "the rejected retrain left production alone"),
        (
            "install=s3://mlflow/1/m-a/artifacts fault-postgres=s3://mlflow/1/m-a/artifacts "
            "accepted=s3://mlflow/1/m-a/artifacts",
            "accepted retrain",
        ),
        (
            f"{URIS} rejected=s3://mlflow/1/m-b/artifacts rollback=s3://mlflow/1/m-a/artifacts",
            "production stayed on the accepted retrain",
        ),
        (
            f"{URIS} rejected=s3://mlflow/1/m-b/artifacts rollback=s3://mlflow/1/m-b/artifacts "
            "rollback-first=s3://mlflow/1/m-b/artifacts",
            "the rollback put the first model back",
        ),
        (
            f"{URIS_OK.replace('staging-reinstalled=s3://housing-mlops-staging/mlflow/1/m-s', 'staging-reinstalled=s3://housing-mlops-staging/mlflow/1/m-t')}",
            "the same champion serves",
        ),
    ],
    ids=[
        "rejected-but-moved",
        "accepted-but-stayed",
        "rollback-demoted",
        "rollback-not-back",
        "reinstall-lost",
    ],
)
def test_a_wrong_verdict_fails_the_run(tmp_path: Path, uris: str, message: str) -> None:
    rc, out, calls = _stub_run(tmp_path, uris=uris)
    assert rc != 0
    assert message in out
    assert calls[-1] == "kind delete cluster --name housing-e2e"


@pytest.mark.parametrize(
    ("served", "message"),
    [
        ("1 2", "the new predictor serves the same version"),
        ("1 1 2", "the predictor serves the same version"),
        ("1 1 1 1", "the predictor serves the accepted retrain"),
        ("1 1 1 2 3", "the predictor still serves the accepted retrain"),
        ("1 1 1 2 2 1", "the predictor serves the accepted retrain"),
        ("1 1 1 2 2 2 2", "the predictor serves the first model again"),
        ("", "has no housing-mlops.io/model-version annotation"),
    ],
    ids=[
        "restarted-serves-another",
        "unchanged-serves-another",
        "accepted-not-served",
        "rejected-served",
        "rollback-demoted",
        "rollback-first-not-served",
        "never-rolled-out",
    ],
)
def test_the_predictor_must_follow_the_alias(tmp_path: Path, served: str, message: str) -> None:
    rc, out, _ = _stub_run(tmp_path, uris=URIS_OK, served=served)
    assert rc != 0
    assert message in out, out


@pytest.mark.parametrize(
    ("stub_env", "message"),
    [
        (
            {"versions": "1 aaaa x\\n2 bbbb x\\n3 bbbb x"},
            "a training identity registered more than one version",
        ),
        (
            {"retrain_md5": "d1c47305887e2252bf1ccbd74ff159a6"},
            "it trained on the newest pushed dataset version",
        ),
        ({"retrained": "1"}, "no version was registered"),
        ({"install_passes": "1"}, "an install whose training fails fails"),
        (
            {"hook_log": "error: no version after 1200s"},
            "the promotion hook did not stop on the failed training",
        ),
        ({"trained_at": "2001-01-01T00:00:00Z"}, "the training had finished before the fault"),
        ({"psa_open": "1"}, "Pod Security restricted refuses a privileged pod in housing-prod"),
        ({"open_probe": "e2e-np-client-db"}, "only MLflow reaches PostgreSQL: blocked"),
        ({"open_probe": "e2e-np-outside-predictor"}, "another namespace does not: blocked"),
        ({"left_ns": "housing-staging"}, "helm uninstall left objects behind"),
        ({"csc_namespaces": "housing-prod"}, "one storage container per release"),
        ({"predictor_ports": "http1:80 "}, "the predictor Service's ports"),
        ({"open_probe": "e2e-np-clients-metrics"}, "only inference.metrics.from scrapes: blocked"),
    ],
    ids=[
        "duplicate-version",
        "retrained-on-old-data",
        "retrained-unchanged",
        "failing-install-passed",
        "hook-did-not-fail-fast",
        "fault-after-training",
        "no-pod-security",
        "db-open",
        "predictor-open",
        "left-behind",
        "one-storage-container",
        "no-grpc-or-metrics-port",
        "metrics-open",
    ],
)
def test_each_fault_and_environment_check_can_fail_the_run(
    tmp_path: Path, stub_env: dict[str, str], message: str
) -> None:
    rc, out, calls = _stub_run(tmp_path, uris=URIS_OK, **stub_env)
    assert rc != 0
    assert message in out, out[-3000:]
    assert calls[-1] == "kind delete cluster --name housing-e2e"


def test_the_environments_pass_and_clean_up(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, uris=URIS_OK)
    assert rc == 0, out
    for env in ("housing-staging", "housing-prod"):
        assert f"helm uninstall housing -n {env} --wait --timeout 10m" in calls
        assert f"kubectl delete namespace {env} --wait --timeout=180s" in calls
    staging = _index(calls, r"^helm install housing charts/housing-mlops -n housing-staging ")
    assert _index(calls, r"^helm version --short") < staging  # the Helm 3 binary (E2E_HELM3) is the stub here
    assert _index(calls, r"^kubectl label namespace housing-prod pod-security") < _index(
        calls, r"^helm install housing charts/housing-mlops -n housing-prod "
    )


def test_a_failed_install_collects_diagnostics_then_deletes_the_cluster(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, fail=r"^helm install housing ")
    assert rc != 0
    assert "FAILED in phase 'install'" in out, out
    after = calls[_index(calls, r"^helm install housing ") + 1 :]
    for pattern in (
        r"^kubectl describe pods,.* -n housing$",
        r"^kubectl get events -n housing --sort-by=\.lastTimestamp$",
        r"^kubectl logs -n housing pod/stub-0 --all-containers --prefix --timestamps$",
        r"^kubectl logs -n housing pod/stub-0 --all-containers --prefix --previous$",
        r"^kubectl get events -n kserve ",
        r"^helm history housing ",
        r"^kind export logs ",
    ):
        assert any(re.search(pattern, call) for call in after), pattern
    assert after[-1] == "kind delete cluster --name housing-e2e", after[-3:]
    assert (tmp_path / "e2e" / "artifacts" / "housing-events.txt").is_file()
    assert not any(call.startswith("helm test") for call in calls)


def test_no_cluster_no_cleanup_when_preflight_fails(tmp_path: Path) -> None:
    rc, _, calls = _stub_run(tmp_path, fail=r"^docker info")
    assert rc != 0
    assert not any(call.startswith(("kind create", "kind delete", "kind export")) for call in calls), calls


def test_an_existing_cluster_is_left_alone(tmp_path: Path) -> None:
    rc, out, calls = _stub_run(tmp_path, clusters="housing-e2e")
    assert rc != 0
    assert "a kind cluster named housing-e2e exists" in out
    assert not any(call.startswith(("kind create", "kind delete")) for call in calls), calls


def _argv_log(tmp_path: Path) -> list[list[str]]:
    raw = (tmp_path / "calls.log.argv").read_bytes().decode()
    records = [r.strip("\0").split("\0") for r in raw.split("\x1e\0")]
    return [r for r in records if r and r[0]]


def test_every_command_line_parses_with_the_pinned_tools(tmp_path: Path) -> None:
    """helm v4, kubectl and kind accept every command line the e2e runs, helpers and diagnostics included
    (argv recorded by the stand-ins on a passing run and on a failing one; `--help` parses, runs nothing)."""
    tools = {name: TOOLS_BIN / name for name in ("helm", "kubectl", "kind")}
    missing = [name for name, path in tools.items() if not path.is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in .tools/bin (`make tools e2e-tools` installs them)")
    argvs = []
    for run, kwargs in (("pass", {"uris": URIS_OK}), ("fail", {"fail": r"^helm install housing "})):
        (tmp_path / run).mkdir()
        _stub_run(tmp_path / run, **kwargs)
        argvs += _argv_log(tmp_path / run)
    unique = {tuple(a) for a in argvs if a[0] in tools}
    bad = []
    for name, *args in sorted(unique):
        cut = args.index("--") if "--" in args else len(args)
        argv = [str(tools[name]), *args[:cut], "--help", *args[cut:]]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            bad.append(f"{name} {shlex.join(args)}\n    {result.stderr.strip().splitlines()[-1:]}")
    assert len(unique) > 50, sorted(unique)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("wanted", "on_pods", "synced"),
    [
        ("", "", True),
        ("housing-mlops.io/model-version=2", "housing-mlops.io/model-version=2\\nother=x", True),
        ("housing-mlops.io/model-version=2", "housing-mlops.io/model-version=1", False),
        ("housing-mlops.io/model-version=2", "", False),
        ("a=1\\nb=2", "a=1", False),
        ("a=1", "a=10", False),
    ],
)
def test_predictor_synced_compares_annotations(wanted: str, on_pods: str, synced: bool) -> None:
    """The helper that decides the predictor has rolled out what the InferenceService asks for."""
    body = re.search(r"^predictor_synced\(\) \{.*?^\}$", _script_text(), re.MULTILINE | re.DOTALL)
    assert body
    fake = (
        'kubectl() { case "$*" in *"get inferenceservice"*) printf "%b" "$WANTED";; '
        '*"get deployment"*) printf "%b" "$ON_PODS";; esac; }'
    )
    script = f"set -euo pipefail\n{fake}\n{body.group(0)}\nISVC=m NS=n\npredictor_synced"
    env = {"PATH": "/usr/bin:/bin", "WANTED": wanted, "ON_PODS": on_pods}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert (result.returncode == 0) == synced, result.stderr


def test_the_network_probe_tells_open_blocked_and_unresolved_apart() -> None:
    """PROBE_PY (prod's NetworkPolicy checks): 0 once connected (it retries: kube-router admits a new pod a moment
    after it starts), 1 when refused for its whole 20 s, 2 when the name does not resolve."""
    match = re.search(r"^PROBE_PY='(.*?)'$", _script_text(), re.MULTILINE | re.DOTALL)
    assert match
    probe = match.group(1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        opened = subprocess.run(
            ["python3", "-c", probe, "127.0.0.1", str(port)], capture_output=True, text=True
        )
    assert opened.returncode == 0 and "open" in opened.stdout
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]  # bound, never listening: refused
        closed = subprocess.run(
            ["python3", "-c", probe, "127.0.0.1", str(closed_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert closed.returncode == 1 and "blocked for 20 s" in closed.stdout
    unresolved = subprocess.run(
        ["python3", "-c", probe, "no-such-host.invalid", "80"], capture_output=True, text=True
    )
    assert unresolved.returncode == 2 and "does not resolve" in unresolved.stdout


def _probe_blocked(port: int, hold: str = "2", within: str = "4") -> subprocess.CompletedProcess[str]:
    match = re.search(r"^PROBE_PY='(.*?)'$", _script_text(), re.MULTILINE | re.DOTALL)
    assert match
    args = ["python3", "-c", match.group(1), "127.0.0.1", str(port), "blocked", hold, within]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_a_blocked_probe_waits_for_the_policy_of_a_new_pod() -> None:
    """WANT=blocked (egress of the probe pod itself): a success first is a pod its policy does not cover yet;
    blocked means refused HOLD s in a row; never blocked within WITHIN s means open."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = _probe_blocked(unused.getsockname()[1])
    assert (
        refused.returncode == 1 and "blocked for 2 s" in refused.stdout and "at first" not in refused.stdout
    )

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        still_open = _probe_blocked(server.getsockname()[1])
    assert still_open.returncode == 0 and "open (still after 4 s)" in still_open.stdout

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def accept_once_then_close() -> None:  # the policy arrives after the first connection
        conn, _ = server.accept()
        conn.close()
        server.close()

    closer = threading.Thread(target=accept_once_then_close)
    closer.start()
    late = _probe_blocked(port, within="10")
    closer.join(timeout=10)
    assert late.returncode == 1 and "open at first" in late.stdout, late.stdout
