#!/usr/bin/env bash
# Build the base image without any container registry: debootstrap Debian bookworm with
# Python 3.11 and libsodium from Debian's packages, then `docker import` the tree.
# Usage: images/base/build-offline-base.sh [TAG]   (needs root and debootstrap; the Debian mirror is
# the host's own, from its apt sources, or DEBIAN_MIRROR)
set -euo pipefail

tag=${1:-fl-testbed-base:bookworm}
mirror=${DEBIAN_MIRROR:-$("$(dirname "$0")/../../scripts/apt-mirror.sh")}
packages=python3.11,python3.11-venv,libsodium23,ca-certificates,procps,iproute2

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rootfs=$(mktemp -d /tmp/fl-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "offline base: debootstrap bookworm ($packages) from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
chroot "$rootfs" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq --no-install-recommends ${packages//,/ } >/dev/null
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "offline base: built $tag"
