"""What the cluster e2e (tests/cluster/) installs, rendered without a cluster: the main release (values/kind.yaml and
the upgrade overlays in ci/kind/), staging and prod (values/<env>.yaml through ci/overlays/<env>.yaml, which may
change only what a throwaway cluster without AWS lacks). Every file passes the chart's schema, and the names and
Secrets the scenarios rely on are there."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
CLUSTER_TESTS = ROOT / "tests" / "cluster"
KIND_DIR = ROOT / "ci" / "kind"
KSERVE_APIS = (
    "serving.kserve.io/v1beta1/InferenceService",
    "serving.kserve.io/v1alpha1/ServingRuntime",
    "serving.kserve.io/v1alpha1/ClusterStorageContainer",
)
ENVS = ("staging", "prod")
# What an overlay may set: the S3 endpoint and static keys (instead of IRSA), our image registry and pull policy,
# the volume's class and size, CPU/memory requests. Everything else stays the environment's own.
ALLOWED = (
    r"global\.image\.(registry|pullPolicy)",
    r"global\.s3\.(endpoint|existingSecret)",
    r"postgresql\.persistence\.(storageClass|size)",
    r"(postgresql|mlflow|training|inference)\.resources\.requests\.(cpu|memory)",
    # this cluster's own S3 store and API server, in place of AWS's and EKS's addresses
    r"global\.networkPolicy\.egress\.(s3|apiServer)\.(to|ports)",
    # images loaded by tag (the local provider then pins them by the digests its registry gave: digests.yaml)
    r"(mlflow|training|promotion|tests|inference|inference\.storageContainer)\.image\.digest",
)
# The values overlays in ci/kind/ (the other files there are Kubernetes manifests and kind's config).
UPGRADE_OVERLAYS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in KIND_DIR.glob("*.yaml")
    if not any(doc and "apiVersion" in doc for doc in yaml.safe_load_all(p.read_text()))
)


def constant(path: Path, name: str) -> Any:
    """A module-level literal of a tests/cluster module, read without importing it (no cluster clients)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.relative_to(ROOT)} has no literal {name}")


def render(*values: str, namespace: str = "housing") -> list[dict]:
    """`helm template` of the chart with these values files (paths from the repo root), KServe's APIs present."""
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    args = [str(helm), "template", "housing", "charts/housing-mlops", "-n", namespace]
    for path in values:
        args += ["-f", path]
    for api in KSERVE_APIS:
        args += ["--api-versions", api]
    env = {**os.environ, "HELM_CACHE_HOME": str(ROOT / ".tools" / "helm-cache")}
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"helm template {' '.join(values)}:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def env_render(env: str) -> list[dict]:
    """values/<env>.yaml as the environments scenario installs it (the local provider's values on top)."""
    return render(
        f"values/{env}.yaml", f"ci/overlays/{env}.yaml", "values/local.yaml", namespace=f"housing-{env}"
    )


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def _pod_spec(doc: dict) -> dict:
    """The pod template of a workload (CronJob, Job, Deployment, StatefulSet), an InferenceService's predictor or
    a Pod's own spec."""
    spec = doc.get("spec", {})
    workload = spec.get("jobTemplate", {}).get("spec", spec)
    return workload.get("template", {}).get("spec") or spec.get("predictor") or spec


def _containers(doc: dict) -> list[dict]:
    pod = _pod_spec(doc)
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _env(doc: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from secret>") for c in _containers(doc) for e in c.get("env", [])}


def _hook(doc: dict) -> list[str]:
    return [h for h in doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",") if h]


def _component(docs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    """The release's objects as `helm get manifest` lists them (no hooks), of one kind and chart component."""
    return [
        d
        for d in docs
        if d["kind"] == kind
        and not _hook(d)
        and (
            component is None
            or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def _training_job(docs: list[dict]) -> dict:
    (job,) = _component(docs, "Job", "training")
    return job


# --- the main release: values/kind.yaml and the upgrade overlays ----------------------------------------------


@pytest.mark.parametrize("overlay", ["", *UPGRADE_OVERLAYS])
def test_the_chart_accepts_what_the_e2e_installs(overlay: str) -> None:
    """values/kind.yaml and each upgrade overlay pass the chart's strict schema and render."""
    docs = render("values/kind.yaml", *filter(None, [overlay]))
    assert any(d["kind"] == "InferenceService" for d in docs)


def test_the_upgrade_overlays_train_only_where_the_scenarios_expect() -> None:
    """The training identity (the Job's name) stays for the values-only upgrades (unchanged, replicas, the
    schedule), changes for the accepted, the rejected and the slow (timed-out) retrain."""
    installed = _training_job(render("values/kind.yaml"))["metadata"]["name"]
    assert {p.split("/")[-1] for p in UPGRADE_OVERLAYS} == {
        "upgrade-unchanged.yaml",
        "upgrade-accepted.yaml",
        "upgrade-rejected.yaml",
        "upgrade-slow.yaml",
        "upgrade-unschedulable.yaml",
        "replicas.yaml",
        "schedule.yaml",
    }
    for overlay in UPGRADE_OVERLAYS:
        name = _training_job(render("values/kind.yaml", overlay))["metadata"]["name"]
        # the unschedulable one keeps the identity (the e2e sets a nonce) but its pod template, so its Job, is new
        trains = overlay.endswith(
            (
                "upgrade-accepted.yaml",
                "upgrade-rejected.yaml",
                "upgrade-slow.yaml",
                "upgrade-unschedulable.yaml",
            )
        )
        assert (name != installed) == trains, f"{overlay}: training Job {name}, installed {installed}"


def test_the_rejected_retrain_is_worse_and_the_gate_strict() -> None:
    docs = render("values/kind.yaml", "ci/kind/upgrade-rejected.yaml")
    env = _env(_training_job(docs))
    assert env["HOUSING_MAX_ITER"] == "1"
    assert env["HOUSING_MAX_DEPTH"] == "1"
    (promote,) = [d for d in docs if d["kind"] == "Job" and "post-upgrade" in _hook(d)]
    assert _env(promote)["HOUSING_GATE_MAX_REGRESSION_PCT"] == "0"


@pytest.mark.parametrize(
    ("env", "values"),
    [
        pytest.param("main", ("values/kind.yaml",), id="main"),
        pytest.param("main+schedule", ("values/kind.yaml", "ci/kind/schedule.yaml"), id="main+schedule"),
        *(
            pytest.param(env, (f"values/{env}.yaml", f"ci/overlays/{env}.yaml", "values/local.yaml"), id=env)
            for env in ENVS
        ),
    ],
)
def test_names_the_scenarios_rely_on_are_in_the_chart(env: str, values: tuple[str, ...]) -> None:
    """tests/cluster reads every name from the release (`helm get manifest`, `helm get hooks`) by kind and
    app.kubernetes.io/component, expecting exactly one of each (lib/deployed.py, main_release.py)."""
    docs = render(*values, namespace="housing-e2e")
    for kind, component in (
        ("InferenceService", None),
        ("StatefulSet", None),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("Service", "postgresql"),
        ("Job", "training"),
        ("Deployment", "reconciler"),
    ):
        found = [d["metadata"]["name"] for d in _component(docs, kind, component)]
        assert len(found) == 1, f"{kind} ({component}): {found}"
    maps = [c for c in _component(docs, "ConfigMap", "training") if "job" in (c.get("data") or {})]
    assert len(maps) == 1, "one training ConfigMap names the training Job (the hooks read it)"
    assert maps[0]["data"]["job"] == _training_job(docs)["metadata"]["name"]
    models = {
        e["value"]
        for d in docs
        for c in _containers(d)
        for e in c.get("env", [])
        if e["name"] == "HOUSING_MODEL_NAME"
    }
    assert len(models) == 1, models
    for event in ("post-install", "post-upgrade"):
        hooks = [d["metadata"]["name"] for d in docs if d["kind"] == "Job" and event in _hook(d)]
        assert len(hooks) == 1, f"{event} hook Jobs: {hooks}"
    assert any(d["kind"] == "Pod" and "test" in _hook(d) for d in docs), "no `helm test` Pod"
    (csc,) = _component(docs, "ClusterStorageContainer")
    assert (
        csc["metadata"]["name"] == "housing-e2e-housing-mlflow"
    )  # <namespace>-<release>-mlflow, per release
    if env == "main+schedule":  # the retrain CronJob
        assert len(_component(docs, "CronJob", "training")) == 1
    if env == "prod":  # the NetworkPolicy scenario's clients and the predictor-clients namespace
        (policy,) = _component(docs, "NetworkPolicy", "mlflow")
        assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        prod = yaml.safe_load((ROOT / "values" / "prod.yaml").read_text())
        assert prod["inference"]["networkPolicy"]["from"][0]["namespaceSelector"]["matchLabels"]


def test_s3_and_dvc_remotes_are_the_ones_the_e2e_provides() -> None:
    """Every release reaches S3 as minio.<namespace>:9000 with the keys in the Secret the e2e creates in each
    namespace (tests/cluster/lib/deployed.py: prepare_namespace), and its DVC remote is one the e2e seeds."""
    secret = constant(CLUSTER_TESTS / "lib" / "setup.py", "S3_SECRET")
    remotes = constant(CLUSTER_TESTS / "conftest.py", "DVC_REMOTES")
    kind = yaml.safe_load((ROOT / "values" / "kind.yaml").read_text())
    for name, values in (
        ("kind", kind),
        *((env, yaml.safe_load((ROOT / "ci" / "overlays" / f"{env}.yaml").read_text())) for env in ENVS),
    ):
        s3 = values["global"]["s3"]
        assert s3["existingSecret"] == secret, name
        assert s3["endpoint"] == "http://minio.{{ .Release.Namespace }}:9000", name
    bucket = kind["global"]["s3"]["bucket"]
    remote = kind["training"]["data"]["remoteUrl"]
    assert remote == remotes[0] and remote.startswith(f"s3://{bucket}/"), "the main remote is in the bucket"
    for env in ENVS:
        assert f"s3://housing-mlops-{env}/dvc" in remotes, env
    assert kind["postgresql"]["persistence"]["whenDeleted"] == "Delete", "uninstall would leave the PVC"


def test_the_buckets_the_releases_use_are_created() -> None:
    remotes = constant(CLUSTER_TESTS / "conftest.py", "DVC_REMOTES")
    buckets = {r.split("/")[2] for r in remotes}
    assert buckets == {"housing-mlops", *(f"housing-mlops-{env}" for env in ENVS)}
    for path in (ROOT / "ci" / "cluster" / "s3.yaml", KIND_DIR / "s3.yaml"):
        text = path.read_text()
        for bucket in buckets:
            assert re.search(rf"\b{bucket}\b(?!-)", text), (
                f"{path.relative_to(ROOT)} does not create {bucket}"
            )


def test_the_images_the_e2e_loads_are_the_ones_the_chart_runs() -> None:
    """ci/e2e-setup.sh builds and loads housing-mlops/*:<hooks/pyproject.toml version>; the chart runs its
    appVersion."""
    version = re.search(r'^version = "(.+)"', (ROOT / "hooks/pyproject.toml").read_text(), re.MULTILINE)
    assert version
    chart = yaml.safe_load((ROOT / "charts/housing-mlops/Chart.yaml").read_text())
    assert str(chart["appVersion"]) == version.group(1)
    script = (ROOT / "ci" / "e2e-setup.sh").read_text()
    assert "hooks/pyproject.toml" in script.split("\nMLFLOW_IMAGE=")[0], "the images' tag is not the version"
    dry = subprocess.run(
        ["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert dry.returncode == 0, dry.stderr
    for name in ("mlflow", "jobs", "serving"):
        assert re.search(rf"\b{name}\b", dry.stdout), f"`make images` does not build {name}"


# --- staging and prod -------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_overlay_changes_only_what_the_cluster_lacks(env: str) -> None:
    overlay = yaml.safe_load((ROOT / "ci" / "overlays" / f"{env}.yaml").read_text())
    leaves = _leaves(overlay)
    assert leaves
    unexpected = [leaf for leaf in leaves if not any(re.fullmatch(a, leaf) for a in ALLOWED)]
    assert not unexpected, f"ci/overlays/{env}.yaml changes {unexpected}"


@pytest.mark.parametrize("env", ENVS)
def test_the_environment_renders_on_the_local_cluster(env: str) -> None:
    docs = env_render(env)
    images = {c["image"] for d in docs for c in _containers(d) if "image" in c}
    assert images and not any("registry.example.com" in i for i in images), images
    envs = _env(_training_job(docs))
    assert envs["HOUSING_DVC_REMOTE_URL"] == f"s3://housing-mlops-{env}/dvc"
    assert f"http://minio.housing-{env}:9000" in envs.values()
    (pvc,) = [t for d in docs if d["kind"] == "StatefulSet" for t in d["spec"]["volumeClaimTemplates"]]
    assert "storageClassName" not in pvc["spec"], "gp3 does not exist here: the default class"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def _secret_refs(docs: list[dict]) -> dict[str, set[str]]:
    """Secret name -> the keys the release's pods read from it (env valueFrom; "<volume>" for a mounted one)."""
    refs: dict[str, set[str]] = {}
    for d in docs:
        for volume in _pod_spec(d).get("volumes", []):
            if "secret" in volume:
                refs.setdefault(volume["secret"]["secretName"], set()).add("<volume>")
        for c in _containers(d):
            for e in c.get("env", []):
                if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                    refs.setdefault(ref["name"], set()).add(ref["key"])
            assert not any("secretRef" in f for f in c.get("envFrom", [])), "envFrom: keys unchecked"
    return refs


def test_prod_keeps_what_the_e2e_tests_there() -> None:
    """Prod's own NetworkPolicies, PDBs and replicas survive the overlay; the Secrets it needs from outside are
    exactly those the e2e creates: values/prod.yaml's existingSecrets (tests/cluster/environments.py reads the
    names there) with the keys it writes, and the S3 keys of every namespace (lib/deployed.py)."""
    docs = env_render("prod")
    kinds = [d["kind"] for d in docs]
    assert kinds.count("NetworkPolicy") >= 3
    assert kinds.count("PodDisruptionBudget") == 2
    (mlflow,) = _component(docs, "Deployment", "mlflow")
    assert mlflow["spec"]["replicas"] == 2
    prod = yaml.safe_load((ROOT / "values" / "prod.yaml").read_text())["global"]
    auth, db = prod["mlflow"]["auth"]["existingSecret"], prod["database"]["existingSecret"]
    made_by_chart = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    needed = {name: keys for name, keys in _secret_refs(docs).items() if name not in made_by_chart}
    s3_secret = constant(CLUSTER_TESTS / "lib" / "setup.py", "S3_SECRET")
    assert needed == {
        auth: {"username", "password"},
        db: {"password"},
        s3_secret: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    }
    environments = (CLUSTER_TESTS / "environments.py").read_text()
    assert '["mlflow"]["auth"]["existingSecret"]' in environments
    assert '["database"]["existingSecret"]' in environments
    assert re.search(r'\(auth_secret, \{"username": \w+, "password": \w+\}\)', environments)
    assert re.search(r'\(db_secret, \{"password": \w+\}\)', environments)


def test_overlays_exist_for_every_environment_file() -> None:
    envs = {p.stem for p in (ROOT / "values").glob("*.yaml")} - {"kind", "local"}
    assert envs == set(ENVS), "every values/<env>.yaml is installed by the e2e (ci/overlays/<env>.yaml)"
    assert {p.stem for p in (ROOT / "ci" / "overlays").glob("*.yaml")} == set(ENVS)
