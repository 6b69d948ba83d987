"""values/staging.yaml (Helm 3) and values/prod.yaml (Pod Security restricted, MLflow auth, NetworkPolicies
probed both ways, the published chart and images by digest), then both side by side and uninstalled."""

from __future__ import annotations

import pytest
from housing_mlops.kube import FIELD_MANAGER

from .environments import (
    PROD_NS,
    STAGING_NS,
    Prod,
    Staging,
    StagingMoves,
    Tampered,
    env_values,
    uninstall_keeping_volume,
)
from .lib.deployed import selector
from .lib.kube import ClusterStorageContainer
from .lib.pods import finish_pod, probe_command, start_pod
from .lib.setup import phase
from .main_release import RELEASE

INTEGRITY = 7  # housing_mlops.errors.IntegrityError

pytestmark = pytest.mark.cluster


def bucket(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


def test_staging_failed_install_fails_fast_naming_the_training(staging: Staging) -> None:
    assert not staging.failed_install.ok, "an install whose training fails fails"
    assert "the training of identity" in staging.failed_hook_log and "failed: " in staging.failed_hook_log, (
        f"the promotion hook named the failed training: {staging.failed_hook_log}"
    )


def test_staging_converges_and_serves_from_its_bucket(staging: Staging) -> None:
    assert staging.test_after_converge.ok, "helm test (Helm 3) passes after `upgrade --install` converged"
    assert staging.served.version == staging.alias
    assert bucket(staging.artifact_uri) == env_values("staging")["global"]["s3"]["bucket"]


def test_staging_reinstall_finds_its_history(staging: Staging) -> None:
    assert any(o.startswith("persistentvolumeclaim/") for o in staging.left_after_uninstall)
    assert len(staging.left_after_uninstall) <= 3, (
        f"only the volume and its password: {staging.left_after_uninstall}"
    )
    assert staging.reinstalled_versions == staging.versions, (
        "MLflow came back with its history, nothing retrained"
    )
    assert staging.reinstalled_alias == staging.alias, "the same champion serves"
    assert staging.reinstalled.version == staging.served.version
    assert staging.test_after_reinstall.ok


def test_staging_helm3_upgrade_and_rollback_leave_the_pin_to_the_lifecycle(
    staging_moves: StagingMoves,
) -> None:
    """Helm 3's three-way merge, like Helm 4's server-side apply in the main release: a values-only upgrade that
    recreates the predictor pods keeps the person's choice (alias, pin, every new pod); a rollback restores what
    the target revision served for *this* install, not what the first install recorded under the same number."""
    m = staging_moves
    assert m.upgraded.ok and "conflict" not in (m.upgraded.stdout + m.upgraded.stderr).lower()
    assert m.alias_after_upgrade == m.registered, "the values-only upgrade left the person's alias alone"
    assert m.after_upgrade.version == m.registered, "the recreated predictor pods fetched the pinned version"
    assert m.recorded_by_this_install == m.registered, "the upgrade's hook recorded what serves"
    assert m.recorded_by_first_install not in (None, m.registered), (
        f"the first install recorded revision {m.upgraded_revision} too, another version: "
        f"{m.recorded_by_first_install} (else the rollback below proves nothing)"
    )
    assert m.rolled_back.ok and "conflict" not in (m.rolled_back.stdout + m.rolled_back.stderr).lower()
    assert m.alias_after_rollback == m.registered != m.moved_back_to, (
        f"helm rollback {m.upgraded_revision} restored v{m.alias_after_rollback}: this install recorded "
        f"v{m.recorded_by_this_install}, the first v{m.recorded_by_first_install}"
    )
    assert m.after_rollback.version == m.registered, "and the predictor serves it"
    assert m.pin_managers == [FIELD_MANAGER], (
        f"the pin annotation's one writer is the reconciler: {m.pin_managers}"
    )


def test_a_model_file_changed_in_s3_is_refused_by_the_next_pod_while_the_old_one_serves(
    tampered: Tampered,
) -> None:
    """Issue 24: the storage initializer checks every file against the sha256 the training recorded."""
    t = tampered
    assert t.exit_codes and set(t.exit_codes) == {INTEGRITY}, (
        f"the storage initializer exited 7: {t.exit_codes}"
    )
    file = t.key.rsplit("/", 1)[-1]
    assert "refusing version" in t.log and file in t.log and "changed after registration" in t.log, (
        f"its log names the file: {t.log[-1500:]}"
    )
    assert not t.ready_while_refused, f"{t.refused_pod} never got Ready"
    assert t.answers == {str(t.version): 20}, f"the old pod kept answering with v{t.version}: {t.answers}"
    assert t.old_pods_after == t.old_pods, f"the old pods were never restarted or removed: {t.old_pods_after}"
    assert t.recovered.version == t.version and set(t.recovered.pods).isdisjoint(t.old_pods), (
        "with the file restored, a new pod verifies it and serves"
    )


def test_prod_refuses_privileged_pods(prod: Prod) -> None:
    assert prod.privileged.startswith("refused: 403"), f"Pod Security restricted: {prod.privileged}"


def test_prod_installs_and_tests(prod: Prod) -> None:
    assert prod.test.ok
    assert prod.served.version == prod.alias
    assert bucket(prod.artifact_uri) == env_values("prod")["global"]["s3"]["bucket"]


@pytest.mark.provider("local")
def test_prod_runs_the_published_images_by_digest(prod: Prod) -> None:
    """Every container of the release's pods asks for one of our images from the registry by digest, and the
    node runs (imageID) a digest publish.sh pushed. Not .status.image: containerd reports there the first name it
    knows the content by. The PostgreSQL stand-in is imported, never pulled."""
    d = prod.deployed
    published = {
        line.split()[2].rsplit("@", 1)[1]
        for line in (d.setup.publish_dir / "published.txt").read_text().splitlines()
        if line.startswith("image ")
    }
    assert published, "publish.sh recorded no image digests"
    asked: list[str] = []
    ran: list[tuple[str, str]] = []
    for labels in ({"app.kubernetes.io/instance": RELEASE}, d.predictor_labels()):
        for pod in d.kube.pods(d.ns, labels):
            asked += [c.image for c in (pod.spec.initContainers or []) + pod.spec.containers]
            statuses = (pod.status.initContainerStatuses or []) + (pod.status.containerStatuses or [])
            ran += [(s.image, s.imageID) for s in statuses]
    asked = [i for i in asked if "postgres-standin" not in i]
    ran = [(i, image_id) for i, image_id in ran if "postgres-standin" not in i]
    assert asked and ran, f"no container of {RELEASE} found in {d.ns}"
    for image in asked:
        assert image.startswith(f"{d.setup.registry_addr}/") and "@sha256:" in image, (
            f"{image}: not ours by digest"
        )
        assert image.rsplit("@", 1)[1] in published, f"{image}: not a digest publish.sh pushed"
    for image, image_id in ran:
        assert image_id.rsplit("@", 1)[-1] in published, (
            f"a container of {image} runs {image_id}: not published"
        )


def test_prod_network_policies_both_ways(prod: Prod, staging: Staging) -> None:
    """What the install and helm test showed allowed, now each boundary from the other side too."""
    d = prod.deployed
    kube = d.kube
    clients_ns, outside_ns = "housing-clients", "housing-outside"
    clients_labels = env_values("prod")["inference"]["networkPolicy"]["from"][0]["namespaceSelector"][
        "matchLabels"
    ]
    kube.ensure_namespace(clients_ns, clients_labels)
    kube.ensure_namespace(outside_ns)
    mlflow_policy = next(p for p in d.release.objects("NetworkPolicy", "mlflow"))
    mlflow_client = mlflow_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    training = d.training_selector
    tests = next(
        selector(h["metadata"]["labels"])
        for h in d.release.hooks(d.release.last_revision().revision)
        if h["kind"] == "Pod"
    )
    mlflow_svc, mlflow_port = d.mlflow_service
    mlflow_host = f"{mlflow_svc}.{d.ns}.svc.cluster.local"
    db = d.release.one("Service", "postgresql")
    db_host, db_port = f"{db['metadata']['name']}.{d.ns}.svc.cluster.local", db["spec"]["ports"][0]["port"]
    predictor = d.predictor_host()
    probes = [  # name, namespace, labels, host, port, want, what
        (
            "e2e-np-client-mlflow",
            d.ns,
            mlflow_client,
            mlflow_host,
            mlflow_port,
            "open",
            "an MLflow client reaches MLflow",
        ),
        (
            "e2e-np-client-db",
            d.ns,
            mlflow_client,
            db_host,
            db_port,
            "blocked",
            "only MLflow reaches PostgreSQL",
        ),
        (
            "e2e-np-other-mlflow",
            d.ns,
            {},
            mlflow_host,
            mlflow_port,
            "blocked",
            "an unlabelled pod does not reach MLflow",
        ),
        (
            "e2e-np-other-predictor",
            d.ns,
            {},
            predictor,
            80,
            "blocked",
            "an unlabelled pod does not reach the predictor",
        ),
        (
            "e2e-np-clients-predictor",
            clients_ns,
            {},
            predictor,
            80,
            "open",
            "a predictor-clients namespace reaches it",
        ),
        ("e2e-np-outside-predictor", outside_ns, {}, predictor, 80, "blocked", "another namespace does not"),
        (
            "e2e-np-clients-grpc",
            clients_ns,
            {},
            predictor,
            9000,
            "open",
            "a predictor-clients namespace reaches gRPC",
        ),
        (
            "e2e-np-outside-grpc",
            outside_ns,
            {},
            predictor,
            9000,
            "blocked",
            "another namespace does not reach gRPC",
        ),
        (
            "e2e-np-clients-metrics",
            clients_ns,
            {},
            predictor,
            8082,
            "blocked",
            "only inference.metrics.from scrapes",
        ),
        ("e2e-np-training-s3", d.ns, training, f"minio.{d.ns}", 9000, "open", "training reaches S3"),
        ("e2e-np-tests-s3", d.ns, tests, f"minio.{d.ns}", 9000, "blocked", "a test pod does not reach S3"),
    ]
    with phase("prod-network-policies"):
        for name, ns, labels, host, port, want, _ in probes:
            start_pod(
                kube,
                ns,
                name,
                d.setup.test_services_image,
                probe_command("tcp", host, str(port), "--want", want),
                labels=labels,
            )
        failures = []
        for name, ns, _, host, port, want, what in probes:
            result = finish_pod(kube, ns, name)
            state = (result.result or {}).get("state")
            if state != want:
                failures.append(
                    f"{what}: {host}:{port} {state} (wanted {want}): {result.result or result.logs}"
                )
        kube.kubectl("delete", "namespace", clients_ns, outside_ns, "--wait", "--timeout=180s")
    assert not failures, "\n".join(failures)


def test_side_by_side_each_serves_its_own_model(
    staging: Staging, staging_moves: StagingMoves, tampered: Tampered, prod: Prod
) -> None:
    """Two releases in one cluster, each with its own MLflow: one ClusterStorageContainer per release, each
    predictor fetches the version pinned on it from its own MLflow, staging still serves its own version; then both
    are uninstalled."""
    with phase("side-by-side"):
        names = [c.metadata.name for c in staging.deployed.kube.api.list(ClusterStorageContainer)]
        ours = [n for n in names if n.endswith(f"-{RELEASE}-mlflow")]
        uris, wanted = {}, {}
        for d in (staging.deployed, prod.deployed):
            service, port = d.mlflow_service
            uris[d.ns] = d.isvc().spec["predictor"]["model"]["storageUri"]
            wanted[d.ns] = f"mlflow://{service}.{d.ns}.svc.cluster.local:{port}/{d.registered_model}/pinned"
        again = staging.deployed.wait_serving()
        staging.deployed.infer("e2e-infer-staging-beside-prod")
        left = {
            STAGING_NS: uninstall_keeping_volume(staging.deployed),
            PROD_NS: uninstall_keeping_volume(prod.deployed),
        }
    assert sorted(ours) == sorted(f"{ns}-{RELEASE}-mlflow" for ns in (STAGING_NS, PROD_NS)), names
    assert uris == wanted, "each predictor fetches from its own MLflow"
    assert again.version == staging_moves.alias_after_rollback, "staging still serves its own version"
    for ns, objects in left.items():
        assert sum(o.startswith("persistentvolumeclaim/") for o in objects) == 1, f"{ns}: {objects}"
        assert all(
            o.startswith("persistentvolume") or o == f"secret/{RELEASE}-postgresql" for o in objects
        ), f"{ns}: {objects}"
