"""Shipping through an OCI registry: ci/publish.sh and ci/verify.sh against a real CNCF distribution registry.

A loopback `registry serve` (the pinned .tools/bin/registry) stands in for the release registry. The chart is
published, pulled back and rendered; its cosign signatures (key-pair mode, offline: no Rekor) are checked to
pass with the release key and to fail for another key, a tampered chart pushed under the same tag and a
corrupted signature. Images go through the registry without Docker (crane builds them). docs/shipping.md.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, HELM, HELM_PLUGINS, ROOT, TOOLS, template_args

BIN = TOOLS / "bin"
REGISTRY_BIN, CRANE, COSIGN = BIN / "registry", BIN / "crane", BIN / "cosign"
PUBLISH, VERIFY = ROOT / "ci" / "publish.sh", ROOT / "ci" / "verify.sh"
KIND_VALUES = ROOT / "values" / "kind.yaml"
PASSWORD = "test-password"  # a throwaway key made in the test


def chart_meta() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Env:
    tmp: Path
    vars: dict[str, str]

    def run(self, *args: str | Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        result = subprocess.run(
            cmd, capture_output=True, text=True, env={**self.vars, **env}, check=False, timeout=300
        )
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def helm(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(HELM, *args, check=check)

    def crane(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(CRANE, *args, "--insecure", check=check)

    def cosign_verify(self, pub: Path, ref: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            COSIGN,
            "verify",
            "--key",
            pub,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry=true",
            ref,
            check=False,
        )

    def cosign_sign(self, key: Path, ref: str) -> None:
        self.run(
            COSIGN, "sign", "--key", key, "--tlog-upload=false", "--allow-http-registry=true", "--yes", ref
        )

    def key_pair(self, name: str) -> tuple[Path, Path]:
        where = self.tmp / name
        where.mkdir()
        result = subprocess.run(
            [str(COSIGN), "generate-key-pair"],
            cwd=where,
            capture_output=True,
            text=True,
            env=self.vars,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"cosign generate-key-pair failed:\n{result.stderr}{result.stdout}")
        return where / "cosign.key", where / "cosign.pub"


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    for tool in (HELM, REGISTRY_BIN, CRANE, COSIGN):
        if not tool.exists():
            pytest.fail(f"{tool} missing: run `make tools`")
    tmp = tmp_path_factory.mktemp("shipping")
    home = tmp / "home"
    for sub in ("docker", "helm-config", "helm-cache", "helm-data", "tuf"):
        (home / sub).mkdir(parents=True)
    variables = {
        **os.environ,
        "COSIGN_PASSWORD": PASSWORD,
        # no credentials or caches of the user's: empty docker/helm config, TUF cache in tmp
        "DOCKER_CONFIG": str(home / "docker"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_DATA_HOME": str(home / "helm-data"),
        "HELM_PLUGINS": str(HELM_PLUGINS),
        "TUF_ROOT": str(home / "tuf"),
    }
    return Env(tmp, variables)


@pytest.fixture(scope="session")
def registry(env: Env) -> Iterator[str]:
    """A loopback CNCF distribution registry (plain HTTP); yields HOST:PORT."""
    root = env.tmp / "registry"
    root.mkdir()
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log_path = root / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(REGISTRY_BIN), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"registry exited ({proc.returncode}); log: {log_path}\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"registry not answering GET /v2/ within 30 s; log: {log_path}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"registry log: {log_path}")


@pytest.fixture(scope="session")
def keys(env: Env) -> tuple[Path, Path]:
    return env.key_pair("release-key")


@dataclass(frozen=True)
class Release:
    registry: str
    out: Path
    ref: str  # <registry>/charts/housing-mlops
    digest: str
    stderr: str


def publish(env: Env, registry: str, key: Path, out: Path, *extra: str, **variables: str) -> Release:
    result = env.run(
        PUBLISH, "--registry", registry, "--plain-http", "--key", key, "--out", out, *extra, **variables
    )
    ref = f"{registry}/charts/housing-mlops"
    lines = (out / "published.txt").read_text().splitlines()
    chart = [line.split() for line in lines if line.startswith("chart ")]
    assert len(chart) == 1, lines
    assert chart[0][1] == f"{ref}:{chart_meta()['version']}"
    assert chart[0][2].startswith(f"{ref}@sha256:")
    return Release(registry, out, ref, chart[0][2].split("@", 1)[1], result.stderr)


@pytest.fixture(scope="session")
def release(env: Env, registry: str, keys: tuple[Path, Path]) -> Release:
    """The chart published (no images) under <registry>/rel."""
    return publish(env, f"{registry}/rel", keys[0], env.tmp / "dist")


def docs_of(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def mask_random(docs: list[dict], other: list[dict]) -> list[dict]:
    """Blank the Secret data that differs between two renders of the same chart (randAlphaNum passwords)."""
    masked = json.loads(json.dumps(docs))
    for doc, twin in zip(masked, other, strict=True):
        if doc.get("kind") == "Secret" and twin.get("kind") == "Secret":
            for key, value in (doc.get("data") or {}).items():
                if value != (twin.get("data") or {}).get(key):
                    doc["data"][key] = "<random>"
    return masked


# a. round trip ---------------------------------------------------------------------------------------------


def test_publish_round_trip(env: Env, release: Release) -> None:
    meta = chart_meta()
    oci = f"oci://{release.ref}"
    shown = yaml.safe_load(
        env.helm("show", "chart", oci, "--version", meta["version"], "--plain-http").stdout
    )
    assert (shown["name"], shown["version"], shown["appVersion"]) == (
        "housing-mlops",
        meta["version"],
        meta["appVersion"],
    )
    assert f"Digest: {release.digest}" in release.stderr

    pulled = env.tmp / "pulled"
    pulled.mkdir()
    env.helm("pull", oci, "--version", meta["version"], "--plain-http", "--destination", pulled)
    tgz = pulled / f"housing-mlops-{meta['version']}.tgz"
    with tarfile.open(tgz) as tar:
        assert "housing-mlops/Chart.yaml" in tar.getnames()
        assert "housing-mlops/values.schema.json" in tar.getnames()

    local_args = template_args(values=(KIND_VALUES,))
    assert local_args[2] == str(CHART)
    oci_args = [*local_args[:2], oci, "--version", meta["version"], "--plain-http", *local_args[3:]]
    local = docs_of(env.helm(*local_args).stdout)
    local_again = docs_of(env.helm(*local_args).stdout)
    remote = docs_of(env.helm(*oci_args).stdout)
    assert len(remote) == len(local) > 10
    assert mask_random(remote, local) == mask_random(local, local_again)


def test_digests_without_images(release: Release) -> None:
    text = (release.out / "digests.yaml").read_text()
    assert yaml.safe_load(text) == {"global": {"image": {"registry": release.registry}}}
    assert "without --images: no image digests" in text
    assert [line.split()[0] for line in (release.out / "published.txt").read_text().splitlines()] == ["chart"]


# b. signatures ---------------------------------------------------------------------------------------------


def test_verify_accepts_release_key(env: Env, release: Release, keys: tuple[Path, Path]) -> None:
    pub = keys[1]
    tag = f"{release.ref}:{chart_meta()['version']}"
    for ref in (tag, f"{release.ref}@{release.digest}"):
        result = env.cosign_verify(pub, ref)
        assert result.returncode == 0, result.stderr
        assert release.digest in result.stdout
    ok = env.run(VERIFY, "--registry", release.registry, "--key", pub, "--plain-http")
    assert ok.stdout.split() == [f"{release.ref}@{release.digest}"]
    published = env.run(
        VERIFY,
        "--registry",
        release.registry,
        "--key",
        pub,
        "--plain-http",
        "--published",
        release.out / "published.txt",
    )
    assert "OK" in published.stderr


def test_verify_rejects_other_key(env: Env, release: Release) -> None:
    _, other_pub = env.key_pair("other-key")
    assert env.cosign_verify(other_pub, f"{release.ref}@{release.digest}").returncode != 0
    result = env.run(VERIFY, "--registry", release.registry, "--key", other_pub, "--plain-http", check=False)
    assert result.returncode != 0
    assert "FAIL" in result.stderr and "signature verification failed" in result.stderr


def test_verify_rejects_tampered_chart_under_same_tag(
    env: Env, registry: str, keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    rel = publish(env, f"{registry}/tamper", key, env.tmp / "dist-tamper")
    version = chart_meta()["version"]
    tag = f"{rel.ref}:{version}"
    assert env.cosign_verify(pub, tag).returncode == 0

    copy = env.tmp / "tampered" / "housing-mlops"
    shutil.copytree(CHART, copy)
    values = copy / "values.yaml"
    values.write_text(values.read_text().replace("registry: docker.io", "registry: evil.example.com", 1))
    assert "evil.example.com" in values.read_text()
    env.helm("package", copy, "--destination", copy.parent)
    env.helm(
        "push",
        copy.parent / f"housing-mlops-{version}.tgz",
        f"oci://{registry}/tamper/charts",
        "--plain-http",
    )
    new_digest = env.crane("digest", tag).stdout.strip()
    assert new_digest != rel.digest

    assert env.cosign_verify(pub, tag).returncode != 0
    by_tag = env.run(VERIFY, "--registry", rel.registry, "--key", pub, "--plain-http", check=False)
    assert by_tag.returncode != 0 and new_digest in by_tag.stderr
    pinned = env.run(
        VERIFY, "--registry", rel.registry, "--key", pub, "--plain-http", "--published", rel.out / "published.txt",
        check=False,
    )  # fmt: skip
    assert pinned.returncode != 0 and f"not the published {rel.digest}" in pinned.stderr
    # the signed digest itself still verifies: the signature binds the content, not the tag
    assert env.cosign_verify(pub, f"{rel.ref}@{rel.digest}").returncode == 0


def test_verify_rejects_corrupted_signature(env: Env, registry: str, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    rel = publish(env, f"{registry}/corrupt", key, env.tmp / "dist-corrupt")
    sig_tag = f"{rel.ref}:{rel.digest.replace(':', '-')}.sig"
    manifest = json.loads(env.crane("manifest", sig_tag).stdout)
    annotation = "dev.cosignproject.cosign/signature"
    signature = manifest["layers"][0]["annotations"][annotation]
    flipped = ("B" if signature[10] == "A" else "A").join((signature[:10], signature[11:]))
    manifest["layers"][0]["annotations"][annotation] = flipped
    repo = rel.ref.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{registry}/v2/{repo}/manifests/{sig_tag.rsplit(':', 1)[1]}",
        data=json.dumps(manifest).encode(),
        method="PUT",
        headers={"Content-Type": manifest["mediaType"]},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
    assert env.cosign_verify(pub, f"{rel.ref}@{rel.digest}").returncode != 0


# c. images -------------------------------------------------------------------------------------------------


def layer_tar(path: Path, content: str) -> Path:
    data = content.encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc/housing-mlops-test")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return path


def test_image_signature_follows_content(env: Env, registry: str, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    tag = f"{registry}/housing-mlops/jobs:test"
    env.crane("append", "-f", layer_tar(env.tmp / "layer-a.tar", "a"), "-t", tag)
    digest = env.crane("digest", tag).stdout.strip()
    env.cosign_sign(key, f"{registry}/housing-mlops/jobs@{digest}")
    assert env.cosign_verify(pub, tag).returncode == 0
    published = env.tmp / "published-image.txt"
    published.write_text(f"image {tag} {registry}/housing-mlops/jobs@{digest}\n")
    verify = (VERIFY, "--registry", registry, "--key", pub, "--plain-http", "--published", published)
    env.run(*verify)

    env.crane("append", "-f", layer_tar(env.tmp / "layer-b.tar", "b"), "-t", tag)
    assert env.crane("digest", tag).stdout.strip() != digest
    assert env.cosign_verify(pub, tag).returncode != 0
    assert env.run(*verify, check=False).returncode != 0


FAKE_DOCKER = """#!/usr/bin/env bash
# docker stand-in for ci/publish.sh --images: pushes a tiny image made by crane under the pushed name
set -euo pipefail
case "$1" in
  image) [[ -z "${FAKE_DOCKER_MISSING:-}" || "$3" != *"$FAKE_DOCKER_MISSING"* ]] ;;
  tag) ;;
  push)
    dir="$(mktemp -d)"
    printf '%s' "$2" >"$dir/name"
    tar -C "$dir" -cf "$dir/layer.tar" name
    "$CRANE" append --insecure -f "$dir/layer.tar" -t "$2" >/dev/null
    rm -rf "$dir" ;;
  *) exit 3 ;;
esac
"""


@pytest.fixture(scope="session")
def fake_docker(env: Env) -> Path:
    path = env.tmp / "fake-docker"
    path.write_text(FAKE_DOCKER)
    path.chmod(0o755)
    return path


def test_publish_images_pins_digests(
    env: Env, registry: str, keys: tuple[Path, Path], fake_docker: Path
) -> None:
    key, pub = keys
    prefix = f"{registry}/img"
    out = env.tmp / "dist-images"
    publish(env, prefix, key, out, "--images", DOCKER=str(fake_docker), CRANE=str(CRANE))
    app = chart_meta()["appVersion"]
    images = {}
    for line in (out / "published.txt").read_text().splitlines():
        kind, tag_ref, digest_ref = line.split()
        if kind == "image":
            name = tag_ref.rsplit("/", 1)[1].split(":")[0]
            assert tag_ref == f"{prefix}/housing-mlops/{name}:{app}"
            images[name] = digest_ref.split("@")[1]
    assert sorted(images) == ["jobs", "mlflow", "serving"]
    assert len(set(images.values())) == 3

    pins = yaml.safe_load((out / "digests.yaml").read_text())
    assert pins == {
        "global": {"image": {"registry": prefix}},
        "mlflow": {"image": {"digest": images["mlflow"]}},
        "training": {"image": {"digest": images["jobs"]}},
        "promotion": {"image": {"digest": images["jobs"]}},
        "tests": {"image": {"digest": images["jobs"]}},
        "inference": {
            "image": {"digest": images["serving"]},
            "storageContainer": {"image": {"digest": images["jobs"]}},
            "reconciler": {"image": {"digest": images["jobs"]}},
        },
    }
    ok = env.run(
        VERIFY, "--registry", prefix, "--key", pub, "--plain-http", "--published", out / "published.txt"
    )
    assert ok.stderr.count("OK") == 4

    # the fragment renders: every housing-mlops image by registry + digest, none by tag
    rendered = env.helm(*template_args(values=(KIND_VALUES, out / "digests.yaml"))).stdout
    refs = [line.split("image:", 1)[1].strip() for line in rendered.splitlines() if "image:" in line]
    ours = {ref.strip("'\"") for ref in refs if "housing-mlops/" in ref}  # postgres is not ours
    assert ours == {f"{prefix}/housing-mlops/{name}@{d}" for name, d in images.items()}


def test_publish_names_missing_image(
    env: Env, registry: str, keys: tuple[Path, Path], fake_docker: Path
) -> None:
    result = env.run(
        PUBLISH, "--registry", f"{registry}/missing", "--plain-http", "--key", keys[0], "--images",
        "--out", env.tmp / "dist-missing", check=False, DOCKER=str(fake_docker), CRANE=str(CRANE),
        FAKE_DOCKER_MISSING="serving",
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        f"housing-mlops/serving:{chart_meta()['appVersion']} is not in the local Docker engine"
        in result.stderr
    )
    assert (
        env.crane("ls", f"{registry}/missing/charts/housing-mlops", check=False).returncode != 0
    )  # nothing pushed


# errors ----------------------------------------------------------------------------------------------------


def test_publish_missing_key(env: Env, registry: str) -> None:
    missing = env.tmp / "no-such.key"
    result = env.run(PUBLISH, "--registry", registry, "--plain-http", "--key", missing, check=False)
    assert result.returncode != 0
    assert f"cosign key file not found or unreadable: {missing}" in result.stderr


def test_publish_registry_not_answering(env: Env, keys: tuple[Path, Path]) -> None:
    port = free_port()  # nothing listens there
    result = env.run(
        PUBLISH, "--registry", f"127.0.0.1:{port}", "--plain-http", "--key", keys[0], "--out", env.tmp / "dist-down",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"registry http://127.0.0.1:{port}/v2/ is not answering" in result.stderr
    assert not (env.tmp / "dist-down" / "published.txt").exists()
