#!/usr/bin/env bash
# Build the local cluster's binaries from their Go modules (pins: ci/cluster/pins.env, wrapper modules:
# ci/cluster/modules/NAME), cached outside the clone so that a second clone and CI after a session are warm:
#   ci/cluster/build.sh [NAME...]     NAME: k8s etcd coredns local-path kserve kube-router helm3 pause (default: all)
# Each NAME lands in $CLUSTER_CACHE/bin/NAME-KEY/, KEY a hash of its pin, its wrapper module, RECIPE and the
# Go version; a build whose KEY directory exists is skipped. `ci/cluster/build.sh --print-bin NAME` prints the
# directory (built or not). CLUSTER_CACHE: ${XDG_CACHE_HOME:-$HOME/.cache}/housing-mlops/cluster.
# Logs: $CLUSTER_CACHE/logs/build-NAME.log.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ci/cluster/pins.env
. "$HERE/pins.env"
CLUSTER_CACHE=${CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/housing-mlops/cluster}
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
ALL=(k8s etcd coredns local-path kserve kube-router helm3 pause)

pin_of() {
  case $1 in
    k8s) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    local-path) echo "$LOCAL_PATH_PROVISIONER_VERSION" ;;
    kserve) echo "$KSERVE_VERSION" ;;
    kube-router) echo "$KUBE_ROUTER_VERSION" ;;
    helm3) echo "$HELM3_VERSION" ;;
    pause) echo "$KUBERNETES_VERSION" ;; # pause.c ships in the kubernetes module
    *) echo "build.sh: unknown component '$1' (${ALL[*]})" >&2; return 2 ;;
  esac
}

# Bump when a recipe below changes what it produces (flags, sources), so that caches rebuild.
RECIPE=1

# key NAME: what determines the binaries (pin, wrapper module, recipe, the Go toolchain)
key() {
  local name=$1 mod=$HERE/modules/$1
  {
    echo "$name $(pin_of "$name") recipe $RECIPE"
    go env GOVERSION
    if [[ -d $mod ]]; then cat "$mod"/go.mod "$mod"/go.sum "$mod"/*.go 2>/dev/null; fi
  } | sha256sum | cut -c1-16
}

bin_dir() { echo "$CLUSTER_CACHE/bin/$1-$(key "$1")"; }

# gobuild NAME OUT PKG... [-- LDFLAGS]: build PKGs of the wrapper module NAME into OUT
gobuild() {
  local name=$1 out=$2
  shift 2
  local ldflags="-s -w" pkgs=()
  while (($#)); do
    if [[ $1 == -- ]]; then
      shift
      ldflags="$ldflags $*"
      break
    fi
    pkgs+=("$1")
    shift
  done
  (cd "$HERE/modules/$name" && go mod download && go build -trimpath -o "$out/" -ldflags "$ldflags" "${pkgs[@]}")
}

# version_ldflags MODULE_PATHS...: -X flags that make `version` print the pinned Kubernetes version
k8s_ldflags() {
  local v=$KUBERNETES_VERSION minor p out=""
  minor=${v#v1.}
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    out+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$out"
}

build_one() {
  local name=$1 out tmp
  out=$(bin_dir "$name")
  if [[ -d $out ]]; then
    echo "build: $name $(pin_of "$name") cached in $out"
    return 0
  fi
  tmp=$out.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local start=$SECONDS
  case $name in
    k8s)
      gobuild k8s "$tmp" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
        -- "$(k8s_ldflags)"
      ;;
    etcd)
      gobuild etcd "$tmp" go.etcd.io/etcd/etcdctl/v3 -- \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
      (cd "$HERE/modules/etcd" && go build -trimpath -o "$tmp/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3)
      ;;
    coredns) gobuild coredns "$tmp" github.com/coredns/coredns ;;
    local-path) gobuild local-path "$tmp" github.com/rancher/local-path-provisioner ;;
    kserve) gobuild kserve "$tmp" github.com/kserve/kserve/cmd/manager ;;
    kube-router) gobuild kube-router "$tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router -- \
      "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" ;;
    helm3) gobuild helm3 "$tmp" helm.sh/helm/v3/cmd/helm -- \
      "-X helm.sh/helm/v3/internal/version.version=$HELM3_VERSION" ;;
    pause)
      # The sandbox ("pause") container's only binary, from the kubernetes module's build/pause/linux/pause.c.
      local src
      src=$(cd "$HERE/modules/k8s" && go mod download && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
      command -v gcc >/dev/null || { echo "build: pause needs gcc (apt-get install gcc libc6-dev)" >&2; return 1; }
      gcc -Os -static -Wall -Werror -DVERSION="$KUBERNETES_VERSION-housing" -o "$tmp/pause" \
        "$src/build/pause/linux/pause.c"
      strip "$tmp/pause"
      ;;
  esac
  mv "$tmp" "$out"
  echo "build: $name $(pin_of "$name") built in $((SECONDS - start)) s into $out"
}

if [[ ${1:-} == --print-bin ]]; then
  pin_of "${2:?usage: build.sh --print-bin NAME}" >/dev/null
  bin_dir "$2"
  exit 0
fi

names=("$@")
((${#names[@]})) || names=("${ALL[@]}")
for n in "${names[@]}"; do pin_of "$n" >/dev/null; done
mkdir -p "$CLUSTER_CACHE/logs"
# One build at a time per cache (a second caller waits, then finds the result cached).
exec 9>"$CLUSTER_CACHE/build.lock"
flock 9
for n in "${names[@]}"; do
  log=$CLUSTER_CACHE/logs/build-$n.log
  if ! build_one "$n" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build: $n failed (full log: $log)" >&2
    exit 1
  fi
  tail -n 1 "$log"
done
