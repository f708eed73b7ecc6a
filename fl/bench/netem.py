"""Emulated network links for the container backend: `tc netem` on each player's interface.

A player container has one interface (the players' network), so shaping its egress
shapes everything it sends. `docker exec --privileged` grants the capability for the
`tc` call alone; the players themselves run without NET_ADMIN.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from fl.errors import FLError

INTERFACE = "eth0"


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbit: float | None = None
    loss_percent: float = 0.0

    def netem_arguments(self) -> list[str]:
        arguments = ["delay", f"{self.delay_ms}ms", f"{self.jitter_ms}ms"] if self.delay_ms else []
        if self.rate_mbit:
            arguments += ["rate", f"{self.rate_mbit}mbit"]
        if self.loss_percent:
            arguments += ["loss", f"{self.loss_percent}%"]
        return arguments


PROFILES = {
    "lan": NetworkProfile("lan"),
    "wan": NetworkProfile("wan", delay_ms=25, jitter_ms=5, rate_mbit=100, loss_percent=0.1),
    "slow-wan": NetworkProfile("slow-wan", delay_ms=80, jitter_ms=10, rate_mbit=20, loss_percent=0.5),
}


def apply(container: str, profile: NetworkProfile) -> None:
    """Replace whatever shaping `container` had with `profile` (LAN: none)."""
    _tc(container, ["qdisc", "del", "dev", INTERFACE, "root"], check=False)
    arguments = profile.netem_arguments()
    if arguments:
        _tc(container, ["qdisc", "add", "dev", INTERFACE, "root", "netem", *arguments], check=True)


def _tc(container: str, arguments: list[str], check: bool) -> None:
    command = ["docker", "exec", "--privileged", "-u", "0", container, "tc", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise FLError(f"tc on {container} failed: {result.stderr.strip() or result.stdout.strip()}")
