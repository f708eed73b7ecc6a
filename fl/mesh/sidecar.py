"""`python -m fl.mesh.sidecar IDENTITY`: start one identity's TLS sidecar (HAProxy) in its container.

It finds its two addresses (its principal's on the private link, and its own there),
renders the configuration, has HAProxy check it, and becomes HAProxy (master-worker,
foreground), so the container's signals reach HAProxy directly: SIGUSR2 reloads the
configuration and certificates after `fl certs --rotate`, SIGTERM stops it. A child process
relays HAProxy's log to stdout (fl/mesh/log_relay.py).

Imports nothing but the standard library and our TF-free modules: the sidecar image
carries HAProxy, Python and this package, no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from fl.cluster import Cluster
from fl.errors import FLError
from fl.mesh import haproxy, log_relay

CONFIG_FILE = Path("/run/fl-sidecar/haproxy.cfg")
DISCOVERY_SECONDS = 120.0


def discover(principal: str, timeout: float = DISCOVERY_SECONDS) -> haproxy.SidecarAddresses:
    """The principal's address (it may still be starting) and this container's address on the same link."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            address = socket.gethostbyname(principal)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise FLError(
                    f"sidecar: {principal!r} does not resolve after {timeout:.0f}s; is its container on this link?"
                ) from None
            time.sleep(0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))  # no packet is sent: this only asks the kernel which local address routes there
        return haproxy.SidecarAddresses(private=probe.getsockname()[0], principal=address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fl-sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("identity", help="the player (or driver) this sidecar speaks for")
    parser.add_argument("--config", required=True, help="cluster file")
    parser.add_argument("--certificate", required=True, help="this identity's certificate and key (PEM)")
    parser.add_argument("--ca", required=True, help="the cluster CA's certificate (PEM)")
    parser.add_argument(
        "--discovery-seconds",
        type=float,
        default=DISCOVERY_SECONDS,
        help="how long to wait for the principal's name (a swarm resolves a task only once it is healthy)",
    )
    args = parser.parse_args(argv)
    try:
        cluster = Cluster.load(args.config)
        for path in (args.certificate, args.ca):
            if not Path(path).is_file():
                raise FLError(f"sidecar {args.identity}: {path} is missing; `fl up` writes it into this sidecar's mount")
        addresses = discover(args.identity, args.discovery_seconds)
        configuration = haproxy.render(cluster, args.identity, addresses, args.certificate, args.ca)
    except (FLError, ValueError) as error:
        sys.exit(f"fl sidecar: error: {error}")
    CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_FILE.write_text(configuration)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(CONFIG_FILE)], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"fl sidecar: error: HAProxy refuses {CONFIG_FILE}: {(check.stderr or check.stdout).strip()}")
    print(f"sidecar {args.identity}: {cluster.links}; private link {CONFIG_FILE}", flush=True)
    listener = log_relay.bind(haproxy.LOG_PORT)
    if os.fork() == 0:
        try:
            log_relay.relay(listener, sys.stdout.buffer)
        finally:
            os._exit(1)
    listener.close()
    os.execvp("haproxy", ["haproxy", "-W", "-db", "-f", str(CONFIG_FILE)])


if __name__ == "__main__":
    main()
