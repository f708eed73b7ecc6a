#!/usr/bin/env bash
# Unpack Debian's Prometheus (prometheus, promtool) into build/prometheus/ without installing
# the package, so no system service starts. Used by the local backend, the tests (promtool
# lints metric names) and the offline monitoring image.
set -euo pipefail
out=build/prometheus
if [ -x "$out/prometheus" ] && [ -x "$out/promtool" ]; then
  echo "prometheus: $("$out/prometheus" --version 2>&1 | head -1)"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  $sudo apt-get update -qq
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || { echo "prometheus: apt-get download failed: is the mirror of your apt sources ($(scripts/apt-mirror.sh 2>&1)) reachable?" >&2; exit 1; }
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
mkdir -p "$out"
cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$out/"
echo "prometheus: $("$out/prometheus" --version 2>&1 | head -1) in $out"
