#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm when no container registry is reachable:
# `debootstrap bookworm` + Debian's python3 (3.11, the version the lock is compiled for) -> `docker import`.
#   images/base/build.sh IMAGE[:TAG]
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR). The result carries Debian's python3 at
# /usr/bin/python3 with venv support, CA certificates, tzdata and netbase: what the Dockerfiles expect of a base.
# It also trusts the CA certificates this host added to its own store (EXTRA_CA_DIR, default
# /usr/local/share/ca-certificates), e.g. a TLS-intercepting proxy's, so that builds reach the package index
# the way the host does. This base is for local builds; the official python image is the default for others.
set -euo pipefail

image=${1:?usage: build.sh IMAGE[:TAG]}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
extra_ca=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
suite=bookworm

command -v debootstrap >/dev/null || { echo "build.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }

work=$(mktemp -d /tmp/housing-base.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
root=$work/rootfs

echo "base: debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase \
  --include=python3,python3-venv,ca-certificates,netbase,tzdata \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }

cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES

shopt -s nullglob
cas=("$extra_ca"/*.crt)
shopt -u nullglob
if ((${#cas[@]})); then
  echo "base: trusting ${#cas[@]} extra CA certificate(s) from $extra_ca"
  cp "${cas[@]}" "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi

# Security updates, then trim what a container never uses (as the official slim images do).
chroot "$root" /bin/sh -ec '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -qq -y upgrade >/dev/null 2>&1
  apt-get -qq clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* \
         /usr/share/doc/* /usr/share/man/* /usr/share/info/* /tmp/* /root/.cache
  find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  find /usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +
' || exit 1
# Keep apt lean on later layers, like the official images.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
  >"$root/etc/dpkg/dpkg.cfg.d/docker-nodoc"
: >"$root/etc/hostname"
rm -f "$root/etc/machine-id"

py=$(chroot "$root" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
echo "base: python $py; importing as $image"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.title=housing-mlops-base org.opencontainers.image.description=debootstrap-bookworm-python$py" \
  --message "debootstrap $suite + python3 $py" \
  - "$image" >/dev/null
docker image inspect --format 'base: {{.Id}} {{.Size}} bytes' "$image"
