"""Emulated network links for the container backend: `tc` on each player's interface to the players' network.

Everything a player sends to another host leaves through that interface (its sidecar's
when links are mutual TLS, so TLS's own bytes are shaped too), so shaping its egress
shapes all it sends. Those containers get NET_ADMIN in their bounding set (a TF server
runs as a non-root user, so it is not effective for it); `tc` runs as root through
`docker exec`. Latency and loss need the kernel's netem qdisc; a rate-only profile uses
tbf, which every kernel with traffic control has.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from fl.errors import FLError


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbit: float | None = None
    loss_percent: float = 0.0

    def qdisc(self) -> list[str]:
        """The `tc qdisc add` arguments after `root`; empty for an unshaped link."""
        if self.delay_ms or self.loss_percent:
            arguments = ["netem", "delay", f"{self.delay_ms}ms", f"{self.jitter_ms}ms"]
            if self.rate_mbit:
                arguments += ["rate", f"{self.rate_mbit}mbit"]
            return [*arguments, "loss", f"{self.loss_percent}%"]
        if self.rate_mbit:
            return ["tbf", "rate", f"{self.rate_mbit}mbit", "burst", "32kbit", "latency", "400ms"]
        return []


PROFILES = {
    "lan": NetworkProfile("lan"),
    "10mbit": NetworkProfile("10mbit", rate_mbit=10),
    "wan": NetworkProfile("wan", delay_ms=25, jitter_ms=5, rate_mbit=100, loss_percent=0.1),
    "slow-wan": NetworkProfile("slow-wan", delay_ms=80, jitter_ms=10, rate_mbit=20, loss_percent=0.5),
}


def apply(container: str, address: str, profile: NetworkProfile) -> None:
    """Replace whatever shaping the interface holding `address` in `container` had with `profile` (LAN: none)."""
    interface = interface_with_address(container, address)
    _tc(container, ["qdisc", "del", "dev", interface, "root"], check=False)
    if profile.qdisc():
        _tc(container, ["qdisc", "add", "dev", interface, "root", *profile.qdisc()], check=True)


def interface_with_address(container: str, address: str) -> str:
    """A sidecar has two interfaces, in an order Docker does not fix: find the one by its address."""
    listed = subprocess.run(["docker", "exec", container, "ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == address:
            return fields[1].split("@")[0]
    raise FLError(f"no interface of {container} holds {address}: {(listed.stderr or listed.stdout).strip()[:200]}")


def _tc(container: str, arguments: list[str], check: bool) -> None:
    result = subprocess.run(["docker", "exec", "-u", "0", container, "tc", *arguments], capture_output=True, text=True)
    if not check or result.returncode == 0:
        return
    message = (result.stderr or result.stdout).strip()
    if "qdisc kind is unknown" in message:
        raise FLError(
            "this kernel has no netem qdisc (sch_netem), so latency and loss cannot be emulated here; "
            "the rate-only profile '10mbit' works without it"
        )
    raise FLError(f"tc on {container} failed: {message}")
