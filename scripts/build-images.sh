#!/usr/bin/env bash
# Build the player and driver images. Base: $BASE if set; else python:3.11-slim when it is
# present or can be pulled; else (no registry) an offline Debian base from debootstrap.
set -euo pipefail
public_base=python:3.11-slim
offline_base=fl-testbed-base:bookworm

if [ -n "${BASE:-}" ]; then
  base=$BASE how="given by BASE"
elif docker image inspect "$public_base" >/dev/null 2>&1 || timeout 60 docker pull -q "$public_base" >/dev/null 2>&1; then
  base=$public_base how="public image"
else
  base=$offline_base how="offline: no registry answered, so Debian via debootstrap + docker import"
  docker image inspect "$offline_base" >/dev/null 2>&1 || images/base/build-offline-base.sh "$offline_base"
fi
echo "images: base $base ($how)"

scripts/make-wheelhouse.sh
for target in player driver; do
  DOCKER_BUILDKIT=0 docker build -q -f images/Dockerfile --build-arg BASE="$base" --target "$target" -t "fl-testbed-$target" . >/dev/null
  echo "images: built fl-testbed-$target ($(docker image inspect -f '{{.Size}}' "fl-testbed-$target" | awk '{printf "%.0f MB", $1/1e6}'))"
done
