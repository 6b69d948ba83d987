#!/usr/bin/env bash
# KServe (KSERVE_VERSION in pins.env) on the local cluster, from its Go module and nothing else:
# CRDs from the module's charts/kserve-crd, the controller from charts/kserve-resources (Standard mode: raw
# Deployments, no Knative/Istio, no ingress), the controller image built from cmd/manager (build.sh kserve).
#
#   ci/cluster/kserve.sh            install and wait until the controller and its webhooks answer
#
# Webhook certificate: a self-signed CA made here (openssl) instead of cert-manager, as KServe's own
# hack/self-signed-ca.sh does: Secret kserve-webhook-server-cert plus the CA in every webhook's caBundle.
# cert-manager would be three more binaries and images to build and run (~10 min, ~300 MB) on a throwaway
# single-node cluster, for one certificate that lives as long as the cluster; the chart does not use it.
# Left out of the upstream chart: the Issuer/Certificate (cert-manager), the kube-rbac-proxy sidecar (an image
# from quay.io that cannot be pulled here; metrics stay on the controller's own port), and KServe's own
# ClusterServingRuntimes/ClusterStorageContainer (their images are not built here; the chart brings its own
# ServingRuntime and mlflow:// storage container), except kserve-mlserver (at the end: `inference.runtime`'s
# built-in option, run on a test-only stand-in of its image).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/pins.env
. "$HERE/pins.env"
export PATH=$ROOT/.tools/bin:$PATH
export KUBECONFIG=${KUBECONFIG:-$("$HERE/cluster.sh" kubeconfig)}
NS=kserve
IMAGE=docker.io/housing-mlops/kserve-controller:$KSERVE_VERSION
# kserve-resources values (checked against the pinned chart by tests/e2e/test_local_provider.py; Helm ignores a
# key the chart does not have, so kserve_manifests.py also checks the rendered inferenceservice-config)
CHART_VALUES=(
  kserve.controller.deploymentMode=Standard
  kserve.controller.gateway.disableIngressCreation=true
  kserve.localmodel.enabled=false
)
WAIT=${KSERVE_WAIT:-300s}
# KServe v0.20.0's config/runtimes names docker.io/seldonio/mlserver:1.7.1, which no registry serves here: the
# runtime runs the test-only stand-in of that image (images/mlserver-standin) under our own name, which the kubelet
# takes as preloaded (measured: under the docker.io/seldonio name it tried to pull it, ErrImagePull).
MLSERVER_IMAGE=${MLSERVER_IMAGE:-docker.io/housing-mlops/mlserver-standin:1.7.1}
log() { printf 'kserve: %s\n' "$*"; }

t0=$SECONDS
[[ -x $ROOT/.tools/bin/helm ]] || make -C "$ROOT" tools >/dev/null
"$HERE/build.sh" kserve >/dev/null
module=$(cd "$HERE/modules/kserve" && go list -m -f '{{.Dir}}' github.com/kserve/kserve) # the module zip: charts/
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "controller image $IMAGE"
mkdir -p "$work/image/tmp"
chmod 1777 "$work/image/tmp"
cp "$("$HERE/build.sh" --print-bin kserve)/manager" "$work/image/manager"
printf 'FROM scratch\nCOPY tmp /tmp\nCOPY manager /manager\nUSER 65532:65532\nENTRYPOINT ["/manager"]\n' \
  >"$work/image/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$work/image" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
"$HERE/cluster.sh" import "$IMAGE"

log "CRDs (charts/kserve-crd)"
helm upgrade --install kserve-crd "$module/charts/kserve-crd" -n "$NS" --create-namespace --wait --timeout "$WAIT" \
  >/dev/null

log "webhook certificate (self-signed CA)"
svc=kserve-webhook-server-service
openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$work/ca.key" -out "$work/ca.crt" -days 30 \
  -subj /CN=kserve-webhook-ca 2>/dev/null
openssl req -new -nodes -newkey rsa:2048 -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=$svc.$NS.svc" \
  2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n%s\n' \
  "subjectAltName=DNS:$svc,DNS:$svc.$NS,DNS:$svc.$NS.svc,DNS:$svc.$NS.svc.cluster.local" >"$work/tls.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 30 \
  -extfile "$work/tls.ext" -out "$work/tls.crt" 2>/dev/null
kubectl create secret generic kserve-webhook-server-cert -n "$NS" --type=kubernetes.io/tls \
  --from-file=tls.crt="$work/tls.crt" --from-file=tls.key="$work/tls.key" --from-file=ca.crt="$work/ca.crt" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null

log "controller (charts/kserve-resources, Standard mode)"
sets=()
for value in "${CHART_VALUES[@]}"; do sets+=(--set "$value"); done
helm template kserve "$module/charts/kserve-resources" -n "$NS" "${sets[@]}" \
  --set kserve.controller.image="${IMAGE%:*}" --set kserve.controller.tag="$KSERVE_VERSION" >"$work/rendered.yaml"
"${PYTHON:-$(command -v "$ROOT/.venv/bin/python" || echo python3)}" "$HERE/kserve_manifests.py" "$work/rendered.yaml" "$work/ca.crt" >"$work/kserve.yaml"
kubectl apply -n "$NS" -f "$work/kserve.yaml" >/dev/null
kubectl rollout status deployment/kserve-controller-manager -n "$NS" --timeout="$WAIT" >/dev/null
# The webhooks fail closed: wait until one answers (a dry-run create of an InferenceService goes through them).
deadline=$((SECONDS + 120))
until kubectl create --dry-run=server -o name -f - >/dev/null 2>"$work/dry-run.err" <<'EOF'; do
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: webhook-probe, namespace: default}
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: s3://probe/model
EOF
  if ((SECONDS >= deadline)); then
    cat "$work/dry-run.err" >&2
    echo "kserve: the webhooks did not answer within 120 s" >&2
    exit 1
  fi
  sleep 1
done
# KServe's own kserve-mlserver ClusterServingRuntime (the chart's `inference.runtime: kserve-mlserver`), from the
# module's kserve-runtime-configs chart, the one runtime of it, its image set to MLSERVER_IMAGE (the stand-in of
# MLServer 1.7.1, the version KServe v0.20.0's config/runtimes names; the chart's default tag is older). Applied
# once the webhooks answer.
log "kserve-mlserver ClusterServingRuntime (charts/kserve-runtime-configs, $MLSERVER_IMAGE)"
helm template kserve-runtimes "$module/charts/kserve-runtime-configs" --set kserve.servingruntime.enabled=true \
  --set kserve.servingruntime.mlserver.image="${MLSERVER_IMAGE%:*}" \
  --set kserve.servingruntime.mlserver.tag="${MLSERVER_IMAGE##*:}" >"$work/runtimes.yaml"
"${PYTHON:-$(command -v "$ROOT/.venv/bin/python" || echo python3)}" - "$work/runtimes.yaml" >"$work/mlserver.yaml" <<'PY'
import sys

import yaml

found = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ClusterServingRuntime"
         and d["metadata"]["name"] == "kserve-mlserver"]
if len(found) != 1:
    sys.exit(f"kserve-runtime-configs rendered {len(found)} kserve-mlserver ClusterServingRuntimes")
yaml.safe_dump(found[0], sys.stdout)
PY
kubectl apply -f "$work/mlserver.yaml" >/dev/null
log "ready in $((SECONDS - t0)) s"
