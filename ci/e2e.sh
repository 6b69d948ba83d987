#!/usr/bin/env bash
# The cluster path end to end on a throwaway cluster (docs/cluster.md):
#   cluster (kind, or the local provider ci/cluster/) -> KServe (Standard mode; kind: cert-manager first)
#   -> in-cluster S3 store + buckets
#   -> images built and loaded -> DVC remote seeded -> helm install (values/kind.yaml)
#   -> InferenceService Ready -> helm test -> helm upgrade: a retrain the gate accepts, one it rejects
#   -> faults: the predictor pod, then the PostgreSQL pod deleted; the MLflow pod deleted mid-training (in the
#      accepted upgrade): nothing lost, the alias never moved wrongly
#   -> helm rollback: the previous model answers -> helm uninstall: nothing left
#   -> values/staging.yaml with Helm 3 -> values/prod.yaml under Pod Security `restricted`, its NetworkPolicies
#      probed both ways -> cluster deleted.
#
#   ci/e2e.sh [--provider kind|local] [--dry-run] [--keep-cluster]
#
#   --provider      kind (default; Docker and the internet: pulls kindest/node, cert-manager, KServe, moto) or
#                   local (ci/cluster/: upstream Kubernetes built here, KServe from its Go module, no registry;
#                   needs root). Also E2E_PROVIDER. Everything after "cluster, KServe, images" is shared.
#   --dry-run       print every command, in order, without running any (needs no Docker, no cluster)
#   --keep-cluster  leave the cluster running at the end (also E2E_KEEP_CLUSTER=1)
#
# Environment: E2E_CLUSTER (housing-e2e), E2E_NAMESPACE (housing), E2E_RELEASE (housing),
# E2E_WORKDIR (.local/e2e: kubeconfig, diagnostics), HOUSING_CSV (seed the DVC remote from this file),
# E2E_TOOLS_BIN (.tools/bin: where kind is installed, first on PATH), E2E_HELM3 (a Helm 3 binary for the staging
# install; default: built from its module by ci/cluster/build.sh helm3, pinned in ci/cluster/pins.env).
# Needs: Docker, Go, Python 3.11, make, git. kind is installed pinned into .tools/bin, helm and kubectl by
# `make tools`. On failure, pod logs, `kubectl describe`, events and `kind export logs` land in
# $E2E_WORKDIR/artifacts, and the cluster is deleted unless kept.
set -Eeuo pipefail
trap 'echo "e2e: line $LINENO: command failed: $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# --- pins: everything this script installs beyond our own chart -------------------------------------------
KIND_VERSION=v0.33.0
KIND_NODE_IMAGE=kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0
CERT_MANAGER_CHART=oci://quay.io/jetstack/charts/cert-manager
CERT_MANAGER_VERSION=v1.21.2
KSERVE_CRD_CHART=oci://ghcr.io/kserve/charts/kserve-crd
KSERVE_CHART=oci://ghcr.io/kserve/charts/kserve
KSERVE_VERSION=v0.16.0
S3_MANIFEST=ci/kind/s3.yaml # moto server, image pinned inside

# --- what we deploy --------------------------------------------------------------------------------------
CLUSTER=${E2E_CLUSTER:-housing-e2e}
NS=${E2E_NAMESPACE:-housing}
RELEASE=${E2E_RELEASE:-housing}
CHART=charts/housing-mlops
VALUES=values/kind.yaml
ISVC=housing-model
# The S3-compatible store runs in its own namespace (ci/kind/s3.yaml); values/kind.yaml expects, in the release
# namespace, the Service `minio` (port 9000) and the Secret `minio-credentials`, the bucket `housing-mlops` and the
# DVC remote s3://housing-mlops/dvc: this script provides exactly those.
S3_NS=housing-s3
S3_HOST=s3.${S3_NS}.svc.cluster.local
S3_ENDPOINT=http://minio.${NS}:9000
S3_SECRET=minio-credentials
S3_ACCESS_KEY=e2e-access-key # moto accepts any credentials
S3_SECRET_KEY=e2e-secret-key
DVC_REMOTE=s3://housing-mlops/dvc
MLFLOW_URL=http://${RELEASE}-mlflow.${NS}.svc.cluster.local:5000
MODEL_NAME=housing-model # global.model.name
# values/staging.yaml and values/prod.yaml, each in its own namespace with ci/overlays/<env>.yaml on top: S3 is the
# in-cluster store (static keys instead of IRSA), default StorageClass, CPU requests a 2-core node can schedule.
STAGING_NS=housing-staging
PROD_NS=housing-prod
CLIENTS_NS=housing-clients # labelled as values/prod.yaml's predictor clients: may call the predictor
OUTSIDE_NS=housing-outside # not labelled: may not
MLFLOW_AUTH_SECRET=housing-mlops-mlflow-auth # values/prod.yaml: created beforehand, never in values
DB_SECRET=housing-mlops-db
E2E_MLFLOW_USER=e2e-admin
E2E_MLFLOW_PASSWORD=e2e-mlflow-password
E2E_DB_PASSWORD=e2e-db-password
VERSION_ANNOTATION=housing-mlops.io/model-version # set by the promotion/rollback hooks (hooks/.../kube.py)
E2E_LABEL=app.kubernetes.io/part-of=housing-mlops-e2e # what this script creates itself (not the chart)
S3_ENV=(--env="AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY" --env="AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
  --env="AWS_DEFAULT_REGION=us-east-1" --env="AWS_ENDPOINT_URL=$S3_ENDPOINT")
MLFLOW_AUTH_ENV=() # the release's MLflow credentials, when it asks for them (prod)
# The e2e's own pods run as the chart's do, so that Pod Security `restricted` admits them (kubectl run
# --override-type=strategic merges this into the pod it generates, whose container is named after the pod).
restricted_overrides() { # restricted_overrides POD
  local pod='"securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,'
  pod+=' "seccompProfile": {"type": "RuntimeDefault"}}, "automountServiceAccountToken": false'
  local container='"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}'
  printf '{"apiVersion": "v1", "spec": {%s, "containers": [{"name": "%s", %s}]}}' "$pod" "$1" "$container"
}
MLFLOW_CLIENT_LABEL=housing-mlops.io/mlflow-client=true # the chart's MLflow NetworkPolicy admits pods with it
# the chart's selector labels of a component's pods (its NetworkPolicies select them)
POD_LABELS_TRAINING=app.kubernetes.io/name=housing-mlops,app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=training
POD_LABELS_TESTS=app.kubernetes.io/name=housing-mlops,app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=tests
# The second dataset version: the first minus its last 640 rows.
DATA_V2_PY='import sys, pandas as pd
frame = pd.read_csv(sys.argv[1])
frame.iloc[: len(frame) - 640].to_csv(sys.argv[2], index=False)'
# A TCP connect from inside a pod: exit 0 connected, 1 refused or timed out for 20 s (a NetworkPolicy), 2 the
# name did not resolve (which says nothing about policies, so it fails the check). It keeps trying for 20 s:
# kube-router allows a new pod only once its IP is in the policy's ipset, a second or two after the pod starts
# (measured: an allowed MLflow client was refused when it connected at once, let in 5 s later).
# METRICS_PY URL: MLServer's Prometheus endpoint answers and has counted successful inference requests
METRICS_PY='import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=30).read().decode()
lines = [l for l in text.splitlines() if l.startswith("model_infer_request_success_total")]
print("\n".join(lines) or "no model_infer_request_success_total in " + sys.argv[1])
sys.exit(0 if lines and sum(float(l.rsplit(" ", 1)[1]) for l in lines) > 0 else 1)'
PROBE_PY='import socket, sys, time
# HOST PORT [WANT [HOLD [WITHIN]]]: exit 0 open, 1 blocked, 2 unresolved. WANT=open: connected once within WITHIN s
# (20). WANT=blocked: refused or dropped for HOLD s in a row (20) within WITHIN s (60): a pod may start before its
# own policy applies (Kubernetes allows it; kube-router programs a new pod a moment later), so a success resets it.
host, port = sys.argv[1], int(sys.argv[2])
want = sys.argv[3] if len(sys.argv) > 3 else "open"
hold = float(sys.argv[4]) if len(sys.argv) > 4 else 20
within = float(sys.argv[5]) if len(sys.argv) > 5 else (60 if want == "blocked" else 20)
try:
    addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
except OSError as exc:
    print(f"{host}: does not resolve: {exc}"); sys.exit(2)
start, failing_since, seen_open = time.monotonic(), None, False
while True:
    try:
        socket.create_connection(addr[:2], timeout=5).close()
        if want != "blocked":
            print(f"{host}:{port} open"); sys.exit(0)
        failing_since, seen_open = None, True
    except OSError as exc:
        now = time.monotonic()
        failing_since = now if failing_since is None else failing_since
        if want != "blocked" and now - start >= within:
            print(f"{host}:{port} blocked for {within:.0f} s: {exc}"); sys.exit(1)
        if want == "blocked" and now - failing_since >= hold:
            note = " (open at first: the policy came a moment after the pod)" if seen_open else ""
            print(f"{host}:{port} blocked for {hold:.0f} s{note}: {exc}"); sys.exit(1)
    if failing_since is None and time.monotonic() - start >= within:
        print(f"{host}:{port} open (still after {within:.0f} s)"); sys.exit(0)
    time.sleep(1)'
# Every registered version, its training identity (lifecycle.py; "-" for scheduled runs) and dataset md5: one
# line each, "VERSION IDENTITY MD5".
VERSIONS_PY='from mlflow import MlflowClient
for v in sorted(MlflowClient().search_model_versions("name=%r" % "'"$MODEL_NAME"'"), key=lambda v: int(v.version)):
    print(v.version, v.tags.get("identity", "-"), v.tags.get("dataset.md5", "-"))'

# --- how long each wait may take ----------------------------------------------------------------------------
T_NODES=180s
T_INFRA=10m    # cert-manager, KServe
T_S3=180s
T_INSTALL=20m  # helm install/upgrade: PostgreSQL, MLflow, training, promotion hook
T_ISVC=600s
T_TEST=10m
T_ROLLBACK=15m
T_UNINSTALL=10m
POD_SECONDS=600 # a one-off jobs pod (seed, resolve, infer)
GONE_SECONDS=${E2E_GONE_SECONDS:-300}

WORKDIR=${E2E_WORKDIR:-$ROOT/.local/e2e}
ARTIFACTS=$WORKDIR/artifacts
DRY_RUN=0
KEEP=${E2E_KEEP_CLUSTER:-0}
PROVIDER=${E2E_PROVIDER:-kind}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[i]}
  case $arg in
    --provider=*) PROVIDER=${arg#--provider=} ;;
    --provider)
      i=$((i + 1))
      PROVIDER=${args[i]:-}
      ;;
    --dry-run) DRY_RUN=1 ;;
    --keep-cluster) KEEP=1 ;;
    -h | --help)
      sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "e2e: unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done
case $PROVIDER in
  kind | local) ;;
  *)
    echo "e2e: unknown provider '$PROVIDER' (kind or local)" >&2
    exit 2
    ;;
esac
LOCAL_CLUSTER=ci/cluster/cluster.sh
VALUES_ARGS=(-f "$VALUES")
if [[ $PROVIDER == local ]]; then
  VALUES_ARGS+=(-f values/local.yaml) # imported images, the PostgreSQL stand-in
fi

TOOLS_BIN=${E2E_TOOLS_BIN:-$ROOT/.tools/bin} # kind goes here; `make tools` puts helm and kubectl in .tools/bin
export PATH=$TOOLS_BIN:$ROOT/.tools/bin:$PATH
export KUBECONFIG=$WORKDIR/kubeconfig
if [[ $PROVIDER == local ]]; then
  KUBECONFIG=$("$LOCAL_CLUSTER" kubeconfig)
  # `cluster.sh down` (teardown, also after a failure) copies the cluster's own logs there.
  export CLUSTER_LOGS=${CLUSTER_LOGS:-$WORKDIR/cluster-logs}
fi

# --- helpers ------------------------------------------------------------------------------------------------
exec 3>&1 # the trace goes to the original stdout, even from inside $(...)
PHASE=none
PHASES_RUN=()
CLUSTER_CREATED=0

# fmt ARGS...: the command line as one would type it (words quoted only where the shell needs it)
fmt() {
  local a safe='^[A-Za-z0-9_@%+=:,./-]+$' out=()
  for a in "$@"; do
    if [[ $a =~ $safe ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}

show() { printf '+ %s\n' "$(fmt "$@")" >&3; }

# run CMD...: show it, then run it (a dry run only shows it)
run() {
  show "$@"
  if ((DRY_RUN)); then return 0; fi
  "$@"
}

# capture PLACEHOLDER CMD...: show CMD and print its stdout (a dry run prints PLACEHOLDER instead)
capture() {
  local placeholder=$1
  shift
  show "$@"
  if ((DRY_RUN)); then
    printf '%s\n' "$placeholder"
    return 0
  fi
  "$@"
}

# poll SECONDS WHAT CMD...: run CMD every POLL_EVERY (5) s until it succeeds; fail after SECONDS
poll() {
  local limit=$1 what=$2
  shift 2
  show poll "--timeout=${limit}s" "$@"
  if ((DRY_RUN)); then return 0; fi
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "e2e: timed out after ${limit}s waiting until $what" >&2
      return 1
    fi
    sleep "${POLL_EVERY:-5}"
  done
}

# Each phase's wall time goes to $WORKDIR/timings.json (make bench reports the latest run's).
PHASE_STARTED=$SECONDS
TIMINGS=()
phase_done() {
  if [[ $PHASE != none ]]; then TIMINGS+=("\"$PHASE\": $((SECONDS - PHASE_STARTED))"); fi
  PHASE_STARTED=$SECONDS
}

write_timings() { # write_timings RESULT
  ((DRY_RUN)) && return 0
  local IFS=,
  printf '{"provider": "%s", "result": "%s", "finished": "%s", "total_s": %d, "phases_s": {%s}}\n' \
    "$PROVIDER" "$1" "$(date -u +%FT%TZ)" "$SECONDS" "${TIMINGS[*]}" >"$WORKDIR/timings.json"
}

phase() {
  phase_done
  PHASE=$1
  PHASES_RUN+=("$1")
  printf '\n==> phase %s: %s\n' "$1" "$2" >&3
}

say() { printf '    %s\n' "$*" >&3; }

die() {
  echo "e2e: $*" >&2
  exit 1
}

# expect WHAT ACTUAL WANTED: fail unless equal (a dry run shows the check)
expect_equal() {
  say "check: $1 ($2 == $3)"
  if ((DRY_RUN)); then return 0; fi
  [[ $2 == "$3" ]] || die "$1: got '$2', expected '$3'"
}

expect_differ() {
  say "check: $1 ($2 != $3)"
  if ((DRY_RUN)); then return 0; fi
  [[ $2 != "$3" ]] || die "$1: both are '$2'"
}

# expect_failure WHAT CMD...: CMD must fail (a dry run shows it)
expect_failure() {
  local what=$1
  shift
  show "$@"
  say "check: $what (the command above fails)"
  if ((DRY_RUN)); then return 0; fi
  if "$@" >/dev/null 2>&1; then die "$what: \`$(fmt "$@")\` succeeded"; fi
}

pod_done() { # pod_done NAME [NAMESPACE]: the pod has finished, one way or the other
  local p
  p=$(kubectl get pod "$1" -n "${2:-$NS}" -o jsonpath='{.status.phase}' --request-timeout=30s)
  [[ $p == Succeeded || $p == Failed ]]
}

# target NAMESPACE: the release namespace the next steps work in (its S3 alias, MLflow URL, credentials)
target() {
  NS=$1
  S3_ENDPOINT=http://minio.${NS}:9000
  MLFLOW_URL=http://${RELEASE}-mlflow.${NS}.svc.cluster.local:5000
  S3_ENV=(--env="AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY" --env="AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
    --env="AWS_DEFAULT_REGION=us-east-1" --env="AWS_ENDPOINT_URL=$S3_ENDPOINT")
  MLFLOW_AUTH_ENV=()
}

# prepare_namespace [LABEL=VALUE...]: create $NS (with the labels) and what every values file expects in it: the
# S3 store as Service minio:9000 and its keys in Secret minio-credentials (annotated for KServe's pinned mode)
prepare_namespace() {
  run kubectl create namespace "$NS"
  if (($#)); then run kubectl label namespace "$NS" "$@"; fi
  run kubectl create service externalname minio -n "$NS" --external-name "$S3_HOST" --tcp=9000:9000
  run kubectl create secret generic "$S3_SECRET" -n "$NS" \
    --from-literal=AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" --from-literal=AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
  run kubectl annotate secret "$S3_SECRET" -n "$NS" "serving.kserve.io/s3-endpoint=minio.$NS:9000" \
    serving.kserve.io/s3-usehttps=0 # used in pinned mode (KServe's own storage initializer)
  run kubectl label service/minio "secret/$S3_SECRET" -n "$NS" "$E2E_LABEL"
}

# jobs_pod NAME [--env=K=V...] [--command] ARGS...: run `housing-mlops ARGS` (--command: ARGS as the command) once
# in the jobs image with MLflow's URL (and the given env), as an MLflow client under Pod Security `restricted`;
# wait for it, keep its output in POD_LOGS and print it; fail unless it succeeded
jobs_pod() {
  local name=$1 status env=() command=()
  shift
  while [[ ${1:-} == --env=* ]]; do
    env+=("$1")
    shift
  done
  if [[ ${1:-} == --command ]]; then
    command=(--command)
    shift
  fi
  run kubectl run "$name" -n "$NS" --image="$JOBS_IMAGE" --image-pull-policy=Never --restart=Never \
    --labels="$E2E_LABEL,$MLFLOW_CLIENT_LABEL" --override-type=strategic --overrides="$(restricted_overrides "$name")" --env=HOME=/tmp \
    --env="MLFLOW_TRACKING_URI=$MLFLOW_URL" ${MLFLOW_AUTH_ENV[@]+"${MLFLOW_AUTH_ENV[@]}"} ${env[@]+"${env[@]}"} \
    ${command[@]+"${command[@]}"} -- "$@"
  poll "$POD_SECONDS" "pod $name has finished" pod_done "$name"
  POD_LOGS=$(capture "<output of housing-mlops $*>" kubectl logs -n "$NS" "pod/$name")
  ((DRY_RUN)) || printf '%s\n' "$POD_LOGS" | sed "s/^/    [$name] /" >&3
  status=$(capture Succeeded kubectl get pod "$name" -n "$NS" -o jsonpath='{.status.phase}')
  run kubectl delete pod "$name" -n "$NS" --wait --timeout=120s
  [[ $status == Succeeded ]] || die "pod $name: $status (housing-mlops $*)"
}

# resolve_production TAG: URI := what the `production` alias points at (`housing-mlops resolve` prints it)
resolve_production() {
  jobs_pod "e2e-resolve-$1" resolve --alias production
  if ((DRY_RUN)); then
    URI="<production at $1>"
    return 0
  fi
  URI=$(grep -E '^s3://' <<<"$POD_LOGS" | tail -n 1 || true)
  [[ -n $URI ]] || die "resolve printed no s3:// URI"
  say "production -> $URI"
}

# The predictor serves what the InferenceService asks for: every spec.predictor annotation (the promotion hook
# patches the model version there) is on the predictor Deployment's pods.
# shellcheck disable=SC2016 # $k/$v are go-template variables, not shell ones
predictor_synced() {
  local want have
  want=$(kubectl get inferenceservice "$ISVC" -n "$NS" --request-timeout=30s \
    -o go-template='{{range $k, $v := .spec.predictor.annotations}}{{$k}}={{$v}}{{"\n"}}{{end}}')
  have=$(kubectl get deployment "$ISVC-predictor" -n "$NS" --request-timeout=30s \
    -o go-template='{{range $k, $v := .spec.template.metadata.annotations}}{{$k}}={{$v}}{{"\n"}}{{end}}')
  [[ -z $want ]] && return 0
  ! grep -vxF -f <(printf '%s\n' "$have") <<<"$want" >/dev/null
}

# wait_serving TAG: the InferenceService is Ready and its predictor has rolled out what the spec asks for;
# SERVED := the model version the promotion/rollback hook annotated it with
wait_serving() {
  run kubectl wait --for=condition=Ready "inferenceservice/$ISVC" -n "$NS" --timeout="$T_ISVC"
  poll "${T_ISVC%s}" "the predictor has the InferenceService's annotations" predictor_synced
  run kubectl rollout status "deployment/$ISVC-predictor" -n "$NS" --timeout="$T_ISVC"
  run kubectl get inferenceservice "$ISVC" -n "$NS" -o wide
  SERVED=$(capture "<version at $1>" kubectl get inferenceservice "$ISVC" -n "$NS" \
    -o "jsonpath={.spec.predictor.annotations.${VERSION_ANNOTATION//./\\.}}")
  [[ -n $SERVED ]] || die "InferenceService $ISVC has no $VERSION_ANNOTATION annotation: no hook rolled it out"
  say "serving: $ISVC model version $SERVED"
}

# registry_versions TAG: VERSIONS := every registered version with its identity ("VERSION IDENTITY" lines); fails
# unless each training identity registered exactly one version (a Job that ran again reused it)
registry_versions() {
  jobs_pod "e2e-versions-$1" --command python3 -c "$VERSIONS_PY"
  if ((DRY_RUN)); then
    VERSIONS="<versions at $1>"
    return 0
  fi
  VERSIONS=$(grep -E '^[0-9]+ ' <<<"$POD_LOGS" || true)
  [[ -n $VERSIONS ]] || die "no registered version of $MODEL_NAME"
  local twice
  twice=$(awk '$2 != "-" {print $2}' <<<"$VERSIONS" | sort | uniq -d)
  [[ -z $twice ]] || die "a training identity registered more than one version ($twice): $VERSIONS"
  say "versions: $(paste -sd, - <<<"$VERSIONS")"
}

infer() { # infer TAG: the predictor answers the V2 request with a sane price
  local url
  url=$(capture "http://$ISVC-predictor.$NS.svc.cluster.local" \
    kubectl get inferenceservice "$ISVC" -n "$NS" -o jsonpath='{.status.address.url}')
  [[ -n $url ]] || die "InferenceService $ISVC has no status.address.url"
  jobs_pod "e2e-infer-$1" infer --url "$url"
}

# probe_start NAME NAMESPACE LABELS HOST PORT WANT: a pod (LABELS, restricted) that connects to HOST:PORT until it
# sees WANT (open|blocked) or its time is up (PROBE_PY)
probe_start() {
  run kubectl run "$1" -n "$2" --image="$JOBS_IMAGE" --image-pull-policy=Never --restart=Never \
    --labels="$E2E_LABEL${3:+,$3}" --override-type=strategic --overrides="$(restricted_overrides "$1")" --command -- \
    python3 -c "$PROBE_PY" "$4" "$5" "$6"
}

# probe_expect NAME NAMESPACE WANT WHAT: the probe pod ended as WANT (open: exit 0; blocked: exit 1)
probe_expect() {
  local code want=0
  [[ $3 == open ]] || want=1
  poll "$POD_SECONDS" "probe $1 has finished" pod_done "$1" "$2"
  run kubectl logs -n "$2" "pod/$1"
  code=$(capture "$want" kubectl get pod "$1" -n "$2" \
    -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')
  expect_equal "$4: $3 (probe exit code)" "$code" "$want"
  run kubectl delete pod "$1" -n "$2" --wait --timeout=120s
}

# leftovers: every object of the release still there: all listable kinds in its namespace (less what this script
# made and what Kubernetes puts in every namespace), its cluster-scoped objects, volumes bound in the namespace.
# Fails (rather than answering "nothing") when the API cannot be read.
leftovers() {
  local kinds found mine cluster pvs
  kinds=$(kubectl api-resources --verbs=list --namespaced -o name --request-timeout=60s) || return 1
  kinds=$(grep -Ev '^events(\.events\.k8s\.io)?$' <<<"$kinds" | paste -sd, -)
  found=$(kubectl get "$kinds" -n "$NS" -o name --request-timeout=60s) || return 1
  mine=$(kubectl get services,secrets,pods -n "$NS" -l "$E2E_LABEL" -o name --request-timeout=60s) || return 1
  cluster=$(kubectl get clusterroles,clusterrolebindings,validatingwebhookconfigurations,\
mutatingwebhookconfigurations,clusterstoragecontainers.serving.kserve.io,clusterservingruntimes.serving.kserve.io \
    -l "app.kubernetes.io/instance=$RELEASE" -o name --request-timeout=60s) || return 1
  pvs=$(kubectl get persistentvolumes --request-timeout=60s \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.claimRef.namespace}{"\n"}{end}') || return 1
  printf '%s\n' "$found" |
    grep -vxF -f <(printf '%s\n' serviceaccount/default configmap/kube-root-ca.crt "$mine") || true
  # cluster-scoped objects are named <namespace>-<release>-... (releases of one name in several namespaces)
  printf '%s\n' "$cluster" | grep -F "/$NS-$RELEASE-" || true
  awk -v ns="$NS" '$2 == ns { print "persistentvolume/" $1 }' <<<"$pvs"
}

nothing_left() {
  local out
  out=$(leftovers) || return 1
  [[ -z $out ]]
}

# only_volume_left: what `persistence.whenDeleted: Retain` keeps and nothing else: one PVC and its volume, and
# the generated PostgreSQL password that opens it (when the chart generated one)
only_volume_left() {
  local out
  out=$(leftovers) || return 1
  [[ $(grep -c '^persistentvolumeclaim/' <<<"$out") == 1 && $(grep -c '^persistentvolume/' <<<"$out") == 1 &&
    $(grep -v '^persistentvolume' <<<"$out" | grep -cvxF "secret/$RELEASE-postgresql") == 0 ]]
}

# --- diagnostics and cleanup (EXIT trap) -------------------------------------------------------------------
diag() { # diag FILE CMD...: run CMD into $ARTIFACTS/FILE, never failing, never hanging
  local file=$1
  shift
  printf '+ %s >> %s\n' "$(fmt "$@")" "$ARTIFACTS/$file" >&3
  if ((DRY_RUN)); then return 0; fi
  timeout 120 "$@" >>"$ARTIFACTS/$file" 2>&1 || true
}

collect_diagnostics() {
  local ns pod
  ((DRY_RUN)) || mkdir -p "$ARTIFACTS"
  diag helm.txt helm list --all-namespaces
  diag helm.txt helm history "$RELEASE" -n "$NS"
  diag helm.txt helm status "$RELEASE" -n "$NS"
  diag helm.txt helm get hooks "$RELEASE" -n "$NS"
  diag cluster.txt kubectl get nodes,namespaces -o wide
  diag cluster.txt kubectl get clusterstoragecontainers,clusterservingruntimes -o wide
  diag cluster.txt kubectl get networkpolicies --all-namespaces -o wide
  # the namespace the run failed in first, then every other one it uses
  for ns in "$NS" $(printf '%s\n' "$MAIN_NS" "$STAGING_NS" "$PROD_NS" "$CLIENTS_NS" "$OUTSIDE_NS" | grep -vxF "$NS") \
    kserve cert-manager "$S3_NS"; do
    diag "$ns-get.txt" kubectl get all,inferenceservices,servingruntimes,jobs,pvc,configmaps,secrets,ingresses \
      -n "$ns" -o wide
    diag "$ns-describe.txt" kubectl describe pods,jobs,deployments,statefulsets,inferenceservices -n "$ns"
    diag "$ns-events.txt" kubectl get events -n "$ns" --sort-by=.lastTimestamp
    if ((DRY_RUN)); then
      diag "$ns-logs.txt" kubectl logs -n "$ns" "pod/<each pod>" --all-containers --prefix --timestamps
      diag "$ns-logs.txt" kubectl logs -n "$ns" "pod/<each pod>" --all-containers --prefix --previous
      continue
    fi
    for pod in $(timeout 60 kubectl get pods -n "$ns" -o name 2>/dev/null || true); do
      diag "$ns-logs.txt" kubectl logs -n "$ns" "$pod" --all-containers --prefix --timestamps
      diag "$ns-logs.txt" kubectl logs -n "$ns" "$pod" --all-containers --prefix --previous
    done
  done
  if [[ $PROVIDER == kind ]]; then
    diag kind-export.txt kind export logs "$ARTIFACTS/kind" --name "$CLUSTER"
  else
    diag local-cluster.txt "$LOCAL_CLUSTER" status # its logs: $CLUSTER_LOGS, when the cluster goes down
  fi
  if ((!DRY_RUN)); then
    echo "e2e: diagnostics in $ARTIFACTS; the last events in $NS:" >&2
    tail -n 30 "$ARTIFACTS/$NS-events.txt" >&2 || true
  fi
}

delete_cluster() {
  if [[ $PROVIDER == local ]]; then
    if ((KEEP)); then
      say "kept: the local cluster (KUBECONFIG=$KUBECONFIG); stop it with: $LOCAL_CLUSTER down"
      return 0
    fi
    run "$LOCAL_CLUSTER" down
    return 0
  fi
  if ((KEEP)); then
    say "kept: kind cluster $CLUSTER (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $CLUSTER"
    return 0
  fi
  run kind delete cluster --name "$CLUSTER"
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  if ((rc != 0)); then
    phase_done
    write_timings "failed in $PHASE"
    echo "e2e: FAILED in phase '$PHASE' (exit $rc); collecting diagnostics" >&2
    if ((CLUSTER_CREATED)); then collect_diagnostics; fi
  fi
  if ((CLUSTER_CREATED)); then delete_cluster; fi
  stop_registry
  exit "$rc"
}

# The local provider's OCI registry (CNCF distribution, built by `make tools`) on a free loopback port: ci/publish.sh
# pushes the chart and images there and signs them; the prod phase installs from it, every image by digest.
REGISTRY_PID=""
start_registry() {
  REGISTRY_ADDR=127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  show "$TOOLS_BIN/registry" serve "$PUBLISH_DIR/registry.yml" "(on $REGISTRY_ADDR, log $PUBLISH_DIR/registry.log)"
  ((DRY_RUN)) && return 0
  rm -rf "$PUBLISH_DIR" && mkdir -p "$PUBLISH_DIR"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$PUBLISH_DIR/blobs" "$REGISTRY_ADDR" >"$PUBLISH_DIR/registry.yml"
  "$TOOLS_BIN/registry" serve "$PUBLISH_DIR/registry.yml" >"$PUBLISH_DIR/registry.log" 2>&1 &
  REGISTRY_PID=$!
  poll 60 "the registry answers on $REGISTRY_ADDR" curl -fsS "http://$REGISTRY_ADDR/v2/"
}
stop_registry() {
  [[ -n $REGISTRY_PID ]] || return 0
  kill "$REGISTRY_PID" 2>/dev/null || true
  wait "$REGISTRY_PID" 2>/dev/null || true
  REGISTRY_PID=""
}

# expect_images_by_digest: every container of the release's pods in $NS (init containers too) asks for one of our
# images from the registry by digest, and what the node runs (imageID) is one of the digests publish.sh pushed.
# Not .status...image: containerd reports there the first name it knows the content by (the tag imported for the
# earlier phases), whatever the pod asked for. The PostgreSQL stand-in is imported, never pulled.
expect_images_by_digest() {
  local selector image id published n=0 m=0
  local specs='{range .items[*]}{range .spec.initContainers[*]}{.image}{"\n"}{end}{range .spec.containers[*]}{.image}{"\n"}{end}{end}'
  local ids='{range .items[*]}{range .status.initContainerStatuses[*]}{.image} {.imageID}{"\n"}{end}{range .status.containerStatuses[*]}{.image} {.imageID}{"\n"}{end}{end}'
  local wanted="" ran=""
  for selector in "app.kubernetes.io/instance=$RELEASE" "serving.kserve.io/inferenceservice=$ISVC"; do
    wanted+=$(capture "" kubectl get pods -n "$NS" -l "$selector" -o "jsonpath=$specs")$'\n' || return 1
    ran+=$(capture "" kubectl get pods -n "$NS" -l "$selector" -o "jsonpath=$ids")$'\n' || return 1
  done
  ((DRY_RUN)) && return 0
  published=$(awk '$1 == "image" {sub(/.*@/, "", $3); print $3}' "$PUBLISH_DIR/published.txt")
  [[ -n $published ]] || die "no image digests in $PUBLISH_DIR/published.txt"
  while read -r image; do
    [[ -n $image && $image != *postgres-standin* ]] || continue
    n=$((n + 1))
    [[ $image == "$REGISTRY_ADDR/"*"@sha256:"* ]] || die "a container asks for $image: not from $REGISTRY_ADDR by digest"
    grep -qxF "${image##*@}" <<<"$published" || die "a container asks for $image: not a digest publish.sh pushed"
  done <<<"$wanted"
  while read -r image id; do
    [[ -n $image && $image != *postgres-standin* ]] || continue
    m=$((m + 1))
    grep -qxF "${id##*@}" <<<"$published" || die "a container of $image runs $id: not a digest publish.sh pushed"
  done <<<"$ran"
  ((n > 0 && m > 0)) || die "no container of $RELEASE found in $NS"
  say "check: $n containers in $NS ask for their image from $REGISTRY_ADDR by digest; the $m running run those digests"
}

# --- the run ------------------------------------------------------------------------------------------------
HELM3_VERSION=$(sed -n 's/^HELM3_VERSION=//p' ci/cluster/pins.env)
HELM3=${E2E_HELM3:-} # Helm 3 (latest 3.x) for the staging install; unset: built by ci/cluster/build.sh helm3
PROVIDER_VALUES=() # on top of every values file: what the provider needs (local: values/local.yaml)
[[ $PROVIDER == local ]] && PROVIDER_VALUES=(-f values/local.yaml)
MAIN_NS=$NS
VERSION=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' hooks/pyproject.toml 2>/dev/null | head -n 1)
VERSION=${VERSION:-unknown}
MLFLOW_IMAGE=housing-mlops/mlflow:$VERSION
JOBS_IMAGE=housing-mlops/jobs:$VERSION
SERVING_IMAGE=housing-mlops/serving:$VERSION
TEST_SERVICES_IMAGE=housing-mlops/test-services:$VERSION # local provider: the S3 store (ci/cluster/s3.yaml)
PG_STANDIN=housing-mlops/postgres-standin:15              # local provider: values/local.yaml
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-housing-mlops/base:bookworm-py3.11}
CHART_VERSION=$(sed -n 's/^version: *//p' "$CHART/Chart.yaml")
PUBLISH_DIR=$WORKDIR/publish # local provider: the registry's storage and log, the cosign keys, digests.yaml
REGISTRY_ADDR=127.0.0.1:0    # set by start_registry

if ((DRY_RUN)); then
  echo "e2e: dry run: every command in order, nothing is run (pins: kind $KIND_VERSION, node $KIND_NODE_IMAGE," \
    "cert-manager $CERT_MANAGER_VERSION, KServe $KSERVE_VERSION)"
else
  trap on_exit EXIT
  mkdir -p "$WORKDIR"
  rm -rf "$ARTIFACTS"
fi

if [[ $PROVIDER == kind ]]; then
  phase preflight "tools (kind $KIND_VERSION pinned into .tools/bin; helm, kubectl by make tools)"
  [[ $VERSION != unknown ]] || ((DRY_RUN)) || die "no version in hooks/pyproject.toml"
  if ((!DRY_RUN)); then
    for tool in docker make go python3 git; do
      command -v "$tool" >/dev/null || die "$tool is required (see docs/cluster.md)"
    done
  fi
  run docker info --format '{{.ServerVersion}}'
  if ((DRY_RUN)) || ! kind version 2>/dev/null | grep -q " $KIND_VERSION "; then
    run timeout 10m env GOBIN="$TOOLS_BIN" go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  run kind version
  run timeout 20m make tools
  if [[ -z ${E2E_HELM3:-} ]]; then
    run timeout 30m ci/cluster/build.sh helm3 # Helm 3, for the staging install
    HELM3=$(capture "<helm3-dir>" ci/cluster/build.sh --print-bin helm3)/helm
  fi
  run "$HELM3" version --short
  run helm version --short
  run kubectl version --client

  phase cluster "create the kind cluster $CLUSTER (Kubernetes ${KIND_NODE_IMAGE#*:v})"
  if ((!DRY_RUN)) && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    die "a kind cluster named $CLUSTER exists: delete it (kind delete cluster --name $CLUSTER) or set E2E_CLUSTER"
  fi
  CLUSTER_CREATED=1
  run kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --config ci/kind/cluster.yaml \
    --kubeconfig "$KUBECONFIG" --wait "$T_NODES"
  run kubectl wait --for=condition=Ready nodes --all --timeout="$T_NODES"

  phase cert-manager "cert-manager $CERT_MANAGER_VERSION (KServe's webhook certificates)"
  run helm install cert-manager "$CERT_MANAGER_CHART" --version "$CERT_MANAGER_VERSION" \
    --namespace cert-manager --create-namespace --set crds.enabled=true --wait --timeout "$T_INFRA"

  phase kserve "KServe $KSERVE_VERSION from its OCI charts, kserve-crd then kserve, Standard (raw Deployment) mode"
  run helm install kserve-crd "$KSERVE_CRD_CHART" --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace --wait --timeout "$T_INFRA"
  run helm install kserve "$KSERVE_CHART" --version "$KSERVE_VERSION" --namespace kserve \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true \
    --wait --timeout "$T_INFRA"
  run kubectl wait --for=condition=Available deployment --all -n kserve --timeout="${T_INFRA}"

  phase s3 "in-cluster S3-compatible store ($S3_ENDPOINT) with the bucket, S3 credentials Secret"
  run kubectl apply -f "$S3_MANIFEST"
  run kubectl rollout status deployment/s3 -n "$S3_NS" --timeout="$T_S3"
  run kubectl wait --for=condition=Complete job/s3-buckets -n "$S3_NS" --timeout="$T_S3"
  run kubectl logs -n "$S3_NS" job/s3-buckets
else
  phase preflight "root, Docker, the pinned tools (make tools), the cluster's binaries (ci/cluster/build.sh)"
  [[ $VERSION != unknown ]] || ((DRY_RUN)) || die "no version in hooks/pyproject.toml"
  ((DRY_RUN)) || [[ $(id -u) == 0 ]] || die "the local provider needs root (kubelet, containerd, iptables)"
  run images/docker-up.sh
  run timeout 20m make tools
  run timeout 60m ci/cluster/build.sh
  [[ -n ${E2E_HELM3:-} ]] || HELM3=$(capture "<helm3-dir>" ci/cluster/build.sh --print-bin helm3)/helm
  run "$HELM3" version --short
  run helm version --short
  run kubectl version --client

  # Before the cluster: the images the chart and the e2e run (imported once the cluster's containerd is up).
  phase images "build $MLFLOW_IMAGE, $JOBS_IMAGE, $SERVING_IMAGE, the test S3 store and the PostgreSQL stand-in"
  run timeout 60m make images
  run timeout 30m images/build.sh test-services
  run timeout 30m docker build -q -t "$PG_STANDIN" --build-arg "BASE_IMAGE=$LOCAL_BASE_IMAGE" ci/cluster/standins/postgres

  phase publish "the chart and images to a loopback OCI registry, cosign-signed, then verified (ci/publish.sh)"
  start_registry
  run env COSIGN_PASSWORD= "$TOOLS_BIN/cosign" generate-key-pair --output-key-prefix "$PUBLISH_DIR/cosign"
  run timeout 20m env COSIGN_PASSWORD= ci/publish.sh --registry "$REGISTRY_ADDR" --plain-http --images \
    --key "$PUBLISH_DIR/cosign.key" --out "$PUBLISH_DIR"
  run timeout 5m ci/verify.sh --registry "$REGISTRY_ADDR" --plain-http --key "$PUBLISH_DIR/cosign.pub" \
    --published "$PUBLISH_DIR/published.txt"

  phase cluster "start the local cluster (upstream Kubernetes, ci/cluster/cluster.sh)"
  if ((!DRY_RUN)) && "$LOCAL_CLUSTER" status | grep -q ' pid '; then
    die "the local cluster is already running: stop it ($LOCAL_CLUSTER down) first"
  fi
  CLUSTER_CREATED=1
  run timeout 20m "$LOCAL_CLUSTER" up
  run "$LOCAL_CLUSTER" trust-registry "$REGISTRY_ADDR"
  run kubectl wait --for=condition=Ready nodes --all --timeout="$T_NODES"
  run timeout 20m "$LOCAL_CLUSTER" import "$MLFLOW_IMAGE" "$JOBS_IMAGE" "$SERVING_IMAGE" "$TEST_SERVICES_IMAGE" \
    "$PG_STANDIN"

  phase kserve "KServe $KSERVE_VERSION from its Go module (CRDs, controller built from cmd/manager), Standard mode"
  run timeout 30m ci/cluster/kserve.sh

  phase s3 "in-cluster S3-compatible store ($S3_ENDPOINT) with the bucket, S3 credentials Secret"
  show kubectl apply -f ci/cluster/s3.yaml "(@VERSION@ = $VERSION)"
  ((DRY_RUN)) || sed "s/@VERSION@/$VERSION/g" ci/cluster/s3.yaml | kubectl apply -f -
  run kubectl rollout status deployment/s3 -n "$S3_NS" --timeout="$T_S3"
fi
prepare_namespace

if [[ $PROVIDER == kind ]]; then
  phase images "build $MLFLOW_IMAGE, $JOBS_IMAGE, $SERVING_IMAGE and load them into kind"
  run timeout 60m make images
  run timeout 20m kind load docker-image --name "$CLUSTER" "$MLFLOW_IMAGE" "$JOBS_IMAGE" "$SERVING_IMAGE"
fi

# The DVC remotes of values/kind.yaml, values/staging.yaml and values/prod.yaml (each in its own bucket).
DVC_REMOTES=("$DVC_REMOTE" s3://housing-mlops-staging/dvc s3://housing-mlops-prod/dvc)
phase seed "seed the DVC remotes ${DVC_REMOTES[*]} (data push from the jobs image)"
if [[ -n ${HOUSING_CSV:-} ]]; then
  say "HOUSING_CSV is set: seeding from $HOUSING_CSV"
  run kubectl run e2e-seed -n "$NS" --image="$JOBS_IMAGE" --image-pull-policy=Never --restart=Never \
    --labels="$E2E_LABEL" "${S3_ENV[@]}" --command -- sleep 900
  run kubectl wait --for=condition=Ready pod/e2e-seed -n "$NS" --timeout=300s
  run timeout 5m kubectl cp "$HOUSING_CSV" "$NS/e2e-seed:/tmp/housing.csv"
  for remote in "${DVC_REMOTES[@]}"; do
    run timeout 10m kubectl exec -n "$NS" e2e-seed -- housing-mlops data push /tmp/housing.csv --repo /app \
      --dvc-remote-url "$remote" --no-synthetic
  done
  # A second version of the dataset (the real one minus its last 640 rows), pushed last to the main remote: the
  # scheduled retrain (dataVersion: latest) trains on it; the release's training Job keeps the image's .dvc.
  run timeout 5m kubectl exec -n "$NS" e2e-seed -- python3 -c "$DATA_V2_PY" /tmp/housing.csv /tmp/housing-v2.csv
  run timeout 2m kubectl exec -n "$NS" e2e-seed -- cp -r /app /tmp/app # its .dvc gets the new md5
  DATA_V2=$(capture "target=data/housing.csv md5=<v2>" timeout 10m kubectl exec -n "$NS" e2e-seed -- \
    housing-mlops data push /tmp/housing-v2.csv --repo /tmp/app --dvc-remote-url "$DVC_REMOTE")
  run kubectl delete pod e2e-seed -n "$NS" --wait --timeout=120s
else
  for i in "${!DVC_REMOTES[@]}"; do
    jobs_pod "e2e-seed-$i" "${S3_ENV[@]}" data push --repo /app --dvc-remote-url "${DVC_REMOTES[i]}" --no-synthetic
  done
  # no local CSV: the second version is a generated dataset (still a schema-valid new version)
  jobs_pod e2e-seed-v2 "${S3_ENV[@]}" --command sh -c "python3 -c 'from housing_mlops.schema import \
synthetic_dataset; synthetic_dataset(rows=20000, seed=3).to_csv(\"/tmp/v2.csv\", index=False)' && cp -r /app /tmp/app \
&& housing-mlops data push /tmp/v2.csv --repo /tmp/app --dvc-remote-url $DVC_REMOTE"
  DATA_V2=$POD_LOGS
fi
DATA_V2_MD5=$(sed -n 's/^target=[^ ]* md5=\([0-9a-f]\{32\}\)$/\1/p' <<<"$DATA_V2" | tail -n 1)
((DRY_RUN)) && DATA_V2_MD5="<v2 md5>"
[[ -n $DATA_V2_MD5 ]] || die "data push of the second dataset version printed no md5: $DATA_V2"
say "second dataset version: md5 $DATA_V2_MD5"

phase install "helm install $RELEASE with $VALUES (trains, then the post-install hook promotes)"
run helm install "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" --wait --timeout "$T_INSTALL"
run kubectl get pods,jobs -n "$NS" -o wide

phase ready "InferenceService $ISVC Ready and serving"
wait_serving install
resolve_production install
URI_INSTALLED=$URI
SERVED_INSTALLED=$SERVED

phase test "helm test --logs (V2 inference + MLflow health and alias)"
run helm test "$RELEASE" -n "$NS" --logs --timeout "$T_TEST"
# helm test asked REST and gRPC; KServe's predictor Service carries REST (80), gRPC and metrics, with the labels
# the chart's ServiceMonitor selects; Prometheus' endpoint has counted those requests.
PORTS=$(capture "http1:80 grpc:9000 metrics:8082" kubectl get service -n "$NS" \
  -l "serving.kserve.io/inferenceservice=$ISVC,component=predictor" \
  -o 'jsonpath={range .items[*].spec.ports[*]}{.name}:{.port} {end}')
expect_equal "the predictor Service's ports" "${PORTS% }" "http1:80 grpc:9000 metrics:8082"
jobs_pod e2e-metrics --command python3 -c "$METRICS_PY" "http://$ISVC-predictor.$NS.svc.cluster.local:8082/metrics"
registry_versions install
VERSIONS_INSTALLED=$VERSIONS

phase fault-predictor "the predictor pod deleted: a new one fetches the alias again and answers"
PREDICTOR_SELECTOR=serving.kserve.io/inferenceservice=$ISVC
OLD_POD=$(capture pod/old kubectl get pods -n "$NS" -l "$PREDICTOR_SELECTOR" -o name)
run kubectl delete -n "$NS" "$OLD_POD" --wait --timeout=120s
run kubectl wait --for=condition=Ready pod -l "$PREDICTOR_SELECTOR" -n "$NS" --timeout="$T_ISVC"
wait_serving fault-predictor
NEW_POD=$(capture pod/new kubectl get pods -n "$NS" -l "$PREDICTOR_SELECTOR" \
  --field-selector=status.phase=Running -o name)
expect_differ "a new predictor pod serves" "$NEW_POD" "$OLD_POD"
expect_equal "the new predictor serves the same version" "$SERVED" "$SERVED_INSTALLED"
# The predictor's start-up (storage initializer fetching mlflow://…@production, MLServer loading it), from the
# pod's creation to its Ready condition.
READY_SPAN=$(capture "<created> <ready>" kubectl get -n "$NS" "$NEW_POD" -o \
  'jsonpath={.metadata.creationTimestamp} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}')
if ((!DRY_RUN)); then
  read -r created ready <<<"$READY_SPAN"
  TIMINGS+=("\"predictor-pod-created-to-ready\": $(($(date -d "$ready" +%s) - $(date -d "$created" +%s)))")
  say "predictor pod created -> Ready: ${TIMINGS[-1]##* }s"
fi
infer fault-predictor

phase fault-postgres "the PostgreSQL pod deleted: its volume keeps every version and the alias"
run kubectl delete pod "$RELEASE-postgresql-0" -n "$NS" --wait --timeout=120s
run kubectl rollout status "statefulset/$RELEASE-postgresql" -n "$NS" --timeout="$T_ISVC"
run kubectl wait --for=condition=Ready "pod/$RELEASE-postgresql-0" -n "$NS" --timeout="$T_ISVC"
registry_versions fault-postgres
expect_equal "every registered version survived" "$VERSIONS" "$VERSIONS_INSTALLED"
resolve_production fault-postgres
expect_equal "production did not move" "$URI" "$URI_INSTALLED"
run helm test "$RELEASE" -n "$NS" --logs --timeout "$T_TEST"

# The MLflow pod is deleted as soon as the accepted upgrade's training pod runs, seconds before the training can register
# anything (it waits for MLflow, pulls the data, fits, then logs): it rides out the restart (its wait for MLflow,
# MLflow client retries) or is retried by its Job; either way one version is registered and the gate decides.
training_started() { # training_started JOB: its pod runs
  [[ $(kubectl get pods -n "$NS" -l "batch.kubernetes.io/job-name=$1" --request-timeout=30s \
    -o 'jsonpath={.items[*].status.phase}') == *Running* ]]
}
# the training Job of the revision Helm applied last (the ConfigMap the hooks read; lifecycle.py)
training_job() { kubectl get configmap "$RELEASE-training" -n "$NS" --request-timeout=30s -o 'jsonpath={.data.job}'; }
new_training_started() { # new_training_started OLD_JOB: the training Job is another one, and its pod runs
  local job
  job=$(training_job) && [[ $job != "$1" ]] && training_started "$job"
}
# training_pods: every training pod of the release (a Job that ran adds one)
training_pods() {
  kubectl get pods -n "$NS" -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=training" \
    --request-timeout=30s -o name | sort
}

# An upgrade that changes nothing the model depends on (lifecycle.py): same identity, same training Job, which
# Helm leaves alone; no pod trains, no version is registered, the hook finds the champion in place.
phase upgrade-unchanged "helm upgrade changing only resources and replicas: no training, no new version"
JOB_INSTALLED=$(capture "$RELEASE-train-<identity>" training_job)
PODS_BEFORE=$(capture "<training pods>" training_pods)
run helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" -f ci/kind/upgrade-unchanged.yaml \
  --wait --timeout "$T_INSTALL"
wait_serving unchanged
expect_equal "the same training Job stands for revision 2" "$(capture "$JOB_INSTALLED" training_job)" "$JOB_INSTALLED"
expect_equal "no training pod ran" "$(capture "$PODS_BEFORE" training_pods)" "$PODS_BEFORE"
registry_versions unchanged
expect_equal "no version was registered" "$VERSIONS" "$VERSIONS_INSTALLED"
expect_equal "the predictor serves the same version" "$SERVED" "$SERVED_INSTALLED"

phase upgrade-accepted "helm upgrade: a retrain the gate accepts, the MLflow pod deleted mid-training; production moves"
show helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" -f ci/kind/upgrade-accepted.yaml \
  --wait --timeout "$T_INSTALL" "&"
UPGRADE_PID=
if ((!DRY_RUN)); then
  helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" -f ci/kind/upgrade-accepted.yaml \
    --wait --timeout "$T_INSTALL" &
  UPGRADE_PID=$!
fi
POLL_EVERY=1 poll "$POD_SECONDS" "the training of revision 3 has started" new_training_started "$JOB_INSTALLED"
JOB_ACCEPTED=$(capture "$RELEASE-train-<accepted>" training_job)
read -ra MLFLOW_PODS <<<"$(capture pod/mlflow kubectl get pods -n "$NS" -l app.kubernetes.io/component=mlflow -o name)"
FAULT_AT=$(date -u +%s)
run kubectl delete -n "$NS" "${MLFLOW_PODS[@]}" --wait=false
if ((!DRY_RUN)); then
  wait "$UPGRADE_PID" || die "helm upgrade failed after the MLflow pod was deleted mid-training"
fi
TRAINED_AT=$(capture 2099-01-01T00:00:00Z kubectl get pods -n "$NS" -l "batch.kubernetes.io/job-name=$JOB_ACCEPTED" \
  -o 'jsonpath={.items[*].status.containerStatuses[0].state.terminated.finishedAt}')
say "check: the training finished after the MLflow pod was deleted (deleted $(date -u -d "@$FAULT_AT" +%T), finished ${TRAINED_AT##* })"
((DRY_RUN)) || (($(date -d "${TRAINED_AT##* }" +%s) > FAULT_AT)) || die "the training had finished before the fault"
run kubectl logs -n "$NS" "job/$JOB_ACCEPTED" --all-containers --tail=30
wait_serving accepted
resolve_production accepted
URI_ACCEPTED=$URI
SERVED_ACCEPTED=$SERVED
expect_differ "the accepted retrain is in production" "$URI_ACCEPTED" "$URI_INSTALLED"
expect_differ "the predictor serves the accepted retrain" "$SERVED_ACCEPTED" "$SERVED_INSTALLED"
registry_versions accepted # and no training registered twice
infer accepted

phase upgrade-rejected "helm upgrade: a worse retrain that the gate rejects; production stays"
# The promotion hook exits 3 on a rejected candidate, which fails the hook and so the release (revision 4):
# that failure is the expected verdict, as long as it is the gate's (exit 3) and nothing else.
REJECTED_RC=0
run helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" -f ci/kind/upgrade-rejected.yaml \
  --wait --timeout "$T_INSTALL" || REJECTED_RC=$?
if ((DRY_RUN || REJECTED_RC != 0)); then
  say "helm upgrade failed (${REJECTED_RC/#0/a non-zero exit}): expected if the gate rejected; was it the gate?"
  run kubectl logs -n "$NS" "job/$RELEASE-promote-4" --tail=20
  HOOK_EXIT=$(capture 3 kubectl get pods -n "$NS" -l "batch.kubernetes.io/job-name=$RELEASE-promote-4" \
    -o 'jsonpath={.items[*].status.containerStatuses[*].state.terminated.exitCode}')
  expect_equal "the promotion hook exited 3: rejected by the gate" "$HOOK_EXIT" 3
fi
wait_serving rejected
resolve_production rejected
expect_equal "the rejected retrain left production alone" "$URI" "$URI_ACCEPTED"
expect_equal "the predictor still serves the accepted retrain" "$SERVED" "$SERVED_ACCEPTED"
registry_versions rejected
VERSIONS_REJECTED=$VERSIONS
infer rejected

# `helm rollback` (to revision 3) after the rejected upgrade: Helm runs revision 3's post-rollback hook, which
# restores what revision 3 served, today's champion: nothing moves. Revision 3's training Job comes back and
# finds its version registered (no training).
phase rollback "helm rollback after the rejected upgrade: the champion keeps serving, nothing trains"
run helm rollback "$RELEASE" -n "$NS" --wait --timeout "$T_ROLLBACK"
wait_serving rollback
resolve_production rollback
expect_equal "production stayed on the accepted retrain" "$URI" "$URI_ACCEPTED"
expect_equal "the predictor serves the accepted retrain" "$SERVED" "$SERVED_ACCEPTED"
registry_versions rollback
expect_equal "nothing was trained" "$VERSIONS" "$VERSIONS_REJECTED"

phase rollback-first "helm rollback to revision 1: exactly what it served, no training, no gate"
run helm rollback "$RELEASE" 1 -n "$NS" --wait --timeout "$T_ROLLBACK"
wait_serving rollback-first
resolve_production rollback-first
expect_equal "the rollback put the first model back" "$URI" "$URI_INSTALLED"
expect_equal "the predictor serves the first model again" "$SERVED" "$SERVED_INSTALLED"
registry_versions rollback-first
expect_equal "nothing was trained" "$VERSIONS" "$VERSIONS_REJECTED"
infer rollback-first
run helm test "$RELEASE" -n "$NS" --logs --timeout "$T_TEST"
run helm history "$RELEASE" -n "$NS"

# Continuous training: the retrain CronJob (enabled by an upgrade that trains nothing itself), run now rather
# than on its schedule, trains on the dataset version pushed last, gates it, moves the alias, rolls the predictor.
phase retrain-scheduled "the retrain CronJob on the newest pushed dataset version: gated, promoted, served"
run helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES_ARGS[@]}" -f ci/kind/schedule.yaml --wait --timeout "$T_INSTALL"
wait_serving schedule-enabled
registry_versions schedule-enabled
expect_equal "enabling the schedule trained nothing" "$VERSIONS" "$VERSIONS_REJECTED"
run kubectl create job e2e-retrain -n "$NS" --from="cronjob/$RELEASE-retrain"
run kubectl wait --for=condition=Complete job/e2e-retrain -n "$NS" --timeout="$T_ISVC"
run kubectl logs -n "$NS" job/e2e-retrain --all-containers --tail=20
wait_serving retrained
expect_differ "the predictor serves the scheduled retrain" "$SERVED" "$SERVED_INSTALLED"
registry_versions retrained
NEWEST=$(capture "<newest> - $DATA_V2_MD5" tail -n 1 <<<"$VERSIONS")
expect_equal "the retrain is the version served" "${NEWEST%% *}" "$SERVED"
expect_equal "it trained on the newest pushed dataset version" "${NEWEST##* }" "$DATA_V2_MD5"
infer retrained

# An alias moved outside Helm (here with the MLflow client, as from the UI): the reconcile CronJob rolls the
# predictor to it, so every replica serves the alias.
phase reconcile "the alias moved outside Helm: the reconcile CronJob rolls the predictor to it"
jobs_pod e2e-move-alias --command python3 -c "from mlflow import MlflowClient
MlflowClient().set_registered_model_alias('$MODEL_NAME', 'production', '$SERVED_INSTALLED')"
run kubectl create job e2e-reconcile -n "$NS" --from="cronjob/$RELEASE-reconcile"
run kubectl wait --for=condition=Complete job/e2e-reconcile -n "$NS" --timeout="$T_ISVC"
run kubectl logs -n "$NS" job/e2e-reconcile --tail=5
wait_serving reconciled
expect_equal "the predictor serves the alias moved outside Helm" "$SERVED" "$SERVED_INSTALLED"
infer reconciled

phase uninstall "helm uninstall: nothing of the release is left"
run helm uninstall "$RELEASE" -n "$NS" --wait --timeout "$T_UNINSTALL"
# The rejected candidate's hook Job is kept on purpose (hook-delete-policy keeps failed hooks, Helm never deletes
# hook resources on uninstall; Kubernetes' TTL controller does after promotion.ttlSecondsAfterFinished, >= 600 s,
# so that its logs and exit code can be read). Check that it is exactly that, then delete it rather than wait.
KEPT=$(capture 600/1 kubectl get job "$RELEASE-promote-4" -n "$NS" \
  -o 'jsonpath={.spec.ttlSecondsAfterFinished}/{.status.failed}')
say "check: the kept hook Job $RELEASE-promote-4 failed and has a TTL (ttl/failed = $KEPT)"
((DRY_RUN)) || [[ $KEPT =~ ^[1-9][0-9]*/[1-9][0-9]*$ ]] || die "hook Job $RELEASE-promote-4: expected failed with a TTL, got '$KEPT'"
run kubectl delete job "$RELEASE-promote-4" -n "$NS" --cascade=foreground --wait --timeout=120s
say "leftovers: every listable kind in $NS, cluster-scoped objects labelled $RELEASE, volumes bound in $NS"
if ! poll "$GONE_SECONDS" "nothing of $RELEASE is left" nothing_left; then
  echo "e2e: left behind by helm uninstall:" >&2
  leftovers >&2 || true
  die "helm uninstall left objects behind"
fi
expect_failure "the release is gone" helm status "$RELEASE" -n "$NS"
run kubectl delete namespace "$NS" --wait --timeout=180s

# uninstall_keeping_volume HELM [--keep-namespace]: `HELM uninstall`, then nothing of the release is left but
# what persistence.whenDeleted=Retain (the default, as in staging and prod) keeps: the PostgreSQL volume (and its
# generated password); then the namespace goes, and the volume with it, unless kept for a reinstall
uninstall_keeping_volume() {
  run "$1" uninstall "$RELEASE" -n "$NS" --wait --timeout "$T_UNINSTALL"
  say "leftovers: the PostgreSQL volume (whenDeleted: Retain) and its password, nothing else"
  if ! poll "$GONE_SECONDS" "only the retained volume of $RELEASE is left" only_volume_left; then
    echo "e2e: left behind by helm uninstall:" >&2
    leftovers >&2 || true
    die "helm uninstall left objects behind (or not the retained volume)"
  fi
  [[ ${2:-} == --keep-namespace ]] || run kubectl delete namespace "$NS" --wait --timeout=180s
}

# expect_bucket URI BUCKET: the model lives where the environment's values put artifacts
expect_bucket() {
  local bucket=${1#s3://}
  expect_equal "the model is in the environment's bucket" "${bucket%%/*}" "$2"
}

# values/staging.yaml with Helm 3, and the lifecycle around installs: a first install whose training fails (a
# dataset that does not exist) fails fast (the hook stops waiting once the training failed: no --wait here,
# which would wait on the InferenceService instead); `helm upgrade --install` then converges (the bootstrap is
# decided by "no champion yet", not by the verb); uninstall keeps the volume and its password; a reinstall opens
# the same database: MLflow comes back with its history and the same champion, and nothing is retrained.
phase staging "values/staging.yaml with Helm 3 (${HELM3_VERSION:-3.x}): failed install, converge, uninstall, reinstall"
target "$STAGING_NS"
prepare_namespace
STAGING_ARGS=(-f values/staging.yaml -f ci/overlays/staging.yaml ${PROVIDER_VALUES[@]+"${PROVIDER_VALUES[@]}"})
FAILING_STARTED=$SECONDS
expect_failure "an install whose training fails fails" "$HELM3" install "$RELEASE" "$CHART" -n "$NS" \
  "${STAGING_ARGS[@]}" --set training.data.path=data/missing.csv --timeout "$T_INSTALL"
((DRY_RUN)) || TIMINGS+=("\"staging-failed-install\": $((SECONDS - FAILING_STARTED))")
HOOK_LOG=$(capture "error: the training of identity <id> failed: <why>" kubectl logs -n "$NS" "job/$RELEASE-promote-1" --tail=5)
say "check: the promotion hook named the failed training ($(tail -n 1 <<<"$HOOK_LOG"))"
((DRY_RUN)) || grep -F 'failed: ' <<<"$HOOK_LOG" | grep -F 'the training of identity' >/dev/null ||
  die "the promotion hook did not stop on the failed training: $HOOK_LOG"
run kubectl delete job "$RELEASE-promote-1" -n "$NS" --wait --timeout=120s # failed hooks are kept on purpose
run "$HELM3" upgrade --install "$RELEASE" "$CHART" -n "$NS" "${STAGING_ARGS[@]}" --wait --timeout "$T_INSTALL"
wait_serving staging
# Helm 3 deletes succeeded test pods (hook-succeeded) before it reads their logs, so `--logs` fails after
# passing tests ("unable to get pod logs"); Helm 4 reads them first. Helm 3 users run it without --logs.
run "$HELM3" test "$RELEASE" -n "$NS" --timeout "$T_TEST"
resolve_production staging
expect_bucket "$URI" housing-mlops-staging
URI_STAGING=$URI
registry_versions staging
VERSIONS_STAGING=$VERSIONS
infer staging
uninstall_keeping_volume "$HELM3" --keep-namespace
run "$HELM3" install "$RELEASE" "$CHART" -n "$NS" "${STAGING_ARGS[@]}" --wait --timeout "$T_INSTALL"
wait_serving staging-reinstalled
registry_versions staging-reinstalled
expect_equal "MLflow came back with its history, nothing retrained" "$VERSIONS" "$VERSIONS_STAGING"
resolve_production staging-reinstalled
expect_equal "the same champion serves" "$URI" "$URI_STAGING"
run "$HELM3" test "$RELEASE" -n "$NS" --timeout "$T_TEST"
SERVED_STAGING=$SERVED # staging keeps running beside prod (phase side-by-side)

phase prod "values/prod.yaml under Pod Security restricted, MLflow auth, 2 replicas; NetworkPolicies both ways"
target "$PROD_NS"
prepare_namespace pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest
run kubectl create secret generic "$MLFLOW_AUTH_SECRET" -n "$NS" \
  --from-literal=username="$E2E_MLFLOW_USER" --from-literal=password="$E2E_MLFLOW_PASSWORD"
run kubectl create secret generic "$DB_SECRET" -n "$NS" --from-literal=password="$E2E_DB_PASSWORD"
run kubectl label "secret/$MLFLOW_AUTH_SECRET" "secret/$DB_SECRET" -n "$NS" "$E2E_LABEL"
expect_failure "Pod Security restricted refuses a privileged pod in $NS" kubectl run e2e-privileged -n "$NS" \
  --image="$JOBS_IMAGE" --image-pull-policy=Never --restart=Never --privileged --command -- true
if [[ $PROVIDER == local ]]; then
  # the chart as published and signed (phase publish), every image by the digest publish.sh pushed
  run helm install "$RELEASE" "oci://$REGISTRY_ADDR/charts/housing-mlops" --version "$CHART_VERSION" --plain-http \
    -n "$NS" -f values/prod.yaml -f ci/overlays/prod.yaml "${PROVIDER_VALUES[@]}" -f "$PUBLISH_DIR/digests.yaml" \
    --set global.image.pullPolicy=IfNotPresent --wait --timeout "$T_INSTALL"
else
  run helm install "$RELEASE" "$CHART" -n "$NS" -f values/prod.yaml -f ci/overlays/prod.yaml \
    ${PROVIDER_VALUES[@]+"${PROVIDER_VALUES[@]}"} --wait --timeout "$T_INSTALL"
fi
MLFLOW_AUTH_ENV=(--env="MLFLOW_TRACKING_USERNAME=$E2E_MLFLOW_USER" --env="MLFLOW_TRACKING_PASSWORD=$E2E_MLFLOW_PASSWORD")
wait_serving prod
run helm test "$RELEASE" -n "$NS" --logs --timeout "$T_TEST"
[[ $PROVIDER != local ]] || expect_images_by_digest
resolve_production prod
expect_bucket "$URI" housing-mlops-prod
# What the install and helm test showed allowed (hooks -> MLflow, MLflow -> PostgreSQL, the storage initializer ->
# MLflow and S3, the test pod -> predictor), now each boundary from the other side too.
run kubectl create namespace "$CLIENTS_NS"
run kubectl label namespace "$CLIENTS_NS" housing-mlops.io/predictor-clients=true "$E2E_LABEL"
run kubectl create namespace "$OUTSIDE_NS"
run kubectl label namespace "$OUTSIDE_NS" "$E2E_LABEL"
MLFLOW_HOST=$RELEASE-mlflow.$NS.svc.cluster.local
DB_HOST=$RELEASE-postgresql.$NS.svc.cluster.local
PREDICTOR_HOST=$ISVC-predictor.$NS.svc.cluster.local
PROBES=( # name namespace labels host port want what
  "e2e-np-client-mlflow $NS $MLFLOW_CLIENT_LABEL $MLFLOW_HOST 5000 open an_MLflow_client_reaches_MLflow"
  "e2e-np-client-db $NS $MLFLOW_CLIENT_LABEL $DB_HOST 5432 blocked only_MLflow_reaches_PostgreSQL"
  "e2e-np-other-mlflow $NS - $MLFLOW_HOST 5000 blocked an_unlabelled_pod_does_not_reach_MLflow"
  "e2e-np-other-predictor $NS - $PREDICTOR_HOST 80 blocked an_unlabelled_pod_does_not_reach_the_predictor"
  "e2e-np-clients-predictor $CLIENTS_NS - $PREDICTOR_HOST 80 open a_predictor-clients_namespace_reaches_it"
  "e2e-np-outside-predictor $OUTSIDE_NS - $PREDICTOR_HOST 80 blocked another_namespace_does_not"
  "e2e-np-clients-grpc $CLIENTS_NS - $PREDICTOR_HOST 9000 open a_predictor-clients_namespace_reaches_gRPC"
  "e2e-np-outside-grpc $OUTSIDE_NS - $PREDICTOR_HOST 9000 blocked another_namespace_does_not_reach_gRPC"
  "e2e-np-clients-metrics $CLIENTS_NS - $PREDICTOR_HOST 8082 blocked only_inference.metrics.from_scrapes"
  # egress (values/prod.yaml restricts it): S3 is open to training, not to a test pod
  "e2e-np-training-s3 $NS $POD_LABELS_TRAINING minio.$NS 9000 open training_reaches_S3"
  "e2e-np-tests-s3 $NS $POD_LABELS_TESTS minio.$NS 9000 blocked a_test_pod_does_not_reach_S3"
)
for probe in "${PROBES[@]}"; do
  read -r name ns labels host port want _ <<<"$probe"
  probe_start "$name" "$ns" "${labels#-}" "$host" "$port" "$want"
done
for probe in "${PROBES[@]}"; do
  read -r name ns _ _ _ want what <<<"$probe"
  probe_expect "$name" "$ns" "$want" "${what//_/ }"
done
run kubectl delete namespace "$CLIENTS_NS" "$OUTSIDE_NS" --wait --timeout=180s

# Two releases in one cluster, each with its own MLflow: each predictor fetched its own model (the mlflow:// URI
# names the release's tracking server and only that release's ClusterStorageContainer matches it).
phase side-by-side "staging and prod side by side: each serves its own model; then both are uninstalled"
CSCS=$(capture "clusterstoragecontainer.serving.kserve.io/$STAGING_NS-$RELEASE-mlflow
clusterstoragecontainer.serving.kserve.io/$PROD_NS-$RELEASE-mlflow" kubectl get clusterstoragecontainers -o name)
expect_equal "one storage container per release" "$(grep -c -- "-$RELEASE-mlflow$" <<<"$CSCS")" 2
for ns in "$STAGING_NS" "$PROD_NS"; do
  STORAGE_URI=$(capture "mlflow://$RELEASE-mlflow.$ns.svc.cluster.local:5000/$MODEL_NAME@production" \
    kubectl get inferenceservice "$ISVC" -n "$ns" -o 'jsonpath={.spec.predictor.model.storageUri}')
  expect_equal "the $ns predictor fetches from its own MLflow" "$STORAGE_URI" \
    "mlflow://$RELEASE-mlflow.$ns.svc.cluster.local:5000/$MODEL_NAME@production"
done
target "$STAGING_NS"
wait_serving staging-beside-prod
expect_equal "staging still serves its own version" "$SERVED" "$SERVED_STAGING"
infer staging-beside-prod
uninstall_keeping_volume "$HELM3"
target "$PROD_NS"
MLFLOW_AUTH_ENV=(--env="MLFLOW_TRACKING_USERNAME=$E2E_MLFLOW_USER" --env="MLFLOW_TRACKING_PASSWORD=$E2E_MLFLOW_PASSWORD")
uninstall_keeping_volume helm

phase teardown "delete the $PROVIDER cluster"
if ((DRY_RUN)); then
  delete_cluster
  printf '\n==> on failure (EXIT trap): diagnostics into %s, then the cluster is deleted\n' "$ARTIFACTS"
  collect_diagnostics
  echo "e2e: dry run done"
  exit 0
fi
trap - EXIT
delete_cluster
stop_registry
phase_done
write_timings passed
echo "e2e: PASSED ${#PHASES_RUN[@]} phases (${PHASES_RUN[*]}; timings: $WORKDIR/timings.json)"
