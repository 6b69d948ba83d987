#!/usr/bin/env bash
# ci/verify.sh: check the cosign signatures of a housing-mlops release in an OCI registry (what users run
# before installing; docs/shipping.md).
#
#   ci/verify.sh --registry HOST:PORT[/PREFIX] --key COSIGN_PUB [--plain-http] [--version V]
#                [--published FILE] [--images]
#
#   --registry    the registry the release was published to (same value as ci/publish.sh --registry)
#   --key         the release's cosign public key (cosign.pub)
#   --plain-http  the registry speaks HTTP (a loopback test registry)
#   --version     chart version to verify (default: version in charts/housing-mlops/Chart.yaml)
#   --published   published.txt written by ci/publish.sh: verifies every ref it lists (chart and images)
#                 and that each tag still points at the digest recorded there
#   --images      without --published: also verify housing-mlops/{mlflow,jobs,serving}:<appVersion>
#
# Verifies the tag (what `helm install --version` and the chart's image tags resolve) and prints the digest
# it resolved to. Offline, key-pair mode: no transparency log (--insecure-ignore-tlog=true).
# Exit status: 0 when every signature checks, 1 otherwise.
set -euo pipefail

SCRIPT=verify.sh
# shellcheck source=ci/oci.sh
source "$(dirname "${BASH_SOURCE[0]}")/oci.sh"

usage() {
  sed -n '4,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

REGISTRY="" KEY="" PLAIN_HTTP=0 VERSION="" PUBLISHED="" WITH_IMAGES=0
while (($#)); do
  case "$1" in
    --registry) REGISTRY="${2:?--registry needs HOST:PORT[/PREFIX]}"; shift 2 ;;
    --registry=*) REGISTRY="${1#*=}"; shift ;;
    --key) KEY="${2:?--key needs a cosign public key file}"; shift 2 ;;
    --key=*) KEY="${1#*=}"; shift ;;
    --version) VERSION="${2:?--version needs a chart version}"; shift 2 ;;
    --version=*) VERSION="${1#*=}"; shift ;;
    --published) PUBLISHED="${2:?--published needs a file}"; shift 2 ;;
    --published=*) PUBLISHED="${1#*=}"; shift ;;
    --plain-http) PLAIN_HTTP=1; shift ;;
    --images) WITH_IMAGES=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "verify.sh: error: unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$REGISTRY" ]] || die "--registry HOST:PORT[/PREFIX] is required"
[[ -n "$KEY" ]] || die "--key COSIGN_PUB is required"
REGISTRY="$(registry_ref "$REGISTRY")"
[[ -f "$KEY" && -r "$KEY" ]] || die "cosign public key not found or unreadable: $KEY"
[[ -z "$PUBLISHED" || -f "$PUBLISHED" ]] || die "published file not found: $PUBLISHED"

CRANE="${CRANE:-$(tool crane)}"
COSIGN="${COSIGN:-$(tool cosign)}"
plain_http_flags "$PLAIN_HTTP"

# (tag ref, expected digest or "") pairs to verify
refs=() expected=()
if [[ -n "$PUBLISHED" ]]; then
  while read -r kind tag_ref digest_ref; do
    [[ "$kind" == chart || "$kind" == image ]] || continue
    refs+=("$tag_ref")
    expected+=("${digest_ref##*@}")
  done <"$PUBLISHED"
  ((${#refs[@]})) || die "$PUBLISHED lists no chart or image"
else
  chart_yaml="$ROOT/charts/$CHART_NAME/Chart.yaml"
  field() { sed -n "s/^$1: *//p" "$chart_yaml" | head -n1 | tr -d "\"'"; }
  VERSION="${VERSION:-$(field version)}"
  [[ -n "$VERSION" ]] || die "--version not given and no version in $chart_yaml"
  refs+=("$REGISTRY/charts/$CHART_NAME:$VERSION")
  expected+=("")
  if ((WITH_IMAGES)); then
    app_version="$(field appVersion)"
    for name in "${IMAGES[@]}"; do
      refs+=("$REGISTRY/$CHART_NAME/$name:$app_version")
      expected+=("")
    done
  fi
fi

failed=0
for i in "${!refs[@]}"; do
  ref="${refs[$i]}"
  if ! digest="$("$CRANE" digest "${crane_flags[@]}" "$ref" 2>&1)"; then
    log "FAIL $ref: cannot resolve it: $digest"
    failed=1
    continue
  fi
  if [[ -n "${expected[$i]}" && "$digest" != "${expected[$i]}" ]]; then
    log "FAIL $ref: points at $digest, not the published ${expected[$i]}"
    failed=1
    continue
  fi
  if out="$("$COSIGN" verify --key "$KEY" --insecure-ignore-tlog=true "${cosign_flags[@]}" "${ref%:*}@$digest" 2>&1)"; then
    log "OK   $ref ($digest): signature verified with $KEY"
    echo "${ref%:*}@$digest"
  else
    log "FAIL $ref ($digest): no valid signature for $KEY"
    printf '%s\n' "$out" | grep -v '^WARNING' >&2 || true
    failed=1
  fi
done
((failed == 0)) || die "signature verification failed"
