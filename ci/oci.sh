# ci/oci.sh: what ci/publish.sh and ci/verify.sh share (sourced, not run). Set SCRIPT (the caller's name, for
# messages) before sourcing. Defines ROOT, CHART_NAME, IMAGES, die, log, tool, registry_ref, plain_http_flags.
# shellcheck shell=bash disable=SC2034 # the variables are the callers'

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART_NAME="housing-mlops"
IMAGES=(mlflow jobs serving) # housing-mlops/<name>:<appVersion>, built by images/build.sh

die() {
  echo "$SCRIPT: error: $*" >&2
  exit 1
}
log() { echo "$SCRIPT: $*" >&2; }

tool() { # tool NAME: the pinned binary in .tools/bin (make tools), else the one on PATH
  if [[ -x "$ROOT/.tools/bin/$1" ]]; then
    echo "$ROOT/.tools/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    die "$1 not found (run \`make tools\`)"
  fi
}

registry_ref() { # registry_ref VALUE: --registry without a trailing slash or an oci:// scheme
  local ref="${1%/}"
  echo "${ref#oci://}"
}

# plain_http_flags 0|1: sets helm_flags, crane_flags, cosign_flags and scheme for an HTTPS or a plain-HTTP registry
plain_http_flags() {
  helm_flags=() crane_flags=() cosign_flags=() scheme=https
  if (($1)); then
    helm_flags=(--plain-http) crane_flags=(--insecure) cosign_flags=(--allow-http-registry=true) scheme=http
  fi
}
