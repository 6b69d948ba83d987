"""The release's MLflow model registry, read (and, for the scenarios that act as a person would, written) over
its REST API through a port-forward: typed answers, no script in a pod, no scraped output."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import requests

from .kube import Kube


@dataclass(frozen=True, order=True)
class ModelVersion:
    version: int
    identity: str  # the training identity the release's Job tagged it with ("-" for a scheduled retrain)
    dataset_md5: str
    run_id: str


@dataclass(frozen=True)
class Registry:
    base: str  # http://127.0.0.1:PORT
    auth: tuple[str, str] | None
    model: str

    def _call(self, method: str, path: str, **kw: object) -> dict:
        response = requests.request(
            method,
            f"{self.base}/api/2.0/mlflow/{path}",
            auth=self.auth,
            timeout=30,
            **kw,  # type: ignore[arg-type]
        )
        if response.status_code != 200:
            raise AssertionError(
                f"MLflow {method} {path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def versions(self) -> list[ModelVersion]:
        """Every registered version of the model, oldest first."""
        found = self._call(
            "GET", "model-versions/search", params={"filter": f"name='{self.model}'", "max_results": 1000}
        ).get("model_versions", [])
        out = []
        for v in found:
            tags = {t["key"]: t["value"] for t in v.get("tags", [])}
            out.append(
                ModelVersion(
                    int(v["version"]), tags.get("identity", "-"), tags.get("dataset.md5", "-"), v["run_id"]
                )
            )
        return sorted(out)

    def alias(self, alias: str = "production") -> int:
        """The version ``alias`` points at."""
        answer = self._call("GET", "registered-models/alias", params={"name": self.model, "alias": alias})
        return int(answer["model_version"]["version"])

    def set_alias(self, version: int, alias: str = "production") -> None:
        self._call(
            "POST",
            "registered-models/alias",
            json={"name": self.model, "alias": alias, "version": str(version)},
        )

    def tags(self) -> dict[str, str]:
        answer = self._call("GET", "registered-models/get", params={"name": self.model})
        return {t["key"]: t["value"] for t in answer["registered_model"].get("tags", [])}

    def served_record(
        self, namespace: str, release: str, revision: int, install: str | None = None
    ) -> int | None:
        """What the promotion hook of ``revision`` recorded serving (lifecycle.record, keyed per install: of
        ``install``, else of the one install that recorded that revision)."""
        prefix, suffix = f"release.{namespace}.{release}.", f".served.{revision}"
        found = {
            k: int(v)
            for k, v in self.tags().items()
            if k.startswith(prefix)
            and k.endswith(suffix)
            and (install is None or k == f"{prefix}{install}{suffix}")
        }
        assert len(found) <= 1, f"more than one install recorded revision {revision}: {found}"
        return next(iter(found.values()), None)

    def register_copy(self, version: int) -> int:
        """Register ``version``'s model once more as a new version, as a person does from MLflow's UI (the same
        run and artifacts, none of our jobs' tags). Returns the new version."""
        got = self._call("GET", "model-versions/get", params={"name": self.model, "version": str(version)})[
            "model_version"
        ]
        body = {"name": self.model, "source": got["source"], "run_id": got.get("run_id", "")}
        # MLflow 3: a version of a logged model (source models:/<model id>) must name that model
        model_id = got.get("model_id") or (
            got["source"].removeprefix("models:/").split("/")[0]
            if got["source"].startswith("models:/")
            else ""
        )
        if model_id:
            body["model_id"] = model_id
        return int(self._call("POST", "model-versions/create", json=body)["model_version"]["version"])

    def delete_version(self, version: int) -> None:
        self._call("DELETE", "model-versions/delete", json={"name": self.model, "version": str(version)})

    def download_uri(self, version: int) -> str:
        answer = self._call(
            "GET", "model-versions/get-download-uri", params={"name": self.model, "version": version}
        )
        return answer["artifact_uri"]


@contextlib.contextmanager
def open_registry(
    kube: Kube,
    namespace: str,
    service: str,
    port: int,
    model: str,
    auth: tuple[str, str] | None = None,
) -> Iterator[Registry]:
    with kube.port_forward(namespace, f"service/{service}", port) as local:
        yield Registry(f"http://127.0.0.1:{local}", auth, model)  # the chart allows 127.0.0.1:*


def one_version_per_identity(versions: list[ModelVersion]) -> None:
    """Each training identity registered exactly one version (a Job that ran again reused it)."""
    seen: dict[str, int] = {}
    for v in versions:
        if v.identity == "-":
            continue
        assert v.identity not in seen, (
            f"identity {v.identity} registered v{seen[v.identity]} and v{v.version}"
        )
        seen[v.identity] = v.version
