#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, from upstream components only (docs/cluster.md):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kube-router's
# NetworkPolicy firewall as host processes; Debian's containerd + runc + CNI bridge for the pods; CoreDNS and
# the local-path provisioner as in-cluster pods from images built here. Needs root (no systemd needed).
#
#   ci/cluster/cluster.sh up        build what is missing (ci/cluster/build.sh), start, wait until usable
#   ci/cluster/cluster.sh down      stop what `up` started (by PID) and undo what it changed on the host
#   ci/cluster/cluster.sh status    what runs, and the node
#   ci/cluster/cluster.sh import IMAGE...   copy Docker images into the cluster's containerd (docker.io/...)
#   ci/cluster/cluster.sh kubeconfig        print the admin kubeconfig's path
#   ci/cluster/cluster.sh trust-registry HOST:PORT   let containerd pull from a plain-HTTP registry (loopback)
#
# State (PKI, configs, etcd, containerd root, logs, PIDs) lives in $CLUSTER_DIR (/var/tmp/housing-mlops-cluster);
# `down` removes it. Logs: $CLUSTER_DIR/logs/NAME.log (copied to $CLUSTER_LOGS on down, if set).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/pins.env
. "$HERE/pins.env"
DIR=${CLUSTER_DIR:-/var/tmp/housing-mlops-cluster}
PKI=$DIR/pki
RUN=$DIR/run
LOGS=$DIR/logs
SOCK=$RUN/containerd.sock
NODE=${CLUSTER_NODE_NAME:-housing-node}
# The host's own address on its default route: the apiserver advertises it, kubelet registers it.
NODE_IP=${CLUSTER_NODE_IP:-$(ip -4 -o route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
IMG_PREFIX=docker.io/housing-mlops
PAUSE_IMAGE=$IMG_PREFIX/pause:$KUBERNETES_VERSION
COREDNS_IMAGE=$IMG_PREFIX/coredns:$COREDNS_VERSION
LOCAL_PATH_IMAGE=$IMG_PREFIX/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION
HELPER_IMAGE=$IMG_PREFIX/cluster-helper:bookworm # local-path's helper pod (sh, mkdir, rm)
# Rules, chains and ipsets whose names start so are the cluster's (kube-proxy, kube-router, CNI, ours).
OWNED='^(KUBE-|CNI-|HOUSING-)'
WAIT_S=${CLUSTER_WAIT:-180}

export KUBECONFIG=$PKI/admin.conf
# kubectl: the pinned one from `make tools` (.tools/bin), installed by `up` when missing.
export PATH=$ROOT/.tools/bin:$PATH
log() { printf 'cluster: %s\n' "$*"; }
die() {
  printf 'cluster: %s\n' "$*" >&2
  exit 1
}

# bin NAME: the directory build.sh puts NAME's binaries in
bin() { "$HERE/build.sh" --print-bin "$1"; }

# wait_for SECONDS WHAT CMD...: poll CMD every 0.5 s (quietly) until it succeeds
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what (logs: $LOGS)"
    sleep 0.5
  done
}

# --- processes by PID ---------------------------------------------------------------------------------------
start() { # start NAME CMD...: run in the background, log to $LOGS/NAME.log, PID in $RUN/NAME.pid
  local name=$1
  shift
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

alive() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

stop() { # stop NAME...: TERM by recorded PID, KILL after 30 s
  local name pid i
  for name in "$@"; do
    [[ -f $RUN/$name.pid ]] || continue
    pid=$(cat "$RUN/$name.pid")
    if kill "$pid" 2>/dev/null; then
      for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$RUN/$name.pid"
  done
  return 0
}

# --- host preparation ---------------------------------------------------------------------------------------
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory kernel.panic
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

host_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

save_sysctls() {
  local k
  for k in "${SYSCTLS[@]}"; do
    [[ -e /proc/sys/${k//.//} ]] && printf '%s=%s\n' "$k" "$(sysctl -n "$k")"
  done >"$DIR/sysctl.before"
  ls /run/netns 2>/dev/null >"$DIR/netns.before" || : >"$DIR/netns.before"
}

restore_sysctls() {
  [[ -f $DIR/sysctl.before ]] || return 0
  sysctl -q -p "$DIR/sysctl.before" >/dev/null 2>&1 || true
}

# Docker sets the FORWARD policy to DROP, which silently drops pod-to-pod and pod-to-service traffic on the
# bridge: our own chain accepts the pod network, whatever Docker does before, during or after.
forward_rules() {
  iptables -N HOUSING-FORWARD 2>/dev/null || iptables -F HOUSING-FORWARD
  iptables -A HOUSING-FORWARD -s "$CLUSTER_CIDR" -j ACCEPT
  iptables -A HOUSING-FORWARD -d "$CLUSTER_CIDR" -j ACCEPT
  iptables -C FORWARD -j HOUSING-FORWARD 2>/dev/null || iptables -A FORWARD -j HOUSING-FORWARD
}

# Remove every rule that jumps to an owned chain, then the owned chains, then kube-router's ipsets.
remove_owned_iptables() {
  local table rule chain
  for table in filter nat mangle raw; do
    iptables-save -t "$table" 2>/dev/null | grep -E -- '^-A ' |
      grep -Ev -- "^-A ${OWNED#^}" | grep -E -- "-j ${OWNED#^}|-g ${OWNED#^}" | sed 's/^-A /-D /' |
      while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done || true
    for chain in $(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | grep -E "$OWNED"); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | grep -E "$OWNED"); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  if command -v ipset >/dev/null; then
    for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router-)'); do
      ipset destroy "$set" 2>/dev/null || true
    done
  fi
}

# --- PKI and configuration ----------------------------------------------------------------------------------
pki() {
  [[ -f $PKI/admin.conf ]] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 30 -subj /CN=housing-cluster-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign \
      2>/dev/null
    sign() { # sign NAME CN O EXTENSIONS
      openssl req -new -nodes -newkey rsa:2048 -keyout "$1.key" -out "$1.csr" -subj "/CN=$2${3:+/O=$3}" 2>/dev/null
      printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 30 \
        -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    local svc_ip=${SERVICE_CIDR%.*/*}.1
    sign apiserver kube-apiserver "" "extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$NODE,DNS:localhost,IP:$svc_ip,IP:127.0.0.1,IP:$NODE_IP"
    sign kubelet-serving "system:node:$NODE" system:nodes "extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
    sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters extendedKeyUsage=clientAuth
    sign admin kubernetes-admin system:masters extendedKeyUsage=clientAuth
    sign controller-manager system:kube-controller-manager "" extendedKeyUsage=clientAuth
    sign scheduler system:kube-scheduler "" extendedKeyUsage=clientAuth
    sign kubelet "system:node:$NODE" system:nodes extendedKeyUsage=clientAuth
    sign kube-proxy system:kube-proxy "" extendedKeyUsage=clientAuth
    sign kube-router system:kube-router "" extendedKeyUsage=clientAuth
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    for pair in admin:kubernetes-admin controller-manager:system:kube-controller-manager \
      scheduler:system:kube-scheduler kubelet:system:node:$NODE kube-proxy:system:kube-proxy \
      kube-router:system:kube-router; do
      kubeconfig "${pair%%:*}" >"${pair%%:*}.conf"
    done
    chmod 600 ./*.key ./*.conf
  )
}

kubeconfig() { # kubeconfig NAME: a kubeconfig with NAME's client certificate
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: housing
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$1.crt")
    client-key-data: $(base64 -w0 "$1.key")
contexts:
- name: housing
  context: {cluster: housing, user: $1}
current-context: housing
EOF
}

configs() {
  mkdir -p "$DIR/etc/cni" "$DIR/var/pods"
  cat >"$DIR/etc/containerd.toml" <<EOF
version = 2
root = "$DIR/var/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  # This VM has no CAP_SYS_RESOURCE: without this runc fails every sandbox ("can't get final child's PID").
  restrict_oom_score_adj = true
  sandbox_image = "$PAUSE_IMAGE"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  # per-registry hosts.toml files (trust-registry): read on every pull, so a registry can be added to a running node
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/etc/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/etc/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  local subnet=${CLUSTER_CIDR%.*.*/*}.0.0/24 gateway=${CLUSTER_CIDR%.*.*/*}.0.1
  cat >"$DIR/etc/cni/10-housing.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "housing-cluster",
  "plugins": [
    {"type": "bridge", "bridge": "housing0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet", "gateway": "$gateway"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/var/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$DIR/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
clusterDNS: ["$CLUSTER_DNS"]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
staticPodPath: $DIR/var/pods
# The host's disk is shared with builds and caches: evict only when it is really full.
evictionHard: {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
maxPods: 60
# 1.35 re-checks pull credentials (KubeletEnsureSecretPulledImages, beta): once the kubelet has pulled an image
# (prod pulls ours by digest from the e2e's registry), pods asking for the same content by the imported tag with
# pullPolicy Never got ErrImageNeverPull. The images ctr import loaded are ours by design: exempt them, and
# only them (the default policy treats an image as preloaded only until the kubelet pulls it). Measured: the
# MLServer stand-in imported as docker.io/seldonio/mlserver:1.7.1 was pulled anyway (ErrImagePull with IfNotPresent),
# even with that name on this list; under housing-mlops/ it runs (ci/cluster/kserve.sh).
imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages
preloadedImagesVerificationAllowlist: ["housing-mlops/*", "docker.io/housing-mlops/*"]
EOF
  cat >"$DIR/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE
clientConnection: {kubeconfig: $PKI/kube-proxy.conf}
conntrack: {maxPerCore: 0}
EOF
}

# --- images -------------------------------------------------------------------------------------------------
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

# import IMAGE...: docker save | ctr import. Docker saves docker.io names without the registry and ctr puts it
# back, so the images land under the fully qualified names the CRI looks for (docker.io/NAME:TAG).
import_images() {
  local image full
  for image in "$@"; do
    full=$image
    [[ $full == docker.io/* ]] || full=docker.io/$full
    [[ $full == docker.io/*/* ]] || full=docker.io/library/${full#docker.io/}
    docker save "$image" | ctr_ images import --all-platforms - >/dev/null
    ctr_ images ls -q | grep -xF "$full" >/dev/null || die "import of $image failed: no $full in containerd"
  done
}

# cluster_images: the images the cluster itself runs (pause, CoreDNS, local-path and its helper), built with
# Docker from the binaries build.sh made: FROM scratch for the static Go binaries, the local Debian base for sh.
cluster_images() {
  local ctx base=${LOCAL_BASE_IMAGE:-housing-mlops/base:bookworm-py3.11}
  docker image inspect "$base" >/dev/null 2>&1 || (cd "$ROOT" && images/base/build.sh "$base")
  ctx=$(mktemp -d)
  cp "$(bin pause)/pause" "$(bin coredns)/coredns" "$(bin local-path)/local-path-provisioner" "$ctx/"
  # build_image IMAGE LINE...: build IMAGE from a Dockerfile of these lines, in $ctx
  build_image() {
    printf '%s\n' "${@:2}" >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -t "$1" "$ctx" >"$LOGS/image-${1##*/}.log" 2>&1 ||
      die "building $1 failed (log: $LOGS/image-${1##*/}.log)"
  }
  build_image "$PAUSE_IMAGE" 'FROM scratch' 'COPY pause /pause' 'USER 65535:65535' 'ENTRYPOINT ["/pause"]'
  build_image "$COREDNS_IMAGE" 'FROM scratch' 'COPY coredns /coredns' 'USER 65532:65532' 'ENTRYPOINT ["/coredns"]'
  build_image "$LOCAL_PATH_IMAGE" "FROM $base" 'COPY local-path-provisioner /usr/bin/local-path-provisioner' \
    'ENTRYPOINT ["local-path-provisioner"]'
  build_image "$HELPER_IMAGE" "FROM $base" 'CMD ["sh"]'
  rm -rf "$ctx"
  import_images "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$LOCAL_PATH_IMAGE" "$HELPER_IMAGE"
}

# --- up / down ----------------------------------------------------------------------------------------------
up() {
  [[ $(id -u) == 0 ]] || die "needs root (kubelet, containerd, iptables)"
  [[ -n $NODE_IP ]] || die "no IPv4 address on the default route (set CLUSTER_NODE_IP)"
  if alive apiserver || alive kubelet; then die "already up (ci/cluster/cluster.sh down first)"; fi
  if [[ -d $DIR ]]; then
    # A previous run was stopped without `down` (its processes ended): undo what it left, start afresh.
    log "$DIR is left from an earlier run: cleaning it up first"
    down
  fi
  local t0=$SECONDS
  host_packages
  [[ -x $ROOT/.tools/bin/kubectl && -x $ROOT/.tools/bin/helm ]] || make -C "$ROOT" tools >/dev/null
  "$HERE/build.sh" k8s etcd pause coredns local-path kube-router
  "$ROOT/images/docker-up.sh"
  mkdir -p "$DIR" "$RUN" "$LOGS"
  save_sysctls # $DIR is new here: a leftover one was cleaned up (and its sysctls restored) above
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null ||
    die "bridge netfilter is missing (modprobe br_netfilter)"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  pki
  configs
  forward_rules

  log "containerd"
  start containerd containerd --config "$DIR/etc/containerd.toml"
  wait_for 30 containerd ctr_ version
  cluster_images

  log "etcd, kube-apiserver (https://$NODE_IP:6443)"
  start etcd "$(bin etcd)/etcd" --name "$NODE" --data-dir "$DIR/var/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 2147483648
  wait_for 30 etcd curl -fsS http://127.0.0.1:2381/health
  start apiserver "$(bin k8s)/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true --cert-dir="$DIR/var/apiserver-certs"
  wait_for "$WAIT_S" "the apiserver's /readyz" kubectl get --raw /readyz

  log "controller-manager, scheduler, kubelet, kube-proxy, kube-router (NetworkPolicy firewall)"
  start controller-manager "$(bin k8s)/kube-controller-manager" --kubeconfig="$PKI/controller-manager.conf" \
    --authentication-kubeconfig="$PKI/controller-manager.conf" --authorization-kubeconfig="$PKI/controller-manager.conf" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --root-ca-file="$PKI/ca.crt" \
    --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR" --leader-elect=false --bind-address=127.0.0.1 \
    --cert-dir="$DIR/var/cm-certs"
  start scheduler "$(bin k8s)/kube-scheduler" --kubeconfig="$PKI/scheduler.conf" \
    --authentication-kubeconfig="$PKI/scheduler.conf" --authorization-kubeconfig="$PKI/scheduler.conf" \
    --leader-elect=false --bind-address=127.0.0.1
  start kubelet "$(bin k8s)/kubelet" --config="$DIR/etc/kubelet.yaml" --kubeconfig="$PKI/kubelet.conf" \
    --root-dir="$DIR/var/kubelet" --node-ip="$NODE_IP" --hostname-override="$NODE" --v=1
  start kube-proxy "$(bin k8s)/kube-proxy" --config="$DIR/etc/kube-proxy.yaml"
  wait_for "$WAIT_S" "node $NODE registered" kubectl get node "$NODE"
  rbac
  start kube-router "$(bin kube-router)/kube-router" --kubeconfig="$PKI/kube-router.conf" \
    --hostname-override="$NODE" --run-firewall=true --run-router=false --run-service-proxy=false \
    --health-port=20244 --metrics-port=0
  kubectl wait --for=condition=Ready "node/$NODE" --timeout="${WAIT_S}s" >/dev/null
  wait_for 60 "kube-router healthy" curl -fsS http://127.0.0.1:20244/healthz

  log "CoreDNS, local-path provisioner (default StorageClass)"
  addons | kubectl apply -f - >/dev/null
  kubectl -n kube-system rollout status deploy/coredns --timeout="${WAIT_S}s" >/dev/null
  kubectl -n local-path-storage rollout status deploy/local-path-provisioner --timeout="${WAIT_S}s" >/dev/null
  log "up in $((SECONDS - t0)) s: KUBECONFIG=$KUBECONFIG (node $NODE, $NODE_IP)"
}

# kube-router reads pods, namespaces and policies cluster-wide; its user gets the same rights as upstream's
# DaemonSet ServiceAccount.
rbac() {
  kubectl apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: housing:kube-router}
rules:
  - apiGroups: [""]
    resources: [namespaces, pods, services, nodes, endpoints]
    verbs: [list, get, watch]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [list, get, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, get, watch]
  - apiGroups: [""]
    resources: [nodes]
    verbs: [patch]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: housing:kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: housing:kube-router}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: system:kube-router}]
EOF
}

addons() {
  local f
  for f in "$HERE/addons/coredns.yaml" "$HERE/addons/local-path.yaml"; do
    echo "---"
    sed -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#g" -e "s#@LOCAL_PATH_IMAGE@#$LOCAL_PATH_IMAGE#g" \
      -e "s#@HELPER_IMAGE@#$HELPER_IMAGE#g" -e "s#@CLUSTER_DNS@#$CLUSTER_DNS#g" \
      -e "s#@LOCAL_PATH_DIR@#$DIR/var/local-path#g" "$f"
  done
}

down() {
  [[ -d $DIR ]] || {
    log "nothing to stop ($DIR does not exist)"
    return 0
  }
  local t0=$SECONDS m n
  stop kube-router kubelet kube-proxy scheduler controller-manager
  if alive containerd; then
    # Every pod's containers and sandboxes, by containerd's own IDs in our namespace (never by name).
    for n in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$n" >/dev/null 2>&1 || true; done
    # (`delete -f` waits for a killed task itself; a wait_for here would end `down` half-way on a stuck one.)
    for n in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$n" >/dev/null 2>&1 || true; done
  fi
  stop containerd apiserver etcd
  local kp
  kp=$(bin k8s)/kube-proxy
  if [[ -x $kp ]]; then "$kp" --cleanup >/dev/null 2>&1 || true; fi
  remove_owned_iptables
  # Mounts (kubelet volumes, containerd snapshots, shm) under our state dir, deepest first.
  for m in $(findmnt -rn -o TARGET | grep -F "$DIR/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  # Network namespaces CNI made for our pods (those that were not there before `up`).
  for n in /run/netns/cni-*; do
    [[ -e $n ]] || continue
    grep -qxF "${n##*/}" "$DIR/netns.before" 2>/dev/null && continue
    umount "$n" 2>/dev/null || true
    rm -f "$n"
  done
  ip link del housing0 2>/dev/null || true
  ip link del kube-bridge 2>/dev/null || true
  ip link del kube-dummy-if 2>/dev/null || true
  # kubelet's cgroups (cgroup v1: one kubepods tree per controller), deepest first.
  find /sys/fs/cgroup -depth -type d -path '*kubepods*' -exec rmdir {} + 2>/dev/null || true
  restore_sysctls
  [[ -n ${CLUSTER_LOGS:-} ]] && mkdir -p "$CLUSTER_LOGS" && cp -r "$LOGS/." "$CLUSTER_LOGS/" 2>/dev/null
  rm -rf "$DIR"
  log "down in $((SECONDS - t0)) s"
}

status() {
  local n
  for n in containerd etcd apiserver controller-manager scheduler kubelet kube-proxy kube-router; do
    if alive "$n"; then printf '%-20s pid %s\n' "$n" "$(cat "$RUN/$n.pid")"; else printf '%-20s stopped\n' "$n"; fi
  done
  alive apiserver && kubectl get nodes -o wide
  return 0
}

# trust_registry HOST:PORT: containerd pulls HOST:PORT/... over plain HTTP (a registry on this machine's loopback:
# containerd pulls in the host's network namespace, so 127.0.0.1 is this machine, not the pod).
trust_registry() {
  [[ ${1:-} =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || die "trust-registry: want HOST:PORT, got '${1:-}'"
  mkdir -p "$DIR/etc/certs.d/$1"
  cat >"$DIR/etc/certs.d/$1/hosts.toml" <<EOF
server = "http://$1"
[host."http://$1"]
  capabilities = ["pull", "resolve"]
EOF
  log "containerd pulls $1 over plain HTTP ($DIR/etc/certs.d/$1/hosts.toml)"
}

case ${1:-} in
  up) up ;;
  trust-registry)
    shift
    trust_registry "$@"
    ;;
  down) down ;;
  status) status ;;
  import)
    shift
    import_images "$@"
    ;;
  kubeconfig) echo "$KUBECONFIG" ;;
  *)
    sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    [[ ${1:-} == -h || ${1:-} == --help ]] || exit 2
    ;;
esac
