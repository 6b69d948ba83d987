"""What provisioning (ci/e2e-setup.sh up) left for the scenarios: read once, at the session's start."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WORKDIR = ROOT / ".local" / "e2e"
CHART = ROOT / "charts" / "housing-mlops"
S3_NAMESPACE = "housing-s3"  # ci/cluster/s3.yaml, ci/kind/s3.yaml
S3_HOST = f"s3.{S3_NAMESPACE}.svc.cluster.local"
# moto accepts any keys; values/kind.yaml, staging and prod (through ci/overlays/) expect them in this Secret
S3_SECRET = "minio-credentials"
S3_ACCESS_KEY = "e2e-access-key"
S3_SECRET_KEY = "e2e-secret-key"


@dataclass(frozen=True)
class Setup:
    provider: str
    kubeconfig: Path
    version: str
    mlflow_image: str
    jobs_image: str
    serving_image: str
    test_services_image: str
    helm: Path
    helm3: Path
    registry_addr: str  # local provider: the loopback OCI registry holding the signed chart and images
    publish_dir: Path
    cosign: Path

    @classmethod
    def load(cls, workdir: Path = WORKDIR) -> Setup:
        path = workdir / "setup.env"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: bring the cluster up first (make e2e-setup, or ci/e2e-setup.sh up)"
            )
        env = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        return cls(
            provider=env["PROVIDER"],
            kubeconfig=Path(env["KUBECONFIG"]),
            version=env["VERSION"],
            mlflow_image=env["MLFLOW_IMAGE"],
            jobs_image=env["JOBS_IMAGE"],
            serving_image=env["SERVING_IMAGE"],
            test_services_image=env["TEST_SERVICES_IMAGE"],
            helm=Path(env["HELM"]),
            helm3=Path(env["HELM3"]),
            registry_addr=env.get("REGISTRY_ADDR", ""),
            publish_dir=Path(env["PUBLISH_DIR"]),
            cosign=Path(env["COSIGN"]),
        )


class Timings:
    """Each phase's wall time, written to .local/e2e/timings.json (make bench's report reads it), with the
    provisioning steps ci/e2e-setup.sh recorded first."""

    def __init__(self, workdir: Path = WORKDIR) -> None:
        self.workdir = workdir
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0) + seconds, 1)

    def write(self, provider: str, result: str) -> None:
        setup: dict = {}
        with contextlib.suppress(OSError, ValueError):
            setup = json.loads((self.workdir / "setup-timings.json").read_text()).get("phases_s", {})
        phases = {**setup, **self.phases}
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "timings.json").write_text(
            json.dumps(
                {
                    "provider": provider,
                    "result": result,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "total_s": round(sum(setup.values()) + time.monotonic() - self.started),
                    "phases_s": phases,
                },
                indent=1,
            )
            + "\n"
        )


TIMINGS = Timings()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a phase into timings.json (under the names docs/cluster.md's phase table uses)."""
    print(f"\n==> phase {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.add(name, time.monotonic() - started)


@dataclass(frozen=True)
class Datasets:
    v2_md5: (
        str  # the second dataset version, pushed last to the main remote (a scheduled retrain trains on it)
    )
