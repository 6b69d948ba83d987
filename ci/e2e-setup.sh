#!/usr/bin/env bash
# Provisioning for the cluster e2e (tests/cluster/, docs/cluster.md): everything the scenarios need before the
# first one runs, and nothing they check. The scenarios are pytest; this script only builds and starts.
#
#   ci/e2e-setup.sh up   [--provider local|kind]   tools, images, (local: registry + publish), cluster, KServe, S3
#   ci/e2e-setup.sh down [--provider local|kind]   stop the registry, delete the cluster (copies its logs first)
#
# `up` writes $E2E_WORKDIR/setup.env (KEY=value: kubeconfig, images, registry, Helm binaries) that the pytest
# session reads, and $E2E_WORKDIR/setup-timings.json (seconds per provisioning step). It refuses to start over a
# cluster that runs already: run `down` first, or point the tests at it (`make e2e-test`).
#
# --provider  local (default; ci/cluster/: upstream Kubernetes built here, KServe from its Go module, a loopback
#             OCI registry with the chart and images cosign-signed; needs root) or kind (Docker and the internet:
#             kindest/node, cert-manager, KServe's OCI charts, moto). Also E2E_PROVIDER.
# Environment: E2E_WORKDIR (.local/e2e), E2E_CLUSTER (kind cluster name, housing-e2e), E2E_HELM3 (a Helm 3
# binary; default: built from its module by ci/cluster/build.sh helm3), LOCAL_BASE_IMAGE.
set -Eeuo pipefail
trap 'echo "e2e-setup: line $LINENO: command failed: $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# --- pins: everything the kind path installs beyond our own chart (the local path: ci/cluster/pins.env) ---------
KIND_VERSION=v0.33.0
KIND_NODE_IMAGE=kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0
CERT_MANAGER_CHART=oci://quay.io/jetstack/charts/cert-manager
CERT_MANAGER_VERSION=v1.21.2
KSERVE_CRD_CHART=oci://ghcr.io/kserve/charts/kserve-crd
KSERVE_CHART=oci://ghcr.io/kserve/charts/kserve-resources # named `kserve` up to v0.16, `kserve-resources` since v0.17
KSERVE_RUNTIMES_CHART=oci://ghcr.io/kserve/charts/kserve-runtime-configs # charts/kserve-runtime-configs of the v0.20.0 module (kind path not run here)
KSERVE_VERSION=$(sed -n 's/^KSERVE_VERSION=//p' ci/cluster/pins.env) # one KServe for both providers

usage() { sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

ACTION=${1:-}
shift || true
PROVIDER=${E2E_PROVIDER:-local}
while (($#)); do
  case $1 in
    --provider=*) PROVIDER=${1#--provider=} ;;
    --provider)
      [[ $# -ge 2 ]] || {
        echo "e2e-setup: --provider needs a value (kind or local)" >&2
        exit 2
      }
      PROVIDER=$2
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "e2e-setup: unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done
case $ACTION in
  up | down) ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    echo "e2e-setup: unknown action '$ACTION' (up or down)" >&2
    exit 2
    ;;
esac
case $PROVIDER in
  kind | local) ;;
  *)
    echo "e2e-setup: unknown provider '$PROVIDER' (kind or local)" >&2
    exit 2
    ;;
esac

WORKDIR=${E2E_WORKDIR:-$ROOT/.local/e2e}
CLUSTER=${E2E_CLUSTER:-housing-e2e}
LOCAL_CLUSTER=ci/cluster/cluster.sh
PUBLISH_DIR=$WORKDIR/publish # the registry's storage and log, the cosign keys, digests.yaml, published.txt
TOOLS_BIN=${E2E_TOOLS_BIN:-$ROOT/.tools/bin} # `make tools` installs helm, kubectl, cosign, registry there
export PATH=$TOOLS_BIN:$PATH
T_NODES=180s
T_INFRA=10m
T_S3=180s

VERSION=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' hooks/pyproject.toml | head -n 1)
[[ -n $VERSION ]] || {
  echo "e2e-setup: no version in hooks/pyproject.toml" >&2
  exit 1
}
MLFLOW_IMAGE=housing-mlops/mlflow:$VERSION
JOBS_IMAGE=housing-mlops/jobs:$VERSION
SERVING_IMAGE=housing-mlops/serving:$VERSION
TEST_SERVICES_IMAGE=housing-mlops/test-services:$VERSION # the S3 store (local) and the e2e's probe pods
PG_STANDIN=housing-mlops/postgres-standin:15              # values/local.yaml
MLSERVER_STANDIN=housing-mlops/mlserver-standin:1.7.1 # KServe's kserve-mlserver runtime runs it (ci/cluster/kserve.sh)
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-housing-mlops/base:bookworm-py3.11}

say() { printf '==> e2e-setup: %s\n' "$*"; }
run() {
  printf '+ %s\n' "$*"
  "$@"
}

# Each step's wall time goes to setup-timings.json (the pytest session merges it into timings.json).
STEP=""
STEP_STARTED=$SECONDS
STEPS=()
step() {
  [[ -z $STEP ]] || STEPS+=("\"$STEP\": $((SECONDS - STEP_STARTED))")
  STEP=$1
  STEP_STARTED=$SECONDS
  [[ -z $1 ]] || say "$1: $2"
}
write_step_timings() {
  step ""
  local IFS=,
  printf '{"provider": "%s", "phases_s": {%s}}\n' "$PROVIDER" "${STEPS[*]}" >"$WORKDIR/setup-timings.json"
}

if [[ $PROVIDER == local ]]; then
  KUBECONFIG=$("$LOCAL_CLUSTER" kubeconfig)
  export CLUSTER_LOGS=${CLUSTER_LOGS:-$WORKDIR/cluster-logs} # `cluster.sh down` copies the cluster's logs there
else
  KUBECONFIG=$WORKDIR/kubeconfig
fi
export KUBECONFIG

# --- down --------------------------------------------------------------------------------------------------
stop_registry() {
  local pid
  [[ -f $PUBLISH_DIR/registry.pid ]] || return 0
  pid=$(cat "$PUBLISH_DIR/registry.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; done
  rm -f "$PUBLISH_DIR/registry.pid"
}

if [[ $ACTION == down ]]; then
  stop_registry
  if [[ $PROVIDER == local ]]; then
    run "$LOCAL_CLUSTER" down
  else
    run kind delete cluster --name "$CLUSTER"
  fi
  rm -f "$WORKDIR/setup.env"
  exit 0
fi

# --- up ----------------------------------------------------------------------------------------------------
mkdir -p "$WORKDIR"
rm -f "$WORKDIR/setup.env"
HELM3=${E2E_HELM3:-}
REGISTRY_ADDR=""

# A failed `up` stops what this run started, and only that (a cluster that was already there is never touched);
# the cluster's own logs are kept ($CLUSTER_LOGS).
REGISTRY_STARTED=0
CLUSTER_CREATED=0
on_error() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    echo "e2e-setup: FAILED in step '$STEP' (exit $rc); stopping what this run started" >&2
    write_step_timings || true
    if ((REGISTRY_STARTED)); then stop_registry; fi
    if ((CLUSTER_CREATED)); then
      if [[ $PROVIDER == local ]]; then "$LOCAL_CLUSTER" down || true; else kind delete cluster --name "$CLUSTER" || true; fi
    fi
  fi
  exit "$rc"
}
trap on_error EXIT

# start_registry: a CNCF distribution registry (built by `make tools`) on a free loopback port, detached so that
# it outlives this script; `down` stops it by its pid file.
start_registry() {
  REGISTRY_ADDR=127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$PUBLISH_DIR" && mkdir -p "$PUBLISH_DIR"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$PUBLISH_DIR/blobs" "$REGISTRY_ADDR" >"$PUBLISH_DIR/registry.yml"
  REGISTRY_STARTED=1
  setsid "$TOOLS_BIN/registry" serve "$PUBLISH_DIR/registry.yml" >"$PUBLISH_DIR/registry.log" 2>&1 </dev/null &
  echo $! >"$PUBLISH_DIR/registry.pid"
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || {
      echo "e2e-setup: the registry did not answer on $REGISTRY_ADDR within 60 s (log: $PUBLISH_DIR/registry.log)" >&2
      return 1
    }
    sleep 1
  done
  say "registry on $REGISTRY_ADDR"
}

if [[ $PROVIDER == local ]]; then
  step preflight "root, Docker, the pinned tools (make tools), the cluster's binaries (ci/cluster/build.sh)"
  [[ $(id -u) == 0 ]] || {
    echo "e2e-setup: the local provider needs root (kubelet, containerd, iptables)" >&2
    exit 1
  }
  if "$LOCAL_CLUSTER" status | grep -q ' pid '; then
    echo "e2e-setup: the local cluster is already running: stop it ($0 down) or run the tests on it (make e2e-test)" >&2
    exit 1
  fi
  run images/docker-up.sh
  run timeout 20m make tools
  # The cluster's Go builds (CPU) and the image builds (mostly downloads) overlap.
  ci/cluster/build.sh >"$WORKDIR/cluster-build.log" 2>&1 &
  build_pid=$!

  step images "build $MLFLOW_IMAGE, $JOBS_IMAGE, $SERVING_IMAGE, $TEST_SERVICES_IMAGE, the PostgreSQL and MLServer stand-ins"
  run timeout 60m make images
  run timeout 30m env STANDIN_IMAGE="$MLSERVER_STANDIN" images/build.sh test-services mlserver-standin
  run timeout 30m docker build -q -t "$PG_STANDIN" --build-arg "BASE_IMAGE=$LOCAL_BASE_IMAGE" ci/cluster/standins/postgres

  step publish "the chart and images to a loopback OCI registry, cosign-signed (ci/publish.sh)"
  start_registry
  run env COSIGN_PASSWORD= "$TOOLS_BIN/cosign" generate-key-pair --output-key-prefix "$PUBLISH_DIR/cosign"
  run timeout 20m env COSIGN_PASSWORD= ci/publish.sh --registry "$REGISTRY_ADDR" --plain-http --images \
    --key "$PUBLISH_DIR/cosign.key" --out "$PUBLISH_DIR"

  step cluster-build "wait for the cluster's binaries (ci/cluster/build.sh, log $WORKDIR/cluster-build.log)"
  if ! wait "$build_pid"; then
    tail -n 40 "$WORKDIR/cluster-build.log" >&2
    echo "e2e-setup: ci/cluster/build.sh failed (log: $WORKDIR/cluster-build.log)" >&2
    exit 1
  fi
  cat "$WORKDIR/cluster-build.log"
  [[ -n $HELM3 ]] || HELM3=$(ci/cluster/build.sh --print-bin helm3)/helm

  step cluster "start the local cluster (upstream Kubernetes, ci/cluster/cluster.sh)"
  CLUSTER_CREATED=1
  run timeout 20m "$LOCAL_CLUSTER" up
  run "$LOCAL_CLUSTER" trust-registry "$REGISTRY_ADDR"
  run kubectl wait --for=condition=Ready nodes --all --timeout="$T_NODES"
  run timeout 20m "$LOCAL_CLUSTER" import "$MLFLOW_IMAGE" "$JOBS_IMAGE" "$SERVING_IMAGE" "$TEST_SERVICES_IMAGE" \
    "$PG_STANDIN" "$MLSERVER_STANDIN"

  step kserve "KServe $KSERVE_VERSION from its Go module (CRDs, controller built from cmd/manager), Standard mode"
  run timeout 30m ci/cluster/kserve.sh

  step s3 "the in-cluster S3-compatible store (ci/cluster/s3.yaml)"
  sed "s/@VERSION@/$VERSION/g" ci/cluster/s3.yaml | kubectl apply -f -
  run kubectl rollout status deployment/s3 -n housing-s3 --timeout="$T_S3"
else
  step preflight "tools (kind $KIND_VERSION pinned into .tools/bin; helm, kubectl by make tools; Helm 3)"
  for tool in docker make go python3 git; do
    command -v "$tool" >/dev/null || {
      echo "e2e-setup: $tool is required (see docs/cluster.md)" >&2
      exit 1
    }
  done
  run docker info --format '{{.ServerVersion}}'
  kind version 2>/dev/null | grep -q " $KIND_VERSION " ||
    run timeout 10m env GOBIN="$TOOLS_BIN" go install "sigs.k8s.io/kind@$KIND_VERSION"
  run timeout 20m make tools
  if [[ -z $HELM3 ]]; then
    run timeout 30m ci/cluster/build.sh helm3
    HELM3=$(ci/cluster/build.sh --print-bin helm3)/helm
  fi

  step cluster "create the kind cluster $CLUSTER (Kubernetes ${KIND_NODE_IMAGE#*:v})"
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "e2e-setup: a kind cluster named $CLUSTER exists: delete it ($0 down --provider kind) or set E2E_CLUSTER" >&2
    exit 1
  fi
  CLUSTER_CREATED=1
  run kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --config ci/kind/cluster.yaml \
    --kubeconfig "$KUBECONFIG" --wait "$T_NODES"
  run kubectl wait --for=condition=Ready nodes --all --timeout="$T_NODES"

  step cert-manager "cert-manager $CERT_MANAGER_VERSION (KServe's webhook certificates)"
  run helm install cert-manager "$CERT_MANAGER_CHART" --version "$CERT_MANAGER_VERSION" \
    --namespace cert-manager --create-namespace --set crds.enabled=true --wait --timeout "$T_INFRA"

  step kserve "KServe $KSERVE_VERSION from its OCI charts, kserve-crd then kserve-resources, Standard (raw Deployment) mode"
  run helm install kserve-crd "$KSERVE_CRD_CHART" --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace --wait --timeout "$T_INFRA"
  run helm install kserve-resources "$KSERVE_CHART" --version "$KSERVE_VERSION" --namespace kserve \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true \
    --wait --timeout "$T_INFRA"
  run kubectl wait --for=condition=Available deployment --all -n kserve --timeout="$T_INFRA"
  # KServe's own runtimes (the chart's inference.runtime=kserve-mlserver uses kserve-mlserver), its image as
  # KServe v0.20.0's config/runtimes names it (the chart's default tag is older); kind pulls the real one
  run helm install kserve-runtime-configs "$KSERVE_RUNTIMES_CHART" --version "$KSERVE_VERSION" --namespace kserve \
    --set kserve.servingruntime.enabled=true --set kserve.servingruntime.mlserver.tag=1.7.1 \
    --wait --timeout "$T_INFRA"

  step s3 "the in-cluster S3-compatible store (ci/kind/s3.yaml: moto, pinned)"
  run kubectl apply -f ci/kind/s3.yaml
  run kubectl rollout status deployment/s3 -n housing-s3 --timeout="$T_S3"
  run kubectl wait --for=condition=Complete job/s3-buckets -n housing-s3 --timeout="$T_S3"

  step images "build our images and load them into kind"
  run timeout 60m make images
  run timeout 30m images/build.sh test-services
  run timeout 20m kind load docker-image --name "$CLUSTER" "$MLFLOW_IMAGE" "$JOBS_IMAGE" "$SERVING_IMAGE" \
    "$TEST_SERVICES_IMAGE"
fi

write_step_timings
cat >"$WORKDIR/setup.env" <<EOF
PROVIDER=$PROVIDER
KUBECONFIG=$KUBECONFIG
VERSION=$VERSION
MLFLOW_IMAGE=$MLFLOW_IMAGE
JOBS_IMAGE=$JOBS_IMAGE
SERVING_IMAGE=$SERVING_IMAGE
TEST_SERVICES_IMAGE=$TEST_SERVICES_IMAGE
HELM=$TOOLS_BIN/helm
HELM3=$HELM3
REGISTRY_ADDR=$REGISTRY_ADDR
PUBLISH_DIR=$PUBLISH_DIR
COSIGN=$TOOLS_BIN/cosign
EOF
trap - EXIT
say "up: $WORKDIR/setup.env (run the scenarios: make e2e-test, or pytest tests/cluster --provider $PROVIDER -k NAME)"
