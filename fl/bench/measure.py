"""One cluster's measurements: round latency and bytes of each aggregation at each update size.

Runs as the driver of one cluster (TensorFlow allows one per process), so the sweep
starts it once per number of data owners and reads one JSON line per measurement.
A round here is the aggregation stage alone (range check, sharing, secure sum, reveal),
compiled exactly as training runs it (fl/rounds/stages.py), on updates that already sit on the
owners, so model training does not blur the cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import numpy as np
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from fl.aggregation.plaintext import FLOAT32_BYTES
from fl.aggregation.registry import make_aggregation
from fl.cluster import COMPUTE_SERVER, OWN_NAMESPACE, Cluster, Player
from fl.connection import connect
from fl.policies import RangePolicy
from fl.rounds import CompiledAverage

UPDATE_RANGE = 4.0
FRAMEWORK = "fl-testbed"


def owner_updates(cluster: Cluster, size: int) -> dict:
    updates = {}
    for index, owner in enumerate(cluster.data_owners):
        with tf.device(owner.device_name):
            updates[owner] = tf.random.stateless_uniform([size], seed=[index, size], minval=-UPDATE_RANGE, maxval=UPDATE_RANGE)
    return updates


def wire_sent_bytes(cluster: Cluster, players: list[Player]) -> dict[str, float] | None:
    """Each player's transmitted bytes from its own exporter; None where players share the host's interfaces."""
    if cluster.metrics is None or cluster.metrics.wire_bytes != OWN_NAMESPACE:
        return None
    sent = {}
    for player in players:
        address = cluster.metrics.players[player.name]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            text = response.read().decode()
        families = {family.name: family for family in text_string_to_metric_families(text)}
        if "fl_player_network_transmit_bytes" not in families:
            return None
        sent[player.name] = sum(sample.value for sample in families["fl_player_network_transmit_bytes"].samples)
    return sent


def measure(cluster: Cluster, aggregation_name: str, size: int, rounds: int, warmup: int) -> dict:
    aggregation = make_aggregation(aggregation_name, cluster, RangePolicy(value_range=2 * UPDATE_RANGE))
    updates = owner_updates(cluster, size)
    owners = cluster.data_owners
    servers = [player for player in aggregation.players if player.role == COMPUTE_SERVER]
    compiled = CompiledAverage(aggregation, owners, size)
    seconds = []
    before = None
    for index in range(warmup + rounds):
        if index == warmup:
            before = wire_sent_bytes(cluster, owners + servers)
        started = time.perf_counter()
        report = compiled(updates)  # the round is over once the receiver holds the mean
        if not report.accepted:
            raise RuntimeError(f"{aggregation_name} refused the benchmark's updates: {compiled.refusal(report)}")
        if index >= warmup:
            seconds.append(time.perf_counter() - started)
    after = wire_sent_bytes(cluster, owners + servers)
    protocol = compiled.expected_bytes()
    wire = None if before is None or after is None else {name: (after[name] - before[name]) / rounds for name in before}

    def mean_wire(players: list[Player]) -> float | None:
        return None if wire is None or not players else statistics.fmean(wire[player.name] for player in players)

    return {
        "framework": FRAMEWORK,
        "aggregation": aggregation_name,
        "owners": len(owners),
        "size": size,
        "rounds": rounds,
        "median_seconds": statistics.median(seconds),
        "p95_seconds": float(np.percentile(seconds, 95)),
        "protocol_bytes_per_owner": statistics.fmean(protocol[o.name] for o in owners),
        "minimum_bytes_per_owner": aggregation.minimum_sent_bytes(size),
        "plaintext_bytes_per_owner": FLOAT32_BYTES * size,
        "wire_bytes_per_owner": mean_wire(owners),
        "wire_bytes_per_server": mean_wire(servers),
        "wire_bytes_by_server": None if wire is None else {server.name: wire[server.name] for server in servers},
        "backend": cluster.backend,
        "links": "mutual_tls" if cluster.mesh else "plaintext",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="measure aggregations on one running cluster; prints one JSON line each")
    parser.add_argument("cluster_file")
    parser.add_argument("--aggregations", nargs="+", required=True)
    parser.add_argument("--sizes", nargs="+", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    cluster = connect(args.cluster_file)
    for size in args.sizes:
        for aggregation in args.aggregations:
            print(json.dumps(measure(cluster, aggregation, size, args.rounds, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
