#!/usr/bin/env bash
# ci/publish.sh: publish a release of charts/housing-mlops (and optionally its images) to an OCI registry,
# cosign-signed by digest. docs/shipping.md describes the whole flow; ci/verify.sh is what users run.
#
#   ci/publish.sh --registry HOST:PORT[/PREFIX] --key COSIGN_KEY [--plain-http] [--images] [--out DIR]
#
#   --registry    where to push: the chart goes to oci://REGISTRY/charts/housing-mlops:<chart version>,
#                 the images to REGISTRY/housing-mlops/{mlflow,jobs,serving}:<appVersion>
#   --key         cosign private key (cosign generate-key-pair); its password in COSIGN_PASSWORD (empty allowed)
#   --plain-http  the registry speaks HTTP, not HTTPS (a loopback test registry)
#   --images      also push and sign housing-mlops/{mlflow,jobs,serving}:<appVersion> from the local Docker engine
#   --out DIR     where the chart package, digests.yaml and published.txt go (default: dist)
#
# Offline signing: key-pair mode, nothing uploaded to a transparency log (--tlog-upload=false).
# Tools: .tools/bin/{helm,crane,cosign} when built (make tools), else from PATH; override with HELM=, CRANE=,
# COSIGN=, DOCKER=.
set -euo pipefail

SCRIPT=publish.sh
# shellcheck source=ci/oci.sh
source "$(dirname "${BASH_SOURCE[0]}")/oci.sh"
CHART_DIR="$ROOT/charts/housing-mlops"

usage() {
  sed -n '4,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

REGISTRY="" KEY="" PLAIN_HTTP=0 WITH_IMAGES=0 OUT="$ROOT/dist"
while (($#)); do
  case "$1" in
    --registry) REGISTRY="${2:?--registry needs HOST:PORT[/PREFIX]}"; shift 2 ;;
    --registry=*) REGISTRY="${1#*=}"; shift ;;
    --key) KEY="${2:?--key needs a cosign private key file}"; shift 2 ;;
    --key=*) KEY="${1#*=}"; shift ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --plain-http) PLAIN_HTTP=1; shift ;;
    --images) WITH_IMAGES=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "publish.sh: error: unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$REGISTRY" ]] || die "--registry HOST:PORT[/PREFIX] is required"
[[ -n "$KEY" ]] || die "--key COSIGN_KEY is required"
REGISTRY="$(registry_ref "$REGISTRY")"
[[ -f "$KEY" && -r "$KEY" ]] || die "cosign key file not found or unreadable: $KEY"
export COSIGN_PASSWORD="${COSIGN_PASSWORD-}"

HELM="${HELM:-$(tool helm)}"
CRANE="${CRANE:-$(tool crane)}"
COSIGN="${COSIGN:-$(tool cosign)}"
if [[ -z "${HELM_PLUGINS:-}" && -d "$ROOT/.tools/helm-plugins" ]]; then
  export HELM_PLUGINS="$ROOT/.tools/helm-plugins"
fi

HOST="${REGISTRY%%/*}"
plain_http_flags "$PLAIN_HTTP"

# 1. the registry must answer the distribution API (200, or 401 when it wants `helm registry login`)
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$scheme://$HOST/v2/" 2>/dev/null)" || code=000
case "$code" in
  200 | 401) ;;
  000) die "registry $scheme://$HOST/v2/ is not answering (is it running? --plain-http for an HTTP registry)" ;;
  *) die "registry $scheme://$HOST/v2/ answered HTTP $code, not an OCI registry API" ;;
esac

# 2. package the chart
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
chart_meta="$("$HELM" show chart "$CHART_DIR")"
field() { sed -n "s/^$1: *//p" <<<"$chart_meta" | head -n1 | tr -d "\"'"; }
VERSION="$(field version)"
APP_VERSION="$(field appVersion)"
[[ -n "$VERSION" && -n "$APP_VERSION" ]] || die "could not read version/appVersion of $CHART_DIR"
TGZ="$OUT/$CHART_NAME-$VERSION.tgz"
rm -f "$TGZ"
"$HELM" package "$CHART_DIR" --destination "$OUT" >&2
[[ -f "$TGZ" ]] || die "helm package did not write $TGZ"

# 3. docker images exist locally before anything is pushed (fail early, name the missing one)
if ((WITH_IMAGES)); then
  DOCKER="${DOCKER:-docker}"
  command -v "$DOCKER" >/dev/null 2>&1 || die "--images needs docker ($DOCKER not found)"
  for name in "${IMAGES[@]}"; do
    "$DOCKER" image inspect "$CHART_NAME/$name:$APP_VERSION" >/dev/null 2>&1 ||
      die "image $CHART_NAME/$name:$APP_VERSION is not in the local Docker engine (make images)"
  done
fi

sign() { # sign REF@DIGEST
  log "signing $1"
  "$COSIGN" sign --key "$KEY" --tlog-upload=false --yes "${cosign_flags[@]}" "$1" >&2 ||
    die "cosign sign $1 failed"
}

# 4. push + sign the chart by digest
push_out="$("$HELM" push "$TGZ" "oci://$REGISTRY/charts" "${helm_flags[@]}" 2>&1)" || {
  echo "$push_out" >&2
  die "helm push $TGZ to oci://$REGISTRY/charts failed"
}
echo "$push_out" >&2
CHART_REF="$REGISTRY/charts/$CHART_NAME"
CHART_DIGEST="$(sed -n 's/^Digest: *\(sha256:[0-9a-f]\{64\}\).*/\1/p' <<<"$push_out" | head -n1)"
if [[ -z "$CHART_DIGEST" ]]; then
  CHART_DIGEST="$("$CRANE" digest "${crane_flags[@]}" "$CHART_REF:$VERSION")" || die "crane digest $CHART_REF:$VERSION failed"
fi
sign "$CHART_REF@$CHART_DIGEST"

# 5. push + sign the images by digest
declare -A DIGEST=()
if ((WITH_IMAGES)); then
  for name in "${IMAGES[@]}"; do
    src="$CHART_NAME/$name:$APP_VERSION"
    dst="$REGISTRY/$CHART_NAME/$name:$APP_VERSION"
    log "pushing $src as $dst"
    "$DOCKER" tag "$src" "$dst" || die "docker tag $src $dst failed"
    "$DOCKER" push "$dst" >&2 || die "docker push $dst failed"
    DIGEST[$name]="$("$CRANE" digest "${crane_flags[@]}" "$dst")" || die "crane digest $dst failed"
    sign "$REGISTRY/$CHART_NAME/$name@${DIGEST[$name]}"
  done
fi

# 6. digests.yaml (a values fragment pinning what was pushed) and published.txt
{
  echo "# Written by ci/publish.sh for $CHART_NAME $VERSION (appVersion $APP_VERSION) pushed to $REGISTRY."
  echo "# Use with: helm install <release> oci://$REGISTRY/charts/$CHART_NAME --version $VERSION -f digests.yaml"
  echo "# Verify first (docs/shipping.md): ci/verify.sh --registry $REGISTRY --key cosign.pub"
  if ((!WITH_IMAGES)); then
    echo "# Published without --images: no image digests are pinned here; the images come from"
    echo "# global.image.registry by tag (appVersion $APP_VERSION)."
  fi
  echo "global:"
  echo "  image:"
  echo "    registry: \"$REGISTRY\""
  if ((WITH_IMAGES)); then
    pin() { printf '%s:\n  image:\n    digest: "%s"  # %s image\n' "$1" "${DIGEST[$2]}" "$2"; }
    pin mlflow mlflow
    pin training jobs
    pin promotion jobs
    pin tests jobs
    pin inference serving
    # the storage initializer (`housing-mlops fetch-model`) and the reconciler run the jobs image (values.yaml)
    printf '  storageContainer:\n    image:\n      digest: "%s"  # jobs image\n' "${DIGEST[jobs]}"
    printf '  reconciler:\n    image:\n      digest: "%s"  # jobs image\n' "${DIGEST[jobs]}"
  fi
} >"$OUT/digests.yaml"

{
  echo "chart $CHART_REF:$VERSION $CHART_REF@$CHART_DIGEST"
  if ((WITH_IMAGES)); then
    for name in "${IMAGES[@]}"; do
      echo "image $REGISTRY/$CHART_NAME/$name:$APP_VERSION $REGISTRY/$CHART_NAME/$name@${DIGEST[$name]}"
    done
  fi
} >"$OUT/published.txt"

log "published $CHART_REF:$VERSION@$CHART_DIGEST; wrote $OUT/digests.yaml and $OUT/published.txt"
cat "$OUT/published.txt"
