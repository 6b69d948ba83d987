"""A release on the cluster, as the scenarios look at it: what it serves, what its registry holds, its training
Job. Every name comes from the release's own objects (`helm get manifest`) or from KServe's status."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlparse

from housing_mlops.kube import VERSION_ANNOTATION
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from .helm import Release
from .kube import E2E_LABELS, InferenceService, Kube
from .pods import PodResult, probe_command, run_pod
from .registry import Registry, open_registry
from .setup import S3_ACCESS_KEY, S3_HOST, S3_SECRET, S3_SECRET_KEY, Setup
from .wait import NotYet, wait_until

T_ISVC = 600
SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")


def prepare_namespace(kube: Kube, namespace: str, labels: dict[str, str] | None = None) -> None:
    """A fresh namespace with what every values file expects in it: the S3 store as Service minio:9000 and its
    keys in Secret minio-credentials (annotated for KServe's own storage initializer)."""
    kube.ensure_namespace(namespace, labels)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "minio",
                "namespace": namespace,
                "labels": E2E_LABELS,
            },
            "spec": {
                "type": "ExternalName",
                "externalName": S3_HOST,
                "ports": [{"name": "s3", "port": 9000}],
            },
        }
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": S3_SECRET,
                "namespace": namespace,
                "labels": E2E_LABELS,
                "annotations": {
                    "serving.kserve.io/s3-endpoint": f"minio.{namespace}:9000",
                    "serving.kserve.io/s3-usehttps": "0",
                },
            },
            "stringData": {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY},
        }
    )


def s3_env(namespace: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://minio.{namespace}:9000",
    }


def selector(labels: dict[str, str]) -> dict[str, str]:
    """The chart's selector labels out of an object's labels."""
    return {k: v for k, v in labels.items() if k in SELECTOR_KEYS}


@dataclass(frozen=True)
class Served:
    version: int  # the model version the InferenceService is annotated with (by the promotion/rollback hooks)
    pods: tuple[str, ...]  # the predictor pods that serve it


@dataclass
class Deployed:
    release: Release
    kube: Kube
    setup: Setup
    mlflow_auth: tuple[str, str] | None = None

    @property
    def ns(self) -> str:
        return self.release.namespace

    # --- names, from the release's objects (read once: the values that set them never change in a scenario, and
    # `helm get manifest` would otherwise run several times per poll of wait_serving) ------------------------------
    @cached_property
    def isvc_name(self) -> str:
        return self.release.one("InferenceService")["metadata"]["name"]

    @cached_property
    def registered_model(self) -> str:
        """The registered model's name in MLflow: the HOUSING_MODEL_NAME the chart gives its jobs."""
        names = {value for obj in self.release.manifest() for value in _env_values(obj, "HOUSING_MODEL_NAME")}
        assert len(names) == 1, f"the release's jobs name {len(names)} registered models: {names}"
        return names.pop()

    @cached_property
    def mlflow_service(self) -> tuple[str, int]:
        svc = self.release.one("Service", "mlflow")
        return svc["metadata"]["name"], int(svc["spec"]["ports"][0]["port"])

    def isvc(self) -> Any:
        return self.kube.api.get(InferenceService, self.isvc_name, namespace=self.ns)

    def predictor_url(self) -> str:
        url = (self.isvc().status or {}).get("address", {}).get("url")
        assert url, f"InferenceService {self.isvc_name} has no status.address.url"
        return url

    def predictor_host(self) -> str:
        return urlparse(self.predictor_url()).hostname or ""

    def predictor_labels(self) -> dict[str, str]:
        return {"serving.kserve.io/inferenceservice": self.isvc_name}

    def predictor_deployment(self) -> Deployment:
        found = list(
            self.kube.api.list(
                Deployment, namespace=self.ns, labels={**self.predictor_labels(), "component": "predictor"}
            )
        )
        assert len(found) == 1, f"expected one predictor Deployment, found {[d.metadata.name for d in found]}"
        return found[0]

    def predictor_service(self) -> Service:
        return self.kube.api.get(Service, self.predictor_host().split(".")[0], namespace=self.ns)

    @cached_property
    def training_configmap(self) -> str:
        """The ConfigMap naming the training Job of the revision Helm applied last (what the hooks read)."""
        maps = [c for c in self.release.objects("ConfigMap", "training") if "job" in (c.get("data") or {})]
        assert len(maps) == 1, "expected one training ConfigMap naming the Job"
        return maps[0]["metadata"]["name"]

    def predictor_endpoints(self) -> dict[str, bool]:
        """The pods behind the predictor's Service (its EndpointSlices), each with its `ready` condition."""
        slices = self.kube.api.list(
            EndpointSlice,
            namespace=self.ns,
            labels={"kubernetes.io/service-name": self.predictor_host().split(".")[0]},
        )
        return {
            e.targetRef.name: bool(e.conditions and e.conditions.ready)
            for s in slices
            for e in (s.endpoints or [])
            if e.targetRef is not None
        }

    def training_job(self) -> str:
        """The training Job of the revision Helm applied last (read live: each training identity has its own)."""
        live = self.kube.api.get(ConfigMap, self.training_configmap, namespace=self.ns)
        return (live.data or {})["job"]

    @cached_property
    def training_selector(self) -> dict[str, str]:
        job = self.release.one("Job", "training")
        return selector(job["spec"]["template"]["metadata"]["labels"])

    def training_pods(self) -> list[str]:
        return sorted(p.metadata.name for p in self.kube.pods(self.ns, self.training_selector))

    # --- what it serves ------------------------------------------------------------------------------------------
    def wait_serving(self, timeout: float = T_ISVC) -> Served:
        """The InferenceService is Ready, its predictor Deployment carries the annotations the spec asks for and has
        rolled out completely; returns the version the hooks annotated it with."""

        def ready() -> Served:
            isvc = self.isvc()
            conditions = {c["type"]: c["status"] for c in (isvc.status or {}).get("conditions", [])}
            if conditions.get("Ready") != "True":
                raise NotYet(f"InferenceService not Ready: {conditions}")
            want = isvc.spec["predictor"].get("annotations") or {}
            dep = self.predictor_deployment()
            have = dep.spec.template.metadata.annotations or {}
            missing = {k: v for k, v in want.items() if have.get(k) != v}
            if missing:
                raise NotYet(f"the predictor Deployment lacks {missing}")
            st, replicas = dep.status, dep.spec.replicas or 0
            if not st or (st.observedGeneration or 0) < (dep.metadata.generation or 0):
                raise NotYet("the predictor Deployment's new generation is not observed yet")
            if (st.updatedReplicas, st.readyReplicas, st.availableReplicas, st.replicas) != (replicas,) * 4:
                raise NotYet(f"rollout: {st.updatedReplicas}/{st.readyReplicas}/{st.replicas} of {replicas}")
            if VERSION_ANNOTATION not in want:
                raise AssertionError(
                    f"InferenceService has no {VERSION_ANNOTATION}: the reconciler never pinned it"
                )
            pods = self.kube.pods(self.ns, self.predictor_labels())
            running = tuple(sorted(p.metadata.name for p in pods if p.metadata.deletionTimestamp is None))
            if len(running) != replicas:
                raise NotYet(f"{len(running)} predictor pods, {replicas} wanted")
            # What clients reach: the predictor Service's endpoints are exactly these pods, all ready (a Deployment
            # counts a pod Ready before its Service drops the old ones; a request then hung on a gone pod).
            endpoints = self.predictor_endpoints()
            if endpoints != {pod: True for pod in running}:
                raise NotYet(f"the predictor Service's endpoints {endpoints} are not the pods {running}")
            version = int(want[VERSION_ANNOTATION])
            uri = isvc.spec["predictor"].get("model", {}).get("storageUri", "")
            if uri.startswith("mlflow://") and not uri.endswith(f"/{self.registered_model}/pinned"):
                raise AssertionError(f"InferenceService storageUri {uri!r}: its pods would not fetch the pin")
            # every serving pod was created with the pin (the storage initializer fetched what it names)
            stale = {p.metadata.name: (p.metadata.annotations or {}).get(VERSION_ANNOTATION) for p in pods
                     if p.metadata.name in running and (p.metadata.annotations or {}).get(VERSION_ANNOTATION) != str(version)}  # fmt: skip
            if stale:
                raise NotYet(f"predictor pods not carrying pin v{version}: {stale}")
            return Served(version, running)

        served = wait_until(
            ready, what=f"{self.ns}/{self.isvc_name} serves", timeout=timeout, interval=2, holds=2
        )
        print(f"    serving: {self.isvc_name} model version {served.version} on {', '.join(served.pods)}")
        return served

    def wait_serving_version(self, version: int, timeout: float = T_ISVC) -> Served:
        """Wait until ``version`` serves on every replica (the pin moved and rolled out)."""

        def pinned_and_served() -> Served:
            if self.pinned_version() != version:
                raise NotYet(f"pinned to v{self.pinned_version()}, not v{version}")
            return self.wait_serving(timeout=timeout)

        return wait_until(pinned_and_served, what=f"v{version} serves", timeout=timeout, interval=1)

    def pinned_version(self) -> int | None:
        """The version the InferenceService is pinned to (the reconciler's annotation), None before the first pin."""
        annotations = self.isvc().spec["predictor"].get("annotations") or {}
        return int(annotations[VERSION_ANNOTATION]) if VERSION_ANNOTATION in annotations else None

    def scale_reconciler(self, replicas: int) -> None:
        """Stop (0) or start (1) the release's reconciler, waiting until it has."""
        name = self.release.one("Deployment", "reconciler")["metadata"]["name"]
        self.kube.kubectl("scale", "deployment", name, "-n", self.ns, f"--replicas={replicas}")
        selector_labels = self.release.one("Deployment", "reconciler")["spec"]["selector"]["matchLabels"]

        def scaled() -> bool:
            pods = self.kube.pods(self.ns, selector_labels)
            if replicas == 0:
                return not pods
            ready = [
                p
                for p in pods
                if p.metadata.deletionTimestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
            ]
            return len(ready) == replicas

        wait_until(scaled, what=f"the reconciler at {replicas} ready replicas", timeout=180, interval=1)

    def pod_ready_seconds(self, pod: str) -> float:
        """How long the pod took from its creation to Ready."""
        p = self.kube.api.get(Pod, pod, namespace=self.ns)
        ready = next(c for c in p.status.conditions if c.type == "Ready" and c.status == "True")
        return (ready.lastTransitionTime - p.metadata.creationTimestamp).total_seconds()

    def infer(
        self, name: str, count: int = 1, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> PodResult:
        """V2 requests through the predictor's Service from a pod (new connection each): every answer 200 with a
        sane price; the result says which versions answered."""
        result = run_pod(
            self.kube,
            namespace or self.ns,
            name,
            self.setup.test_services_image,
            probe_command("v2", self.predictor_url(), "--model", self.isvc_name, "--count", str(count)),
            labels=labels,
        )
        assert result.exit_code == 0 and result.result, (
            f"{name}: V2 requests failed: {result.result or result.logs}"
        )
        return result

    @contextlib.contextmanager
    def registry(self) -> Iterator[Registry]:
        service, port = self.mlflow_service
        with open_registry(self.kube, self.ns, service, port, self.registered_model, self.mlflow_auth) as reg:
            yield reg

    def job_exit_codes(self, job: str) -> list[int]:
        pods = self.kube.pods(self.ns, {"batch.kubernetes.io/job-name": job})
        return [
            s.state.terminated.exitCode
            for p in pods
            for s in (p.status.containerStatuses or [])
            if s.state and s.state.terminated
        ]

    def job(self, name: str) -> Job:
        return self.kube.api.get(Job, name, namespace=self.ns)


def _env_values(node: Any, name: str) -> Iterator[str]:
    """Every value of env var ``name`` anywhere in an object (containers, init containers, CronJob templates)."""
    if isinstance(node, dict):
        if node.get("name") == name and isinstance(node.get("value"), str):
            yield node["value"]
        for child in node.values():
            yield from _env_values(child, name)
    elif isinstance(node, list):
        for child in node:
            yield from _env_values(child, name)
