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
scripts/fetch-prometheus.sh
build() {  # image, then docker build arguments
  DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$base" -t "$@" . >/dev/null
  echo "images: built $1 ($(docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'))"
}
for target in player driver sidecar; do
  build "fl-testbed-$target" -f images/Dockerfile --target "$target"
done
build fl-testbed-prometheus -f images/prometheus.Dockerfile
build fl-testbed-swarm-node -f images/swarm-node.Dockerfile

# the tag is defined once, where the Compose file is rendered
grafana=$(sed -n 's/^GRAFANA_IMAGE = "\(.*\)"$/\1/p' fl/backends/docker.py)
: "${grafana:?GRAFANA_IMAGE not found in fl/backends/docker.py}"
if docker image inspect "$grafana" >/dev/null 2>&1 || timeout 60 docker pull -q "$grafana" >/dev/null 2>&1; then
  echo "images: $grafana present: make up starts Grafana"
else
  echo "images: NO GRAFANA: $grafana cannot be pulled (no registry) and Debian ships none; make up runs Prometheus only"
fi
