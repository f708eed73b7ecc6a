"""A player's `/metrics`, served by the same process as its TF server.

Wire bytes come from the player's own network interfaces (/proc/net/dev). In a
container that is its own network namespace, so the counters are this player's
traffic and nothing else's. On the local backend every player shares the host's
interfaces: the counters are then left out and `fl_player_info` says so.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fl.cluster import OWN_NAMESPACE, Cluster, Player


def read_interface_bytes(net_dev: Path = Path("/proc/net/dev")) -> dict[str, tuple[int, int]]:
    """Received and transmitted bytes per interface, loopback excluded."""
    counters = {}
    for line in net_dev.read_text().splitlines()[2:]:
        interface, fields = line.split(":", 1)
        values = fields.split()
        if interface.strip() != "lo":
            counters[interface.strip()] = (int(values[0]), int(values[8]))
    return counters


class PlayerCollector(Collector):
    def __init__(self, player: Player, wire_bytes: str) -> None:
        self.player = player
        self.wire_bytes = wire_bytes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        name = self.player.name
        info = GaugeMetricFamily(
            "fl_player_info",
            "Always 1; says who this player is and whether its wire bytes are its own",
            labels=["player", "role", "wire_bytes"],
        )
        info.add_metric([name, self.player.role, self.wire_bytes], 1)
        yield info
        server_up = GaugeMetricFamily(
            "fl_player_tf_server_up", "1 when this player's TF gRPC server accepts connections", labels=["player"]
        )
        server_up.add_metric([name], 1 if _answers(self.player.port) else 0)
        yield server_up
        if self.wire_bytes != OWN_NAMESPACE:
            return
        received = CounterMetricFamily(
            "fl_player_network_receive_bytes", "Bytes received on this player's network interface", labels=["player", "interface"]
        )
        sent = CounterMetricFamily(
            "fl_player_network_transmit_bytes", "Bytes sent on this player's network interface", labels=["player", "interface"]
        )
        for interface, (rx, tx) in read_interface_bytes().items():
            received.add_metric([name, interface], rx)
            sent.add_metric([name, interface], tx)
        yield received
        yield sent


def start(cluster: Cluster, player: Player) -> int | None:
    """Serve this player's metrics on the port the cluster file gives it; None when it gives none."""
    if cluster.metrics is None or player.name not in cluster.metrics.players:
        return None
    port = int(cluster.metrics.players[player.name].rsplit(":", 1)[1])
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(PlayerCollector(player, cluster.metrics.wire_bytes))
    start_http_server(port, addr=cluster.metrics.listen_host, registry=registry)
    return port


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
