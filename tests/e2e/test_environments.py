"""The e2e installs values/staging.yaml and values/prod.yaml through ci/overlays/<env>.yaml: the overlays may
change only what a throwaway cluster without AWS lacks, and the result must be what that environment is."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from .test_e2e_script import KSERVE_APIS, ROOT, TOOLS_BIN

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


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


@pytest.mark.parametrize("env", ENVS)
def test_overlay_changes_only_what_the_cluster_lacks(env: str) -> None:
    overlay = yaml.safe_load((ROOT / "ci" / "overlays" / f"{env}.yaml").read_text())
    leaves = _leaves(overlay)
    assert leaves
    unexpected = [leaf for leaf in leaves if not any(re.fullmatch(a, leaf) for a in ALLOWED)]
    assert not unexpected, f"ci/overlays/{env}.yaml changes {unexpected}"


def _render(env: str, namespace: str) -> list[dict]:
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    args = [str(helm), "template", "housing", "charts/housing-mlops", "-n", namespace]
    args += ["-f", f"values/{env}.yaml", "-f", f"ci/overlays/{env}.yaml", "-f", "values/local.yaml"]
    for api in KSERVE_APIS:
        args += ["--api-versions", api]
    env_vars = {**os.environ, "HELM_CACHE_HOME": str(ROOT / ".tools" / "helm-cache")}
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, env=env_vars, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("predictor") or spec
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


@pytest.mark.parametrize("env", ENVS)
def test_the_environment_renders_on_the_local_cluster(env: str) -> None:
    docs = _render(env, f"housing-{env}")
    images = {c["image"] for d in docs for c in _containers(d) if "image" in c}
    assert images and not any("registry.example.com" in i for i in images), images
    train = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].startswith("housing-train-"))
    envs = {e["name"]: e.get("value") for c in _containers(train) for e in c.get("env", [])}
    assert envs["HOUSING_DVC_REMOTE_URL"] == f"s3://housing-mlops-{env}/dvc"  # the e2e seeds exactly this
    assert f"http://minio.housing-{env}:9000" in envs.values()
    (pvc,) = [t for d in docs if d["kind"] == "StatefulSet" for t in d["spec"]["volumeClaimTemplates"]]
    assert "storageClassName" not in pvc["spec"], "gp3 does not exist here: the default class"
    assert pvc.get("spec", {}) and pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_prod_keeps_what_the_e2e_tests_there() -> None:
    docs = _render("prod", "housing-prod")
    kinds = [d["kind"] for d in docs]
    assert kinds.count("NetworkPolicy") >= 3
    assert kinds.count("PodDisruptionBudget") == 2
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "housing-mlflow")
    assert mlflow["spec"]["replicas"] == 2
    secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for d in docs
        for c in _containers(d)
        for e in c.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    script = (ROOT / "ci" / "e2e.sh").read_text()
    for name in ("housing-mlops-mlflow-auth", "housing-mlops-db"):
        assert name in secrets, secrets
        assert name in script, f"ci/e2e.sh does not create Secret {name}"


def test_the_buckets_the_environments_use_are_created() -> None:
    for path in (ROOT / "ci" / "cluster" / "s3.yaml", ROOT / "ci" / "kind" / "s3.yaml"):
        text = path.read_text()
        for env in ENVS:
            assert f"housing-mlops-{env}" in text, (
                f"{path.relative_to(ROOT)} does not create housing-mlops-{env}"
            )


def test_overlays_exist_for_every_environment_file() -> None:
    envs = {p.stem for p in (ROOT / "values").glob("*.yaml")} - {"kind", "local"}
    assert envs == set(ENVS), "every values/<env>.yaml is installed by the e2e (ci/overlays/<env>.yaml)"
    assert {p.stem for p in (ROOT / "ci" / "overlays").glob("*.yaml")} == set(ENVS)
