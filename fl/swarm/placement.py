"""Which swarm node holds which player.

A node's own label `fl.players` (comma-separated player names) pins those players to it;
every other player goes to the least-loaded node labelled `fl.testbed`, data owners first,
so that while nodes remain no two owners share one. A player's TLS sidecar always goes with
it (fl/swarm/stack.py), so their private link never crosses hosts.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from fl.cluster import DATA_OWNER
from fl.errors import FLError
from fl.swarm.nodes import TESTBED_LABEL

PLAYERS_LABEL = "fl.players"


@dataclass(frozen=True)
class Node:
    hostname: str
    state: str  # the swarm's view: ready, down, unknown
    availability: str  # active, pause, drain
    labels: dict[str, str]

    @property
    def schedulable(self) -> bool:
        return self.state == "ready" and self.availability == "active"


def testbed_nodes() -> list[Node]:
    """The swarm's nodes labelled for the testbed, by hostname."""
    listing = ["docker", "node", "ls", "-q", "--filter", f"node.label={TESTBED_LABEL}"]
    ids = subprocess.run(listing, capture_output=True, text=True)
    if ids.returncode != 0:
        raise FLError(f"`docker node ls` failed: {ids.stderr.strip()}; is this engine a swarm manager?")
    if not ids.stdout.split():
        return []
    template = "{{json .Description.Hostname}}|{{json .Status.State}}|{{json .Spec.Availability}}|{{json .Spec.Labels}}"
    inspected = subprocess.run(
        ["docker", "node", "inspect", "--format", template, *ids.stdout.split()], capture_output=True, text=True, check=True
    )
    nodes = [Node(*(json.loads(field) or {} for field in line.split("|"))) for line in inspected.stdout.splitlines()]
    return sorted(nodes, key=lambda node: node.hostname)


def place(players: Sequence[tuple[str, str]], nodes: Sequence[Node]) -> dict[str, str]:
    """Player name -> node hostname, for (name, role) `players`; one line naming what is wrong when it cannot."""
    usable = [node for node in nodes if node.schedulable]
    if not usable:
        raise FLError(
            f"no swarm node labelled {TESTBED_LABEL} is ready: `fl swarm up --nodes 3` makes some on this machine; "
            f"on your hosts, `docker node update --label-add {TESTBED_LABEL}=1 NODE` on the manager"
        )
    names = {name for name, _ in players}
    placement: dict[str, str] = {}
    for node in nodes:
        for name in filter(None, (part.strip() for part in node.labels.get(PLAYERS_LABEL, "").split(","))):
            if name not in names:
                raise FLError(f"node {node.hostname}: label {PLAYERS_LABEL} names {name!r}, not a player of this cluster")
            if name in placement:
                raise FLError(f"{name} is pinned to two nodes ({placement[name]}, {node.hostname}) by their {PLAYERS_LABEL}")
            if not node.schedulable:
                raise FLError(f"{name} is pinned to node {node.hostname}, which is {node.state} and {node.availability}")
            placement[name] = node.hostname
    load = {node.hostname: sum(1 for held in placement.values() if held == node.hostname) for node in usable}
    owners_first = sorted((player for player in players if player[0] not in placement), key=lambda p: p[1] != DATA_OWNER)
    for name, _ in owners_first:
        chosen = min(load, key=lambda hostname: load[hostname])  # the first of the least loaded, in hostname order
        placement[name] = chosen
        load[chosen] += 1
    return {name: placement[name] for name, _ in players}
