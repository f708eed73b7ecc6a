#!/bin/sh
# Prometheus runs as nobody. On the docker backend with mutual TLS its own key and certificate
# are mounted at $FL_TLS_MOUNT, readable by root only: copy them to $FL_TLS_COPY for nobody
# alone, then drop to nobody for good.
set -eu
if [ -n "${FL_TLS_MOUNT:-}" ]; then
  install -d -o nobody -g nogroup -m 0700 "$FL_TLS_COPY"
  install -o nobody -g nogroup -m 0400 "$FL_TLS_MOUNT"/* "$FL_TLS_COPY"/
fi
exec setpriv --reuid=nobody --regid=nogroup --clear-groups prometheus "$@"
