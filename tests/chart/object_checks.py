"""Checks across the rendered objects: kube-linter's default checks that neither checkov nor kube-score makes.

kube-linter (golang.stackrox.io/kube-linter) is not served by the Go module proxy here, so it cannot be pinned
and run (tests/chart/test_scanners.py runs checkov and kube-score). Its default checks are covered as follows:

- by checkov: docker-sock (CKV_K8S_27), drop-net-raw-capability (28), host-ipc (3), host-network (19),
  host-pid (17), latest-tag (14), no-read-only-root-fs (22), privilege-escalation-container (20),
  privileged-container (16), run-as-non-root (23), unset-cpu-requirements (10, 11: no CPU limits is a skip
  with its reason in the chart), unset-memory-requirements (12, 13);
- by tests/chart/test_security.py: env-var-secret (no secret value anywhere but in a Secret);
- by kube-score: dangling-service (service-targets-pod), no-anti-affinity (deployment-has-host-podantiaffinity);
- by kubernetes-validate (tests/chart/test_validate.py): no-extensions-v1beta (removed APIs do not validate);
- here, by name: deprecated-service-account-field, duplicate-env-var, invalid-target-ports, liveness-port,
  readiness-port, startup-port, mismatching-selector, non-existent-service-account, pdb-max-unavailable,
  pdb-min-available, pdb-unhealthy-pod-eviction-policy, sensitive-host-mounts, ssh-port, unsafe-sysctls;
  and the non-default dangling-networkpolicy, dangling-ingress and dangling-servicemonitor, with
  dangling-pdb: a selector that matches no pod of the release protects nothing.

The predictor pods and Service are KServe's, made from the InferenceService and its ServingRuntime: they are
modelled here as KServe 0.16 makes them (labels `serving.kserve.io/inferenceservice: <name>` and
`component: predictor`, the runtime's containers and ports, a Service `<name>-predictor`), which the e2e checks
on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# IANA_SVC_NAME, as the API server validates port names: at most 15 lowercase letters, digits and '-', with a
# letter, no leading, trailing or doubled '-'
PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
# the namespaced sysctls Kubernetes calls safe (allowed without the kubelet's --allowed-unsafe-sysctls)
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
PROBES = {
    "livenessProbe": "liveness-port",
    "readinessProbe": "readiness-port",
    "startupProbe": "startup-port",
}


@dataclass(frozen=True)
class Pod:
    """A pod the release makes, directly or through a controller (or KServe)."""

    owner: str  # Kind/name of the rendered object
    labels: dict[str, str]
    spec: dict

    @property
    def containers(self) -> list[dict]:
        return self.spec.get("initContainers", []) + self.spec.get("containers", [])


@dataclass(frozen=True)
class Finding:
    check: str  # kube-linter's check name
    obj: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.check}: {self.message}"


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pods(objects: Iterable[dict]) -> list[Pod]:
    """Every pod template of the release, with the labels its pods carry."""
    out = []
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec") or {}
        if kind == "Pod":
            out.append(Pod(ident(obj), obj["metadata"].get("labels") or {}, spec))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = spec["template"]
            out.append(Pod(ident(obj), template["metadata"].get("labels") or {}, template["spec"]))
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
            out.append(Pod(ident(obj), template["metadata"].get("labels") or {}, template["spec"]))
    return out + predictor_pods(objects)


def runtime_of(objects: Iterable[dict], isvc: dict) -> dict | None:
    wanted = isvc["spec"]["predictor"].get("model", {}).get("runtime")
    runtimes = [o for o in objects if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")]
    return next((r for r in runtimes if r["metadata"]["name"] == wanted), None)


def predictor_pods(objects: Iterable[dict]) -> list[Pod]:
    """KServe's predictor pod per InferenceService: its labels, the runtime's containers, the predictor spec."""
    objects = list(objects)
    out = []
    for isvc in (o for o in objects if o["kind"] == "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        labels = {
            **(isvc["metadata"].get("labels") or {}),
            **(predictor.get("labels") or {}),
            "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
            "component": "predictor",
        }
        runtime = runtime_of(objects, isvc)
        containers = runtime["spec"]["containers"] if runtime else []
        spec = {k: v for k, v in predictor.items() if k not in ("model", "labels", "annotations")}
        out.append(Pod(ident(isvc), labels, {**spec, "containers": containers}))
    return out


def services(objects: Iterable[dict]) -> list[dict]:
    """The rendered Services and KServe's predictor Service per InferenceService (Standard mode)."""
    objects = list(objects)
    out = [o for o in objects if o["kind"] == "Service"]
    for isvc in (o for o in objects if o["kind"] == "InferenceService"):
        name = isvc["metadata"]["name"]
        runtime = runtime_of(objects, isvc)
        ports = [p for c in (runtime["spec"]["containers"] if runtime else []) for p in c.get("ports", [])]
        out.append(
            {
                "kind": "Service",
                "metadata": {
                    "name": f"{name}-predictor",
                    "labels": {"serving.kserve.io/inferenceservice": name, "component": "predictor"},
                },
                "spec": {
                    "selector": {"serving.kserve.io/inferenceservice": name, "component": "predictor"},
                    "ports": [{"name": p["name"], "targetPort": p["name"]} for p in ports if p.get("name")],
                },
            }
        )
    return out


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against a label set; an empty selector selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_ports(pod: Pod) -> list[dict]:
    return [p for c in pod.spec.get("containers", []) for p in c.get("ports", [])]


def check_pods(objects: list[dict], all_pods: list[Pod]) -> Iterator[Finding]:
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    for pod in all_pods:
        spec = pod.spec
        if "serviceAccount" in spec:
            yield Finding(
                "deprecated-service-account-field", pod.owner, "serviceAccount: use serviceAccountName"
            )
        account = spec.get("serviceAccountName")
        if account and account != "default" and account not in accounts:
            yield Finding(
                "non-existent-service-account", pod.owner, f"ServiceAccount {account} is not in the release"
            )
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume:
                yield Finding(
                    "sensitive-host-mounts", pod.owner, f"volume {volume['name']} mounts a host path"
                )
        for sysctl in (spec.get("securityContext") or {}).get("sysctls") or []:
            if sysctl["name"] not in SAFE_SYSCTLS:
                yield Finding("unsafe-sysctls", pod.owner, f"sysctl {sysctl['name']} is not a safe one")
        for container in pod.containers:
            where = f"{pod.owner}/{container['name']}"
            names = [e["name"] for e in container.get("env") or []]
            for name in sorted({n for n in names if names.count(n) > 1}):
                yield Finding("duplicate-env-var", where, f"env {name} is set {names.count(name)} times")
            ports = container.get("ports") or []
            for port in ports:
                if port.get("containerPort") == 22:
                    yield Finding("ssh-port", where, "exposes port 22")
                if "name" in port and not PORT_NAME.match(port["name"]):
                    yield Finding(
                        "invalid-target-ports", where, f"port name {port['name']!r} is no IANA name"
                    )
            for field, check in PROBES.items():
                yield from probe_port(check, where, container.get(field), ports)


def probe_port(check: str, where: str, probe: dict | None, ports: list[dict]) -> Iterator[Finding]:
    """A probe's port must be one the container declares (by name, or by number where it declares ports)."""
    if not probe:
        return
    action = next((probe[a] for a in ("httpGet", "tcpSocket", "grpc") if a in probe), None)
    if action is None or "port" not in action:
        return
    port = action["port"]
    if isinstance(port, str):
        if port not in {p.get("name") for p in ports}:
            yield Finding(check, where, f"probe port {port!r} is not a port name of the container")
    elif ports and port not in {p["containerPort"] for p in ports}:
        yield Finding(check, where, f"probe port {port} is not a containerPort")


def check_controllers(objects: list[dict]) -> Iterator[Finding]:
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            continue
        labels = obj["spec"]["template"]["metadata"].get("labels") or {}
        if not selects(obj["spec"].get("selector"), labels):
            yield Finding("mismatching-selector", ident(obj), "the selector does not match the pod template")


def check_services(all_services: list[dict], all_pods: list[Pod]) -> Iterator[Finding]:
    for service in all_services:
        selector = service["spec"].get("selector")
        if not selector:
            continue  # endpoints managed elsewhere
        matched = [p for p in all_pods if selects({"matchLabels": selector}, p.labels)]
        if not matched:
            continue  # kube-score's service-targets-pod reports it
        names = {p.get("name") for pod in matched for p in container_ports(pod)}
        numbers = {p.get("containerPort") for pod in matched for p in container_ports(pod)}
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str) and target not in names:
                yield Finding(
                    "invalid-target-ports", ident(service), f"targetPort {target!r} names no port of its pods"
                )
            if isinstance(target, int) and numbers and target not in numbers:
                yield Finding(
                    "invalid-target-ports", ident(service), f"targetPort {target} is no containerPort"
                )


def check_selections(objects: list[dict], all_services: list[dict], all_pods: list[Pod]) -> Iterator[Finding]:
    replicas = replica_counts(objects)
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec") or {}
        if kind == "NetworkPolicy":
            if not any(selects(spec.get("podSelector"), p.labels) for p in all_pods):
                yield Finding("dangling-networkpolicy", ident(obj), "its podSelector matches no pod")
        elif kind == "PodDisruptionBudget":
            yield from check_pdb(obj, all_pods, replicas)
        elif kind == "Ingress":
            yield from check_ingress(obj, all_services)
        elif kind == "ServiceMonitor":
            ports = [
                p.get("name")
                for s in all_services
                if selects(spec.get("selector"), s["metadata"].get("labels") or {})
                for p in s["spec"].get("ports") or []
            ]
            if not ports:
                yield Finding("dangling-servicemonitor", ident(obj), "its selector matches no Service")
            for endpoint in spec.get("endpoints") or []:
                if ports and endpoint.get("port") and endpoint["port"] not in ports:
                    yield Finding(
                        "dangling-servicemonitor",
                        ident(obj),
                        f"endpoint port {endpoint['port']!r} is no port of the Services it selects",
                    )


def replica_counts(objects: list[dict]) -> dict[str, int]:
    """Replicas of each pod owner (an InferenceService's predictor: its minReplicas)."""
    out = {}
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet"):
            out[ident(obj)] = int(spec.get("replicas", 1))
        elif obj["kind"] == "InferenceService":
            out[ident(obj)] = int(spec["predictor"].get("minReplicas", 1))
    return out


def check_pdb(pdb: dict, all_pods: list[Pod], replicas: dict[str, int]) -> Iterator[Finding]:
    spec, name = pdb["spec"], ident(pdb)
    matched = [p for p in all_pods if selects(spec.get("selector"), p.labels)]
    if not matched:
        yield Finding("dangling-pdb", name, "its selector matches no pod")
    if str(spec.get("maxUnavailable", "")) in ("0", "0%"):
        yield Finding("pdb-max-unavailable", name, "maxUnavailable 0 blocks every voluntary eviction")
    min_available = spec.get("minAvailable")
    if isinstance(min_available, str) and min_available.endswith("%"):
        if int(min_available[:-1]) >= 100:
            yield Finding("pdb-min-available", name, "minAvailable 100% blocks every voluntary eviction")
    elif min_available is not None:
        for pod in matched:
            count = replicas.get(pod.owner)
            if count is not None and int(min_available) >= count:
                yield Finding(
                    "pdb-min-available",
                    name,
                    f"minAvailable {min_available} with {count} replicas of {pod.owner} blocks node drains",
                )
    if spec.get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
        yield Finding(
            "pdb-unhealthy-pod-eviction-policy",
            name,
            "unhealthyPodEvictionPolicy is not AlwaysAllow: a crash-looping pod would block node drains",
        )


def check_ingress(ingress: dict, all_services: list[dict]) -> Iterator[Finding]:
    by_name = {s["metadata"]["name"]: s for s in all_services}
    spec = ingress["spec"]
    backends = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    for rule in spec.get("rules") or []:
        backends += [path["backend"] for path in (rule.get("http") or {}).get("paths") or []]
    for backend in backends:
        ref = backend.get("service")
        if not ref:
            continue
        service = by_name.get(ref["name"])
        if service is None:
            yield Finding(
                "dangling-ingress", ident(ingress), f"backend Service {ref['name']} is not in the release"
            )
            continue
        port = ref.get("port") or {}
        known = {(p.get("name"), p.get("port")) for p in service["spec"].get("ports") or []}
        if "name" in port and port["name"] not in {n for n, _ in known}:
            yield Finding(
                "dangling-ingress", ident(ingress), f"Service {ref['name']} has no port {port['name']!r}"
            )
        if "number" in port and port["number"] not in {n for _, n in known}:
            yield Finding(
                "dangling-ingress", ident(ingress), f"Service {ref['name']} has no port {port['number']}"
            )


def lint(objects: Iterable[dict]) -> list[Finding]:
    """Every finding over one rendered release."""
    objects = [o for o in objects if o]
    all_pods, all_services = pods(objects), services(objects)
    return [
        *check_pods(objects, all_pods),
        *check_controllers(objects),
        *check_services(all_services, all_pods),
        *check_selections(objects, all_services, all_pods),
    ]
