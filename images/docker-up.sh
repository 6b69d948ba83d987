#!/usr/bin/env bash
# Make sure a Docker engine answers: nothing to do when `docker info` works; otherwise, as root on Debian,
# install docker.io if dockerd is missing and start dockerd in the background (log: $DOCKERD_LOG).
# Extra daemon flags: DOCKERD_ARGS (e.g. --storage-driver=vfs where overlayfs is unavailable).
# The daemon is left running for later builds and runs; stop it with `kill "$(cat /var/run/docker.pid)"`.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/housing-mlops-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

if timeout 20 docker info >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "docker-up: no Docker engine answers and this is not root: start Docker (or join the docker group)" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null; then
  command -v apt-get >/dev/null || { echo "docker-up: dockerd missing and no apt-get: install Docker" >&2; exit 1; }
  echo "docker-up: installing docker.io (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if [[ -f /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  echo "docker-up: dockerd is running but does not answer yet; waiting"
else
  echo "docker-up: starting dockerd (log: $log)"
  # shellcheck disable=SC2086 # DOCKERD_ARGS holds several words
  setsid nohup dockerd ${DOCKERD_ARGS:-} >>"$log" 2>&1 </dev/null &
fi
for ((i = 0; i < wait_s; i++)); do
  if timeout 10 docker info >/dev/null 2>&1; then
    echo "docker-up: Docker engine $(docker version --format '{{.Server.Version}}') ready"
    exit 0
  fi
  sleep 1
done
echo "docker-up: dockerd did not answer within ${wait_s}s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
