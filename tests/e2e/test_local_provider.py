"""The local cluster provider (ci/cluster/) and `ci/e2e-setup.sh --provider local`, checked without a cluster.

The real run is `make e2e-local` (CI runs it after `make test`); these tests pin what it is made of: no outside
registry in its path, pins in one file, the KServe manifest adaptation, the values overlay, the signed publish.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_environments import KSERVE_APIS, ROOT, TOOLS_BIN, render
from .test_setup_script import _module_source

CLUSTER = ROOT / "ci" / "cluster"
SCRIPT = ROOT / "ci" / "e2e-setup.sh"


def local_up() -> str:
    """The local provider's `up` steps in ci/e2e-setup.sh (the branch the kind path's `else` closes)."""
    match = re.search(
        r"^if \[\[ \$PROVIDER == local \]\]; then\n  step preflight(.*?)^else\n  step preflight",
        SCRIPT.read_text(),
        re.MULTILINE | re.DOTALL,
    )
    assert match, "no local `up` branch in ci/e2e-setup.sh"
    return match.group(1)


def test_local_path_needs_no_registry() -> None:
    """No kind, no outside OCI chart, no pull: everything comes from the Go module proxy, PyPI or Debian; the
    only registry is the one `up` starts on loopback (step publish); the images are built here and imported."""
    steps = local_up()
    assert not re.search(
        r"\bkind\b|oci://|docker pull|cert-manager|CERT_MANAGER|KSERVE_(CRD_)?CHART", steps
    ), steps
    for needed in (
        '"$LOCAL_CLUSTER" up',
        "ci/cluster/kserve.sh",
        '"$LOCAL_CLUSTER" import',
        "ci/cluster/s3.yaml",
    ):
        assert needed in steps, needed
    s3 = [d for d in yaml.safe_load_all((CLUSTER / "s3.yaml").read_text()) if d]
    images = [
        c
        for d in s3
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images and all(c["image"].startswith("docker.io/housing-mlops/") for c in images), images
    assert {c.get("imagePullPolicy") for c in images} == {"Never"}


def test_local_publishes_signed_and_trusts_the_loopback_registry() -> None:
    """publish (cosign-signed, the images too) to the registry `up` started -> the cluster's containerd trusts it
    -> setup.env hands the address and digests.yaml's folder to the session (prod installs from oci://)."""
    steps = local_up()

    def at(pattern: str) -> int:
        match = re.search(pattern, steps)
        assert match, pattern
        return match.start()

    assert (
        at(r"\n  start_registry\n")
        < at(r"generate-key-pair")
        < at(r"ci/publish\.sh --registry \"\$REGISTRY_ADDR\" --plain-http --images\s*\\?\s*--key ")
        < at(r'"\$LOCAL_CLUSTER" up')
        < at(r'"\$LOCAL_CLUSTER" trust-registry "\$REGISTRY_ADDR"')
    )
    assert re.search(r"^REGISTRY_ADDR=\$REGISTRY_ADDR$", SCRIPT.read_text(), re.MULTILINE)
    assert re.search(r"^PUBLISH_DIR=\$PUBLISH_DIR$", SCRIPT.read_text(), re.MULTILINE)
    # what the scenarios read from that folder: cosign.pub (the key pair's prefix), what publish.sh wrote
    assert 'generate-key-pair --output-key-prefix "$PUBLISH_DIR/cosign"' in steps
    publish = (ROOT / "ci" / "publish.sh").read_text()
    assert "digests.yaml" in publish and "published.txt" in publish


def _pins() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (CLUSTER / "pins.env").read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_pins_live_in_one_file() -> None:
    pins = _pins()
    for key in (
        "KUBERNETES_VERSION",
        "ETCD_VERSION",
        "COREDNS_VERSION",
        "KSERVE_VERSION",
        "KUBE_ROUTER_VERSION",
    ):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", pins[key]), key
    # The wrapper modules require exactly the pinned versions.
    mods = {
        "k8s": ("k8s.io/kubernetes", "KUBERNETES_VERSION"),
        "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
        "coredns": ("github.com/coredns/coredns", "COREDNS_VERSION"),
        "kserve": ("github.com/kserve/kserve", "KSERVE_VERSION"),
        "kube-router": ("github.com/cloudnativelabs/kube-router/v2", "KUBE_ROUTER_VERSION"),
        "local-path": ("github.com/rancher/local-path-provisioner", "LOCAL_PATH_PROVISIONER_VERSION"),
        "helm3": ("helm.sh/helm/v3", "HELM3_VERSION"),
    }
    for mod, (path, key) in mods.items():
        gomod = (CLUSTER / "modules" / mod / "go.mod").read_text()
        assert re.search(
            rf"^\s*(require )?{re.escape(path)} {re.escape(pins[key])}\b", gomod, re.MULTILINE
        ), mod


def test_cluster_help_and_bad_command() -> None:
    ok = subprocess.run([str(CLUSTER / "cluster.sh"), "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "cluster.sh up" in ok.stdout
    bad = subprocess.run([str(CLUSTER / "cluster.sh"), "upp"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    unknown = subprocess.run(
        [str(CLUSTER / "build.sh"), "--print-bin", "kubeflow"], capture_output=True, text=True, check=False
    )
    assert unknown.returncode != 0 and "unknown component 'kubeflow'" in unknown.stderr


def _kserve_docs() -> list[dict]:
    webhook = {"name": "w", "clientConfig": {"service": {"name": "kserve-webhook-server-service"}}}
    return [
        {"kind": "Issuer", "metadata": {"name": "selfsigned-issuer"}},
        {"kind": "Certificate", "metadata": {"name": "serving-cert"}},
        {
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": "m",
                "annotations": {"cert-manager.io/inject-ca-from": "kserve/serving-cert"},
            },
            "webhooks": [dict(webhook)],
        },
        {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "v"}, "webhooks": [dict(webhook)]},
        {
            "kind": "Deployment",
            "metadata": {"name": "kserve-controller-manager"},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "manager", "image": "x"}, {"name": "kube-rbac-proxy"}]}
                }
            },
        },
        {"kind": "ClusterServingRuntime", "metadata": {"name": "kserve-sklearnserver"}},
        {"kind": "ClusterStorageContainer", "metadata": {"name": "default"}},
        _kserve_config(),
    ]


def _kserve_config(mode: str = "Standard", no_ingress: object = True) -> dict:
    deploy = json.dumps({"defaultDeploymentMode": mode})
    ingress = json.dumps({"disableIngressCreation": no_ingress})
    return {
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config"},
        "data": {"deploy": deploy, "ingress": ingress},
    }


def _kserve_manifests():
    sys.path.insert(0, str(CLUSTER))
    try:
        import kserve_manifests
    finally:
        sys.path.remove(str(CLUSTER))
    return kserve_manifests


def test_kserve_manifests_adapt_the_chart(tmp_path: Path) -> None:
    kserve_manifests = _kserve_manifests()
    kept = kserve_manifests.adapt(_kserve_docs(), "Q0E=")
    assert [d["kind"] for d in kept] == [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Deployment",
        "ConfigMap",
    ]
    for doc in kept[:2]:
        assert doc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="
        assert "cert-manager.io/inject-ca-from" not in doc["metadata"].get("annotations", {})
    containers = kept[2]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["manager"]
    assert containers[0]["imagePullPolicy"] == "Never"
    with pytest.raises(ValueError, match="no Deployment kserve-controller-manager"):
        kserve_manifests.adapt(_kserve_docs()[:4], "Q0E=")
    with pytest.raises(ValueError, match="no ConfigMap inferenceservice-config"):
        kserve_manifests.adapt(_kserve_docs()[:-1], "Q0E=")


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (_kserve_config(mode="Knative"), "defaultDeploymentMode 'Knative', not 'Standard'"),
        (_kserve_config(no_ingress=False), "disableIngressCreation False, not true"),
        ({"kind": "ConfigMap", "metadata": {"name": "inferenceservice-config"}, "data": {}}, "no readable"),
    ],
)
def test_kserve_manifests_refuse_a_config_our_values_did_not_make(config: dict, error: str) -> None:
    """A values key renamed upstream is ignored by Helm: the rendered config shows it."""
    with pytest.raises(ValueError, match=re.escape(error)):
        _kserve_manifests().adapt([*_kserve_docs()[:-1], config], "Q0E=")


def _pinned_kserve_charts(tmp_path: Path) -> Path:
    """KServe's Helm charts at the pinned version (kserve.sh installs them from the same module)."""
    return _module_source("github.com/kserve/kserve", _pins()["KSERVE_VERSION"], tmp_path) / "charts"


def test_kserve_manifests_adapt_the_pinned_chart(tmp_path: Path) -> None:
    """KServe's chart at the pinned version, rendered with kserve.sh's values, adapts to what kserve.sh applies."""
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    charts = _pinned_kserve_charts(tmp_path)
    script = (CLUSTER / "kserve.sh").read_text()
    (values,) = re.findall(r"^CHART_VALUES=\(\n(.*?)^\)", script, re.MULTILINE | re.DOTALL)
    args = [str(helm), "template", "kserve", str(charts / "kserve-resources"), "-n", "kserve"]
    for value in values.split():
        args += ["--set", value]
    args += ["--set", "kserve.controller.image=docker.io/housing-mlops/kserve-controller"]
    args += ["--set", "kserve.controller.tag=vTEST"]
    rendered = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert rendered.returncode == 0, rendered.stderr
    chart, ca = tmp_path / "rendered.yaml", tmp_path / "ca.crt"
    chart.write_text(rendered.stdout)
    ca.write_bytes(b"CA")
    result = subprocess.run(
        [sys.executable, str(CLUSTER / "kserve_manifests.py"), str(chart), str(ca)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kept = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in kept}
    assert not kinds & {"Issuer", "Certificate", "ClusterServingRuntime", "ClusterStorageContainer"}
    assert not [d for d in kept if d["apiVersion"].startswith("cert-manager.io/")]
    (controller,) = [d for d in kept if d["kind"] == "Deployment"]
    pod = controller["spec"]["template"]["spec"]
    assert [(c["name"], c["image"], c["imagePullPolicy"]) for c in pod["containers"]] == [
        ("manager", "docker.io/housing-mlops/kserve-controller:vTEST", "Never")
    ]
    # kserve.sh makes this Secret (self-signed CA) and waits for the webhooks on this Service
    (cert,) = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "cert"]
    assert cert == "kserve-webhook-server-cert"
    assert f"create secret generic {cert}" in script
    hooks = [h for d in kept if d["kind"].endswith("WebhookConfiguration") for h in d["webhooks"]]
    assert hooks and all(h["clientConfig"]["caBundle"] == base64.b64encode(b"CA").decode() for h in hooks)
    assert {h["clientConfig"]["service"]["name"] for h in hooks} == {"kserve-webhook-server-service"}
    assert "svc=kserve-webhook-server-service" in script
    # the InferenceService webhooks the chart's objects go through
    paths = {h["clientConfig"]["service"]["path"] for h in hooks}
    assert {
        "/mutate-serving-kserve-io-v1beta1-inferenceservice",
        "/validate-serving-kserve-io-v1beta1-inferenceservice",
        "/mutate-pods",
    } <= paths
    assert not any(d["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") for d in kept)


def test_kserve_crd_chart_serves_what_our_chart_uses(tmp_path: Path) -> None:
    """kserve.sh installs charts/kserve-crd as it is (the kind path: the same chart from ghcr.io): it has the
    three kinds our chart creates."""
    helm = TOOLS_BIN / "helm"
    if not helm.is_file():
        pytest.skip("helm not in .tools/bin (`make tools` installs it)")
    charts = _pinned_kserve_charts(tmp_path)
    args = [str(helm), "template", "kserve-crd", str(charts / "kserve-crd"), "-n", "kserve"]
    rendered = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert rendered.returncode == 0, rendered.stderr
    served = {
        f"{d['spec']['group']}/{v['name']}/{d['spec']['names']['kind']}"
        for d in yaml.safe_load_all(rendered.stdout)
        if d and d["kind"] == "CustomResourceDefinition"
        for v in d["spec"]["versions"]
        if v.get("served")
    }
    assert set(KSERVE_APIS) <= served


def test_kserve_manifests_cli_errors_name_the_problem(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(_kserve_docs()[:2]))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode("Q0E="))
    result = subprocess.run(
        [sys.executable, str(CLUSTER / "kserve_manifests.py"), str(rendered), str(ca)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no Deployment kserve-controller-manager" in result.stderr


def test_values_local_swaps_only_what_a_registry_would_give() -> None:
    docs = render("values/kind.yaml", "values/local.yaml")
    pg = next(d for d in docs if d["kind"] == "StatefulSet")
    container = pg["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/housing-mlops/postgres-standin:15"
    pods = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    policies = {
        c.get("imagePullPolicy")
        for d in pods
        for c in d["spec"]["template"]["spec"].get("containers", [])
        + d["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert policies == {"Never"}
    # The stand-in keeps the official image's user: the chart's securityContext is unchanged.
    assert pg["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 70


def test_values_local_allows_dns_on_the_port_coredns_listens_on() -> None:
    """Egress policies match the DNS pod after the kube-dns Service's NAT: the port is CoreDNS's containerPort."""
    addon = [d for d in yaml.safe_load_all((CLUSTER / "addons" / "coredns.yaml").read_text()) if d]
    deploy = next(d for d in addon if d["kind"] == "Deployment")
    listens = {
        (p["containerPort"], p["protocol"])
        for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert listens == {(1053, "UDP"), (1053, "TCP")}
    docs = render("values/prod.yaml", "ci/overlays/prod.yaml", "values/local.yaml", namespace="housing-prod")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"].get("egress")]
    assert len(policies) >= 5  # MLflow, training, promotion, predictor, test pods (PostgreSQL: no egress)
    for policy in policies:
        dns = policy["spec"]["egress"][0]
        assert dns["to"][0]["podSelector"]["matchLabels"] == deploy["spec"]["template"]["metadata"]["labels"]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == listens, policy["metadata"]["name"]
