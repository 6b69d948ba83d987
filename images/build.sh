#!/usr/bin/env bash
# Build the project's images from the repository root: images/build.sh [NAME...]
#   NAME: mlflow jobs serving (default: all three), test-services (tests/images/services, for test-images) or
#   mlserver-standin (test-only stand-in for KServe's MLServer runtime image, tagged $STANDIN_IMAGE).
# Tags: $IMAGE_PREFIX/NAME:$IMAGE_TAG (housing-mlops/NAME:<version in hooks/pyproject.toml>), what the chart uses.
# Base (BASE_IMAGE): "auto" (default) takes the official $OFFICIAL_BASE when it is present or can be pulled,
# else the local debootstrap base $LOCAL_BASE_IMAGE, built by images/base/build.sh if missing (no registry
# needed). Any other value is passed as is. Build logs: $IMAGES_LOG_DIR/build-NAME.log; IMAGES_PARALLEL
# builds at once (2).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OFFICIAL_BASE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-housing-mlops/base:bookworm-py3.11}
BASE_IMAGE=${BASE_IMAGE:-auto}
IMAGE_PREFIX=${IMAGE_PREFIX:-housing-mlops}
UV_VERSION=${UV_VERSION:-0.13.9}
LOG_DIR=${IMAGES_LOG_DIR:-.local/images}
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("hooks/pyproject.toml", "rb"))["project"]["version"])')
IMAGE_TAG=${IMAGE_TAG:-$VERSION}
# The image KServe v0.20.0's kserve-mlserver ClusterServingRuntime names (images/mlserver-standin/Dockerfile).
STANDIN_IMAGE=${STANDIN_IMAGE:-docker.io/seldonio/mlserver:1.7.1}
REVISION=$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
SOURCE=$(git config --get remote.origin.url 2>/dev/null || echo unknown)

names=("$@")
((${#names[@]})) || names=(mlflow jobs serving)
for name in "${names[@]}"; do
  case $name in
    mlflow | jobs | serving | test-services | mlserver-standin) ;;
    *) echo "build.sh: unknown image '$name' (mlflow, jobs, serving, test-services, mlserver-standin)" >&2; exit 2 ;;
  esac
done

images/docker-up.sh
# Without buildx the Docker CLI refuses BuildKit; the Dockerfiles work with the classic builder too.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
mkdir -p "$LOG_DIR"

if [[ $BASE_IMAGE == auto ]]; then
  if docker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 \
    || timeout 120 docker pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$OFFICIAL_BASE
  else
    BASE_IMAGE=$LOCAL_BASE_IMAGE
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
      echo "images: $OFFICIAL_BASE cannot be pulled; building the local base $BASE_IMAGE (debootstrap)"
      if ! command -v debootstrap >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
      fi
      start=$SECONDS
      images/base/build.sh "$BASE_IMAGE" >"$LOG_DIR/build-base.log" 2>&1 \
        || { tail -n 40 "$LOG_DIR/build-base.log" >&2; echo "images: base build failed" >&2; exit 1; }
      echo "images: base $BASE_IMAGE built in $((SECONDS - start)) s"
    fi
  fi
fi
echo "images: base $BASE_IMAGE, tag $IMAGE_TAG, revision $REVISION"

# build_one NAME: build one image, log to $LOG_DIR/build-NAME.log, leave its exit status in .status-NAME.
build_one() {
  local name=$1 dockerfile image log start rc=0 size
  dockerfile=images/$name/Dockerfile
  image=$IMAGE_PREFIX/$name:$IMAGE_TAG
  [[ $name == test-services ]] && dockerfile=tests/images/services/Dockerfile
  [[ $name == mlserver-standin ]] && image=$STANDIN_IMAGE
  log=$LOG_DIR/build-$name.log
  start=$SECONDS
  docker build --force-rm -f "$dockerfile" -t "$image" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "UV_VERSION=$UV_VERSION" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
    . >"$log" 2>&1 || rc=$?
  if ((rc == 0)); then
    size=$(docker image inspect --format '{{.Size}}' "$image")
    echo "images: $image built in $((SECONDS - start)) s, $((size / 1000000)) MB"
  else
    tail -n 60 "$log" >&2
    echo "images: building $image failed (full log: $log)" >&2
  fi
  echo "$rc" >"$LOG_DIR/.status-$name"
}

# Up to $IMAGES_PARALLEL builds at once (2: downloads and layer commits of one overlap the other's CPU work).
parallel=${IMAGES_PARALLEL:-2}
total=$SECONDS
for name in "${names[@]}"; do
  rm -f "$LOG_DIR/.status-$name"
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  build_one "$name" &
done
wait
failed=0
for name in "${names[@]}"; do
  [[ $(cat "$LOG_DIR/.status-$name" 2>/dev/null) == 0 ]] || failed=1
done
((failed == 0)) || exit 1
echo "images: ${#names[@]} image(s) in $((SECONDS - total)) s"
