#!/bin/sh
# Builder-stage helper shared by the Dockerfiles: a virtualenv at $VENV (/opt/venv) holding the requirements
# files given as arguments, resolved against the project's lock (constraints), byte-compiled (a read-only
# root filesystem cannot cache bytecode: without it every start recompiles, ~13 s more for mlflow), then
# checked: nothing off the lock, every remaining requirement satisfied.
#   install-venv.sh LOCK REQUIREMENTS...
# Environment: UV_VERSION (required), PRUNE_PACKAGES (distributions to remove again: heavy optional
# dependencies an image never imports; the check then tolerates only those as missing).
# Needs the package index; leaves no cache behind. POSIX sh: the base may have no bash.
set -eu

lock=$1
shift
venv=${VENV:-/opt/venv}
uv_version=${UV_VERSION:?UV_VERSION must be set}
here=$(dirname "$0")

python3 -m venv /opt/uv
# The tool venv: uv, and packaging (the lock's) for check_lock.py, which inspects $venv from outside.
packaging=$(sed -n 's/^packaging==\([^ ;]*\).*/\1/p' "$lock")
/opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check -q "uv==$uv_version" "packaging==$packaging"
uv=/opt/uv/bin/uv
# Trust the image's CA store (a locally built base may add a proxy's CA); uv's built-in roots would not.
export UV_SYSTEM_CERTS=1 UV_NO_CACHE=1
"$uv" venv -q --python "$(command -v python3)" "$venv"

reqs=""
for r in "$@"; do reqs="$reqs -r $r"; done
# shellcheck disable=SC2086 # word splitting of $reqs and $PRUNE_PACKAGES is intended
{
  "$uv" pip install --python "$venv/bin/python" -c "$lock" -b "$lock" $reqs
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
