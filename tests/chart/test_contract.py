"""Contract between the chart and the `housing-mlops` CLI (docs/cli.md).

Every command line the chart renders for training, promotion, rollback, the storage container and the test
pods is run through the real CLI with `--validate-only` and the container's environment: it must parse
(exit 0), every HOUSING_* variable the chart sets must be one the command reads (a typo would otherwise be
ignored silently), and the parsed options must say what the chart means (same trigger for training and
promotion, the InferenceService to roll out, the alias URI...).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import NAMESPACE, RELEASE, ROOT, VALUES_FILES, render, values_id

CLI = Path(sys.executable).parent / "housing-mlops"
SECRET_PLACEHOLDER = "from-a-secret"
# variables read by libraries (MLflow, boto3, DVC) or the runtime rather than by CLI options
STANDARD_ENV = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",  # MLflow's client (registry.py only sets a default)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "HOME",
    "XDG_CACHE_HOME",
}


@dataclass(frozen=True)
class Invocation:
    where: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @property
    def command(self) -> str:
        return self.argv[1]


def container_env(container: dict) -> dict[str, str]:
    # valueFrom (Secrets) becomes a placeholder: the CLI sees a value, as in the pod
    return {item["name"]: item.get("value", SECRET_PLACEHOLDER) for item in container.get("env", [])}


def invocations(objects) -> list[Invocation]:
    """Every housing-mlops command line in a rendering, as the kubelet / KServe would start it."""
    found = []
    # alias mode renders `…/<model>/pinned` (the version: the pod's pin annotation); pinned mode the URI given
    isvc_uris = [
        o["spec"]["predictor"]["model"]["storageUri"] for o in objects if o["kind"] == "InferenceService"
    ]
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ClusterStorageContainer":
            container = obj["spec"]["container"]
            prefixes = [f["prefix"] for f in obj["spec"]["supportedUriFormats"]]
            for uri in isvc_uris:
                if any(uri.startswith(p) for p in prefixes):
                    # KServe passes <storageUri> <mount path> as the container's args
                    argv = (*container["command"], uri, "/mnt/models")
                    found.append(Invocation(where, argv, tuple(sorted(container_env(container).items()))))
            continue
        if obj["kind"] in ("Job", "Pod", "Deployment"):
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                if container.get("command", [""])[0] != "housing-mlops":
                    continue
                argv = (*container["command"], *container.get("args", []))
                env = tuple(sorted(container_env(container).items()))
                found.append(Invocation(f"{where}/{container['name']}", argv, env))
    return found


def validate(inv: Invocation, extra_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):  # a checkout other than the venv's editable install (a git worktree)
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    argv = [str(CLI), "--validate-only", *inv.argv[1:], *extra_args]
    return subprocess.run(argv, env={**base, **dict(inv.env)}, capture_output=True, text=True, check=False)


def cli_envvars() -> dict[str, set[str]]:
    """Environment variables each subcommand reads, from the CLI's own option declarations."""
    from housing_mlops.cli import cli

    out = {}
    global_vars = {p.envvar for p in cli.params if isinstance(p.envvar, str)}
    for name, command in cli.commands.items():
        out[name] = global_vars | {p.envvar for p in command.params if isinstance(p.envvar, str)}
    return out


# first install (training pod: train + bootstrap promotion) and upgrade (train only) of every values file
RENDERED = {values_id(v): invocations(render((v,))) for v in VALUES_FILES}
UPGRADES = [inv for v in VALUES_FILES for inv in invocations(render((v,), upgrade=True))]
UNIQUE = sorted(
    {inv for invs in RENDERED.values() for inv in invs} | set(UPGRADES),
    key=lambda i: (i.where, i.argv, i.env),
)


def test_cli_is_installed():
    assert CLI.exists(), f"{CLI} missing: run `make venv`"


def test_every_component_is_covered():
    commands = {inv.command for inv in UNIQUE}
    assert {"train", "promote", "rollback", "fetch-model", "infer", "check", "reconcile"} <= commands


@pytest.mark.parametrize("inv", UNIQUE, ids=lambda i: f"{i.where}:{' '.join(i.argv[1:3])}")
def test_cli_accepts_rendered_command(inv: Invocation):
    result = validate(inv)
    assert result.returncode == 0, f"{' '.join(inv.argv)} rejected:\n{result.stderr}{result.stdout}"
    parsed = json.loads(result.stdout)
    assert parsed["command"] == f"housing-mlops {inv.command}"


@pytest.mark.parametrize("inv", UNIQUE, ids=lambda i: f"{i.where}:{' '.join(i.argv[1:3])}")
def test_chart_sets_only_variables_the_command_reads(inv: Invocation):
    reads = cli_envvars()[inv.command]
    unknown = {k for k, _ in inv.env if k not in reads and k not in STANDARD_ENV}
    assert unknown == set(), f"{inv.where} sets variables `housing-mlops {inv.command}` ignores"


def parsed(inv: Invocation) -> dict:
    result = validate(inv)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["params"]


def by_command(values: str, command: str) -> list[Invocation]:
    return [i for i in RENDERED[values] if i.command == command]


def test_training_and_promotion_share_the_identity():
    """The hook judges exactly the version of this revision's training identity: the bootstrap container gets
    it as a value, the hooks from the training ConfigMap (they cannot see the training values)."""
    defaults = "charts/housing-mlops/ci/01-defaults-values.yaml"
    (train,) = [parsed(i) for i in by_command(defaults, "train")]
    promotes = [i for i in by_command(defaults, "promote")]
    assert len(train["identity"]) == 16 and train["trigger"] == f"helm:{NAMESPACE}/{RELEASE}"
    bootstrap = [parsed(i) for i in promotes if "-train-" in i.where]
    assert bootstrap and all(p["identity"] == train["identity"] and p["bootstrap"] for p in bootstrap)
    objects = render((ROOT / defaults,))
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-training"
    ]
    assert config["data"]["identity"] == train["identity"]


def test_promotion_waits_for_the_pin_of_its_inference_service():
    hook = next(i for i in by_command("values/staging.yaml", "promote") if "-promote-" in i.where)
    params = parsed(hook)
    assert params["isvc_name"] == "housing-model"
    assert params["isvc_namespace"] == NAMESPACE
    assert params["helm_record"] and params["release"] == f"{NAMESPACE}/{RELEASE}" and params["revision"] == 1


def test_reconciler_pins_its_inference_service_to_its_own_mlflow():
    (reconcile,) = [parsed(i) for i in by_command("values/staging.yaml", "reconcile")]
    assert reconcile["isvc_name"] == "housing-model"
    assert reconcile["uri_prefix"] == f"mlflow://{RELEASE}-mlflow.{NAMESPACE}.svc.cluster.local:5000/"
    assert reconcile["interval"] > 0


def test_verdict_exit_codes_are_the_ones_errors_py_names():
    from housing_mlops.errors import VERDICT_EXIT_CODES

    hook = next(
        o
        for o in render((ROOT / "values/staging.yaml",))
        if o["kind"] == "Job" and "-promote-" in o["metadata"]["name"]
    )
    rules = hook["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == list(VERDICT_EXIT_CODES)


def test_prod_gate_is_strict():
    hook = next(i for i in by_command("values/prod.yaml", "promote") if "-promote-" in i.where)
    params = parsed(hook)
    assert params["max_regression_pct"] == 0
    assert params["threshold"] == 50000


def test_storage_container_fetches_the_pinned_version():
    """Never the alias: the version the pod's pin annotation names (the reconciler writes it)."""
    (fetch,) = [i for i in by_command("values/staging.yaml", "fetch-model")]
    params = parsed(fetch)
    assert (
        params["uri"] == f"mlflow://{RELEASE}-mlflow.{NAMESPACE}.svc.cluster.local:5000/housing-model/pinned"
    )
    objects = render((ROOT / "values/staging.yaml",))
    (csc,) = [o for o in objects if o["kind"] == "ClusterStorageContainer"]
    (pin,) = [e for e in csc["spec"]["container"]["env"] if e["name"] == "HOUSING_PINNED_VERSION"]
    assert (
        pin["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['housing-mlops.io/model-version']"
    )
    assert params["dest"] == "/mnt/models"
    assert params["tracking_uri"].startswith(f"http://{RELEASE}-mlflow.{NAMESPACE}.svc")


@pytest.mark.parametrize(
    "values", sorted(v for v, invs in RENDERED.items() if any(i.command == "fetch-model" for i in invs))
)
def test_storage_container_fetches_only_from_mlflows_artifact_root(values: str):
    """fetch-model refuses any model URI outside --artifact-root: the chart gives it exactly the root the MLflow
    server writes artifacts to (global.s3 bucket and prefix for an external MLflow), and never lets an unrecorded
    version through by default."""
    (fetch,) = [parsed(i) for i in by_command(values, "fetch-model")]
    objects = render((ROOT / values,))
    servers = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-mlflow"
    ]
    if servers:
        spec = servers[0]["spec"]["template"]["spec"]
        args = [a for c in spec["containers"] for a in c.get("command", []) + c.get("args", [])]
        (root,) = [a.split("=", 1)[1] for a in args if a.startswith("--default-artifact-root=")]
    else:
        s3 = {**yaml.safe_load((ROOT / "charts/housing-mlops/values.yaml").read_text())["global"]["s3"],
              **yaml.safe_load((ROOT / values).read_text())["global"].get("s3", {})}  # fmt: skip
        root = f"s3://{s3['bucket']}/{s3['prefix'].strip('/')}"
    assert fetch["artifact_root"] == root and root.startswith("s3://")
    assert fetch["allow_unverified"] is False


def test_inference_test_targets_the_predictor():
    (infer,) = [parsed(i) for i in by_command("values/kind.yaml", "infer")]
    assert infer["url"] == f"http://housing-model-predictor.{NAMESPACE}.svc.cluster.local"
    assert infer["model_name"] == "housing-model"


def test_contract_check_can_fail():
    """A value the CLI cannot parse, or an unknown flag, is caught."""
    train = by_command("charts/housing-mlops/ci/01-defaults-values.yaml", "train")[0]
    env = dict(train.env) | {"HOUSING_TEST_SIZE": "0.9"}
    bad = Invocation(train.where, train.argv, tuple(sorted(env.items())))
    assert validate(bad).returncode == 2
    assert validate(train, ("--no-such-flag",)).returncode == 2


def mlflow_cli_flags() -> set[str]:
    """Option names declared in the locked mlflow's CLI sources (importing mlflow.cli takes ~15 s)."""
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations, "mlflow is not installed in the venv"
    package = Path(next(iter(spec.submodule_search_locations)))
    flags = set()
    for source in (package / "cli" / "__init__.py", package / "utils" / "cli_args.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--"):
                flags.update(node.value.split("/"))
    return flags


def test_mlflow_server_flags_exist():
    """The MLflow container's flags exist in the locked mlflow (the image installs the same lock)."""
    objects = render((ROOT / "values" / "prod.yaml",))
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-mlflow"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "server"
    known = mlflow_cli_flags()
    assert {"--host", "--allowed-hosts"} <= known
    unknown = [a for a in args[1:] if a.split("=", 1)[0] not in known]
    assert unknown == []


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_serving_runtime_runs_what_bench_measured(values: Path) -> None:
    """The ServingRuntime starts housing_mlops.server with settings it reads (server.Settings: every
    HOUSING_SERVE_* variable rendered is one it knows, each value parses) and the tuning `housing-mlops serve`
    uses locally (housing_mlops.serve: what bench/ measured as fastest), and so does the serving image."""
    from housing_mlops import serve
    from housing_mlops.limits import Settings

    runtimes = [o for o in render((values,)) if o["kind"] == "ServingRuntime"]
    text = values.read_text()
    if "inference:\n  enabled: false" in text or "runtime: kserve-mlserver" in text:
        assert runtimes == [], (
            "no inference, or KServe's own ClusterServingRuntime: no ServingRuntime of ours"
        )
        return
    assert len(runtimes) == 1
    (container,) = [c for c in runtimes[0]["spec"]["containers"] if c["name"] == "kserve-container"]
    assert container["command"] == ["python", "-m", "housing_mlops.server"]
    env = container_env(container)
    ours = {k: v for k, v in env.items() if k.startswith("HOUSING_")}
    assert set(ours) <= set(Settings.ENV.values()), set(ours) - set(Settings.ENV.values())
    settings = Settings.from_env(Path("/mnt/models"), {**ours, "HOUSING_SERVE_MODEL_NAME": "housing-model"})
    assert settings.host == "0.0.0.0" and settings.http_port == 8080
    assert not any(k.startswith("MLSERVER_") for k in env), env
    assert {k: env.get(k) for k in serve.TUNING} == serve.TUNING
    dockerfile = (ROOT / "images" / "serving" / "Dockerfile").read_text()
    for name, value in serve.TUNING.items():
        assert f"    {name}={value} \\" in dockerfile, name


def test_the_mlflow_image_can_run_the_auth_the_values_enable():
    """values/prod.yaml turns MLflow basic auth on; its app imports Flask-WTF at start. Measured on the real
    cluster: without the `auth` extra prod's MLflow crashlooped (ImportError: ... requires the Flask-WTF
    package), while the local tests passed (the venv installs mlflow[auth] from requirements.in)."""
    enabled = [
        v
        for v in VALUES_FILES
        if (yaml.safe_load(v.read_text()) or {}).get("mlflow", {}).get("auth", {}).get("enabled")
    ]
    assert enabled, "no values file enables MLflow auth any more: drop this test with the extra"
    wanted = [
        line.split("#")[0].strip()
        for line in (ROOT / "images" / "mlflow" / "requirements.in").read_text().splitlines()
    ]
    assert "mlflow[auth]" in wanted, "images/mlflow/requirements.in must install mlflow[auth]"
