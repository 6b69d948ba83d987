#!/usr/bin/env bash
# `make test-images`: build the images, then run the pipeline from them on a user-defined Docker network, the
# way the chart runs it in a cluster:
#   PostgreSQL + S3-compatible server (test-services image) -> mlflow image (`db upgrade`, then the server,
#   PostgreSQL backend, S3 artifacts, --no-serve-artifacts) -> jobs image: data push, train, promote,
#   fetch-model mlflow://housing-model@production -> serving image (housing_mlops.server, KServe-style) on the fetched
#   model -> jobs image: `infer` answers a price.
# Every container runs as the image's non-root user with a read-only root filesystem, a tmpfs /tmp, all
# capabilities dropped and no-new-privileges (what the chart's pods get). Everything this run creates carries
# the label housing-mlops.test-images=<run id> and is removed at exit, also on failure or Ctrl-C; on failure
# the logs of every container are printed first.
#
# Environment: HOUSING_CSV (real dataset; default ../shared/data/housing.csv when present, else the synthetic
# dataset of `data push`), TEST_IMAGES_SKIP_BUILD=1 (use the images as they are), TEST_IMAGES_WAIT (seconds
# to wait for a service, 300), TEST_IMAGES_STEP_TIMEOUT (seconds for one job container, 900), IMAGE_PREFIX,
# IMAGE_TAG (as images/build.sh).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("hooks/pyproject.toml", "rb"))["project"]["version"])')
PREFIX=${IMAGE_PREFIX:-housing-mlops}
TAG=${IMAGE_TAG:-$VERSION}
MLFLOW_IMAGE=$PREFIX/mlflow:$TAG
JOBS_IMAGE=$PREFIX/jobs:$TAG
SERVING_IMAGE=$PREFIX/serving:$TAG
SERVICES_IMAGE=$PREFIX/test-services:$TAG
WAIT=${TEST_IMAGES_WAIT:-300}
STEP_TIMEOUT=${TEST_IMAGES_STEP_TIMEOUT:-900}

RUN=hmi-$(date +%s)-$$
LABEL=housing-mlops.test-images=$RUN
NET=$RUN
DATA_VOLUME=$RUN-data
MODELS_VOLUME=$RUN-models
PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
S3_KEY=test-images-access-key
S3_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
BACKEND_URI=postgresql+psycopg2://mlflow:$PG_PASSWORD@postgres:5432/mlflow
# The pods' security context, as far as `docker run` expresses it.
HARDEN=(--user 10001:10001 --read-only --tmpfs "/tmp:rw,exec,size=1g" --cap-drop ALL
  --security-opt no-new-privileges)

passed=0
failed=0
started=$SECONDS

say() { echo "test-images: $*"; }
ok() {
  passed=$((passed + 1))
  say "ok $passed - $* ($((SECONDS - started)) s)"
}

containers() { docker ps -aq --filter "label=$LABEL"; }

cleanup() {
  local rc=$? id name
  trap - EXIT INT TERM
  if ((rc != 0)); then
    failed=$((failed + 1))
    say "FAILED (exit $rc) at: ${step:-start}; logs of every container of run $RUN:"
    for id in $(containers); do
      name=$(docker inspect --format '{{.Name}} ({{.Config.Image}}, {{.State.Status}}, exit {{.State.ExitCode}})' "$id")
      echo "----- ${name#/} -----"
      docker logs --tail 200 "$id" 2>&1 || true
    done
    echo "----- end of logs -----"
  fi
  say "tearing down run $RUN"
  # shellcheck disable=SC2046 # one argument per id
  [[ -z $(containers) ]] || docker rm -f -v $(containers) >/dev/null || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  docker volume rm "$DATA_VOLUME" "$MODELS_VOLUME" >/dev/null 2>&1 || true
  say "run $RUN took $((SECONDS - started)) s"
  say "$passed passed, $failed failed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for NAME WHAT COMMAND...: run COMMAND every second until it succeeds, at most $WAIT s; fail early when
# container NAME has stopped.
wait_for() {
  local name=$1 what=$2 deadline=$((SECONDS + WAIT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [[ $(docker inspect --format '{{.State.Running}}' "$name" 2>/dev/null) != true ]]; then
      say "$name stopped while waiting for $what"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      say "$what: not ready after $WAIT s"
      return 1
    fi
    sleep 1
  done
}

# jobs STEP ARGS...: one `housing-mlops ARGS` in the jobs image, as the chart's Jobs run it.
jobs() {
  local name=$RUN-jobs-$1
  shift
  timeout --kill-after=10 "$STEP_TIMEOUT" docker run --rm --name "$name" --label "$LABEL" --network "$NET" \
    "${HARDEN[@]}" \
    -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
    -e MLFLOW_S3_ENDPOINT_URL=http://s3:9000 \
    -e AWS_ENDPOINT_URL=http://s3:9000 \
    -e AWS_ACCESS_KEY_ID="$S3_KEY" -e AWS_SECRET_ACCESS_KEY="$S3_SECRET" -e AWS_DEFAULT_REGION=us-east-1 \
    -e HOUSING_DVC_REMOTE_URL=s3://housing-data/dvc -e HOUSING_ARTIFACT_ROOT=s3://mlflow \
    -e HOUSING_TRIGGER="test-images-$RUN" \
    -v "$DATA_VOLUME:/app/data" -v "$MODELS_VOLUME:/models" \
    "${JOBS_EXTRA[@]}" "$JOBS_IMAGE" "$@"
}
JOBS_EXTRA=()

# --- images ------------------------------------------------------------------------------------------------
step="build the images"
if [[ ${TEST_IMAGES_SKIP_BUILD:-0} == 1 ]]; then
  images/docker-up.sh
else
  images/build.sh mlflow jobs serving test-services
fi
ok "images built: $MLFLOW_IMAGE $JOBS_IMAGE $SERVING_IMAGE"

step="image metadata"
for image in "$MLFLOW_IMAGE" "$JOBS_IMAGE" "$SERVING_IMAGE"; do
  user=$(docker image inspect --format '{{.Config.User}}' "$image")
  [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || { say "$image runs as '$user', not a numeric non-root user"; exit 1; }
  version=$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
  [[ $version == "$VERSION" ]] || { say "$image: OCI version label '$version' != $VERSION"; exit 1; }
  say "$image: user $user, version $version, $(($(docker image inspect --format '{{.Size}}' "$image") / 1000000)) MB"
done
ok "images run as numeric non-root users and carry OCI labels"

# --- backing services --------------------------------------------------------------------------------------
step="network and backing services"
docker network create --label "$LABEL" "$NET" >/dev/null
docker run -d --name "$RUN-postgres" --label "$LABEL" --network "$NET" --network-alias postgres "${HARDEN[@]}" \
  -e PG_USER=mlflow -e PG_PASSWORD="$PG_PASSWORD" -e PG_DATABASE=mlflow "$SERVICES_IMAGE" postgres >/dev/null
docker run -d --name "$RUN-s3" --label "$LABEL" --network "$NET" --network-alias s3 "${HARDEN[@]}" \
  -e S3_BUCKETS="mlflow housing-data" "$SERVICES_IMAGE" s3 >/dev/null
logs_say() { docker logs "$1" 2>&1 | grep -q "$2"; }
wait_for "$RUN-postgres" "PostgreSQL" logs_say "$RUN-postgres" "postgres: ready"
ok "PostgreSQL ready"
wait_for "$RUN-s3" "S3 server" logs_say "$RUN-s3" "s3: ready"
ok "S3-compatible server ready, buckets mlflow and housing-data"

# --- MLflow ------------------------------------------------------------------------------------------------
step="mlflow db upgrade"
timeout "$STEP_TIMEOUT" docker run --rm --name "$RUN-mlflow-migrate" --label "$LABEL" --network "$NET" \
  "${HARDEN[@]}" "$MLFLOW_IMAGE" db upgrade "$BACKEND_URI"
ok "mlflow db upgrade"

step="mlflow server"
docker run -d --name "$RUN-mlflow" --label "$LABEL" --network "$NET" --network-alias mlflow "${HARDEN[@]}" \
  -e MLFLOW_S3_ENDPOINT_URL=http://s3:9000 \
  -e AWS_ACCESS_KEY_ID="$S3_KEY" -e AWS_SECRET_ACCESS_KEY="$S3_SECRET" -e AWS_DEFAULT_REGION=us-east-1 \
  "$MLFLOW_IMAGE" server --backend-store-uri "$BACKEND_URI" --default-artifact-root s3://mlflow/ \
  --no-serve-artifacts --host 0.0.0.0 --port 5000 --workers 2 \
  --allowed-hosts "mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000" >/dev/null
mlflow_health() {
  docker exec "$RUN-mlflow" python -c \
    'import urllib.request as u; assert u.urlopen("http://127.0.0.1:5000/health", timeout=5).status == 200'
}
wait_for "$RUN-mlflow" "MLflow /health" mlflow_health
ok "MLflow server healthy (PostgreSQL backend, S3 artifacts)"

# --- jobs: data, train, promote, fetch-model ---------------------------------------------------------------
step="data push"
csv=${HOUSING_CSV:-}
[[ -n $csv || ! -f $ROOT/../shared/data/housing.csv ]] || csv=$ROOT/../shared/data/housing.csv
if [[ -n $csv ]]; then
  csv=$(realpath "$csv")
  say "real dataset: $csv (mounted read-only)"
  JOBS_EXTRA=(-v "$csv:/data/housing.csv:ro")
  jobs data-push data push /data/housing.csv
  target=data/housing.csv
else
  say "no real dataset (HOUSING_CSV, ../shared/data/housing.csv): the synthetic one"
  jobs data-push data push
  target=data/synthetic-housing.csv
fi
JOBS_EXTRA=()
ok "data push ($target)"

step="train"
jobs train train --repo /app --data "$target"
ok "train: registered a version of housing-model"

step="promote"
jobs promote promote --trigger "test-images-$RUN"
ok "promote: production alias set"

step="fetch-model"
jobs fetch-model fetch-model mlflow://housing-model@production /models --wait-timeout 120
docker run --rm --label "$LABEL" "${HARDEN[@]}" -v "$MODELS_VOLUME:/models:ro" --entrypoint ls "$JOBS_IMAGE" \
  -l /models /models/MLmodel
ok "fetch-model: /models/MLmodel"

# --- serving -----------------------------------------------------------------------------------------------
step="serving"
docker run -d --name "$RUN-serving" --label "$LABEL" --network "$NET" --network-alias serving "${HARDEN[@]}" \
  -v "$MODELS_VOLUME:/mnt/models:ro" "$SERVING_IMAGE" >/dev/null
step="infer"
answer=$(jobs infer infer --url http://serving:8080 --wait-timeout "$WAIT") || { echo "$answer"; exit 1; }
echo "$answer"
price=$(grep -io 'price[^0-9]*[0-9][0-9.,]*' <<<"$answer" | tail -n 1 || true)
ok "the serving container answers the V2 request: ${price:-price printed above}"

step="bad request"
# The serving image's runtime answers a request that does not match the signature with 400 and a message
# naming the input (V2 JSON error), and keeps serving.
bad=$(timeout --kill-after=10 "$STEP_TIMEOUT" docker run --rm --label "$LABEL" --network "$NET" "${HARDEN[@]}" \
  --entrypoint python "$JOBS_IMAGE" -c '
import requests
from housing_mlops.schema import CANONICAL_REQUEST
body = {"inputs": [i for i in CANONICAL_REQUEST["inputs"] if i["name"] != "median_income"]}
r = requests.post("http://serving:8080/v2/models/housing-model/infer", json=body, timeout=30)
print(r.status_code, r.json()["error"])
')
[[ $bad == "400 "*median_income* ]] || { echo "expected 400 naming median_income, got: $bad"; exit 1; }
jobs infer-again infer --url http://serving:8080 --wait-timeout "$WAIT" >/dev/null
ok "a request without median_income: $bad; the next request is answered"
