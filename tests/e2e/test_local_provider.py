"""The local cluster provider (ci/cluster/) and `ci/e2e.sh --provider local`, checked without a cluster.

The real run is `make e2e-local` (CI runs it after `make test`); these tests pin what it is made of: the phase
order, no registry in its path, pins in one file, the KServe manifest adaptation, the values overlay.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_e2e_script import PHASES, ROOT, SCRIPT, _commands, _main_run, _render, run_dry_run

CLUSTER = ROOT / "ci" / "cluster"
# The images are built before the cluster starts (it imports them) and published to a loopback registry; no
# cert-manager; the rest is shared.
LOCAL_PHASES = ["preflight", "images", "publish", "cluster", "kserve", "s3", *PHASES[PHASES.index("seed") :]]


@pytest.fixture(scope="module")
def local_dry_run(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return run_dry_run(tmp_path_factory, "--provider", "local")


def test_local_dry_run_walks_its_phases_in_order(local_dry_run: list[str]) -> None:
    phases = [m.group(1) for line in local_dry_run if (m := re.match(r"==> phase (\S+):", line))]
    assert phases == LOCAL_PHASES


def test_local_path_needs_no_registry(local_dry_run: list[str]) -> None:
    """No kind, no outside OCI chart, no pull: everything comes from the Go module proxy, PyPI or Debian; the
    only registry is the one the run starts on loopback (phase publish)."""
    commands = _commands(_main_run(local_dry_run))
    joined = "\n".join(commands)
    assert not re.search(r"^kind |oci://(?!127\.0\.0\.1:)|docker pull|cert-manager", joined, re.MULTILINE), (
        joined
    )
    assert "ci/cluster/cluster.sh up" in joined
    assert "ci/cluster/kserve.sh" in joined
    assert commands[-1] == "ci/cluster/cluster.sh down"
    install = next(c for c in commands if c.startswith("helm install housing "))
    assert "-f values/kind.yaml -f values/local.yaml" in install


def test_unknown_provider_is_refused() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--provider", "minikube", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown provider 'minikube'" in result.stderr


def test_pins_live_in_one_file() -> None:
    pins = dict(
        line.split("=", 1)
        for line in (CLUSTER / "pins.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
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
    ]


def test_kserve_manifests_adapt_the_chart(tmp_path: Path) -> None:
    sys.path.insert(0, str(CLUSTER))
    try:
        import kserve_manifests
    finally:
        sys.path.remove(str(CLUSTER))
    kept = kserve_manifests.adapt(_kserve_docs(), "Q0E=")
    assert [d["kind"] for d in kept] == [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Deployment",
    ]
    for doc in kept[:2]:
        assert doc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="
        assert "cert-manager.io/inject-ca-from" not in doc["metadata"].get("annotations", {})
    containers = kept[2]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["manager"]
    assert containers[0]["imagePullPolicy"] == "Never"
    with pytest.raises(ValueError, match="no Deployment kserve-controller-manager"):
        kserve_manifests.adapt(_kserve_docs()[:4], "Q0E=")


def test_kserve_manifests_cli_errors_name_the_problem(tmp_path: Path) -> None:
    import yaml

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
    docs = _render("values/local.yaml")
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
    docs = _render("values/prod.yaml", "ci/overlays/prod.yaml", "values/local.yaml")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"].get("egress")]
    assert len(policies) >= 5  # MLflow, training, promotion, predictor, test pods (PostgreSQL: no egress)
    for policy in policies:
        dns = policy["spec"]["egress"][0]
        assert dns["to"][0]["podSelector"]["matchLabels"] == deploy["spec"]["template"]["metadata"]["labels"]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == listens, policy["metadata"]["name"]


def test_local_prod_installs_the_signed_chart_by_digest(local_dry_run: list[str]) -> None:
    """publish (signed, verified) -> containerd trusts the loopback registry -> prod installs from oci:// with the
    digests publish.sh wrote, and checks what the pods run."""
    commands = _commands(_main_run(local_dry_run))

    def find(pattern: str) -> int:
        return next(i for i, c in enumerate(commands) if re.search(pattern, c))

    publish = find(r"^(timeout \S+ )?env COSIGN_PASSWORD= ci/publish\.sh ")
    verify = find(r"^(timeout \S+ )?ci/verify\.sh ")
    trust = find(r"^ci/cluster/cluster\.sh trust-registry 127\.0\.0\.1:\d+$")
    install = find(r"^helm install housing oci://127\.0\.0\.1:\d+/")
    assert publish < verify < trust < install
    assert "--images" in commands[publish] and "--plain-http" in commands[publish]
    line = commands[install]
    assert "/charts/housing-mlops --version " in line
    assert line.index("-f values/local.yaml") < line.index("/digests.yaml")
    assert "--set global.image.pullPolicy=IfNotPresent" in line
