#!/bin/sh
# Builder-stage helper shared by the Dockerfiles: a virtualenv at $VENV (/opt/venv) holding exactly the image's
# lock (images/<name>/requirements.lock, compiled with hashes by `make lock`), every downloaded file checked
# against the lock's hashes, byte-compiled (a read-only root filesystem cannot cache bytecode: without it every
# start recompiles, ~13 s more for mlflow), then checked: nothing off the lock, every requirement satisfied.
#   install-venv.sh LOCK
# The builder's own tools come from build.lock beside this script, hash-checked too: uv, packaging (for
# check_lock.py, which inspects $venv from outside) and setuptools (the only build backend an sdist in a lock
# may use: passed to uv as build constraints, so building from source downloads nothing unchecked).
# Environment: UV_VERSION (optional; must be build.lock's uv), PRUNE_PACKAGES (distributions to remove again:
# heavy optional dependencies an image never imports; the check then tolerates only those as missing).
# Needs the package index; leaves no cache behind. POSIX sh: the base may have no bash.
set -eu

lock=$1
venv=${VENV:-/opt/venv}
here=$(dirname "$0")

python3 -m venv /opt/uv
/opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check -q --require-hashes --only-binary :all: \
  -r "$here/build.lock"
uv=/opt/uv/bin/uv
if [ -n "${UV_VERSION:-}" ]; then
  case "$("$uv" --version) " in
    "uv $UV_VERSION "*) ;;
    *) echo "install-venv: build.lock has $("$uv" --version), UV_VERSION is $UV_VERSION: make lock" >&2; exit 1 ;;
  esac
fi
# Trust the image's CA store (a locally built base may add a proxy's CA); uv's built-in roots would not.
export UV_SYSTEM_CERTS=1 UV_NO_CACHE=1
"$uv" venv -q --python "$(command -v python3)" "$venv"

# sync: exactly what the lock lists, nothing else; --require-hashes: a requirement without a hash, or a file
# whose sha256 is not one the lock lists, fails the build (tests/images/test_locks.py shows both).
# shellcheck disable=SC2086 # word splitting of $PRUNE_PACKAGES is intended
{
  "$uv" pip sync --require-hashes --python "$venv/bin/python" -b "$here/build.lock" "$lock"
  if [ -n "${PRUNE_PACKAGES:-}" ]; then
    "$uv" pip uninstall --python "$venv/bin/python" $PRUNE_PACKAGES
  fi
}

# Test suites, C headers and Cython sources of the big scientific packages: never imported at run time.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for pkg in pandas numpy scipy sklearn matplotlib pyarrow; do
  [ -d "$site/$pkg" ] || continue
  find "$site/$pkg" -depth -type d \( -name tests -o -name include \) -exec rm -rf {} +
  find "$site/$pkg" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \) -delete
done

# Byte-compile what is left (after pruning: less to compile). A file that does not compile (a deliberate
# syntax sample in some package) is left to be compiled, or not, at import time, as pip would.
"$venv/bin/python" -m compileall -q -j 0 "$site" >/dev/null || true
/opt/uv/bin/python "$here/check_lock.py" "$lock" --path "$site" --missing-ok "${PRUNE_PACKAGES:-}"
