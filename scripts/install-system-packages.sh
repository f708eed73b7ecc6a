#!/usr/bin/env bash
# System packages `make install` needs: Python 3.11 with venv, g++, the headers of libsodium and OpenSSL
# (to build the secure-random op against the installed TensorFlow), tcpdump and headless Chromium for the tests. Installs only what is missing.
set -euo pipefail

missing=()
command -v python3.11 >/dev/null 2>&1 || missing+=(python3.11 python3.11-venv)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ -f /usr/include/sodium.h ] || missing+=(libsodium-dev)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
# the tests capture the players' network to check what crosses it (tests/test_trust_boundary.py)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
# the dashboard's test opens the page in a real browser (tests/test_dashboard.py)
command -v chromium-headless-shell >/dev/null 2>&1 || missing+=(chromium-headless-shell)

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install these with your package manager, then re-run make install: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system packages: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
