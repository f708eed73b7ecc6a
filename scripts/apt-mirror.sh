#!/usr/bin/env bash
# Print the Debian mirror this host's apt already uses (the main archive, not the security one),
# read from its sources (deb822 .sources files or one-line sources.list entries).
# Usage: scripts/apt-mirror.sh [SOURCES_DIR]   (default /etc/apt)
set -euo pipefail
apt_dir=${1:-/etc/apt}
mirror=$(
  {
    cat "$apt_dir"/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
    cat "$apt_dir"/sources.list "$apt_dir"/sources.list.d/*.list 2>/dev/null | awk '/^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }'
  } | grep -v -e '-security' -e '^$' | head -1 || true
)
if [ -z "$mirror" ]; then
  echo "no Debian mirror in $apt_dir/sources.list or $apt_dir/sources.list.d/: set DEBIAN_MIRROR=URL" >&2
  exit 1
fi
echo "${mirror%/}"
