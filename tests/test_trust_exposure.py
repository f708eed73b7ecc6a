"""What the players' network shows on the Compose testbed: only the sidecars' TLS ports answer, and a capture
of real rounds holds TLS records only, with no update, seed or record of any owner in the clear."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from containers import SCENARIOS, container, copy_into, read_until, stdout_lines
from pcap import payload, tcp_streams, tcpdump, tls_record_bytes
from trust import WINDOW_BYTES, project_network, record_windows

from fl.backends import docker
from fl.cluster import DRIVER

pytestmark = pytest.mark.docker
PROBE = SCENARIOS / "port_probe.py"
CAPTURE_SIZE = 50_000  # float32 values per owner update: 200 KB
UPDATE_SEED = 4242
WINDOWS_PER_OWNER = 200


def test_only_the_sidecars_tls_ports_answer_on_the_players_network(compose_cluster, engine):
    """From a container on the players' network: no TF server, no driver, no sidecar relay, no plaintext metrics."""
    closed, open_, plain_gets = [], [], []
    for identity in [*(p.name for p in compose_cluster.players), DRIVER]:
        for network in container(engine, identity).attrs["NetworkSettings"]["Networks"].values():
            closed += [f"tcp:{network['IPAddress']}:{port}" for port in (docker.PLAYER_PORT, docker.METRICS_PORT)]
        closed.append(f"tcp:{identity}:{docker.PLAYER_PORT}")  # the name does not resolve here
        sidecar = docker.sidecar_service(identity)
        closed += [f"tcp:{sidecar}:{port}" for port in (docker.PLAYER_PORT, docker.METRICS_PORT)]  # relays: private link only
        open_.append(f"tcp:{sidecar}:{docker.SIDECAR_METRICS_PORT}")
        open_ += [] if identity == DRIVER else [f"tcp:{sidecar}:{docker.SIDECAR_PORT}"]
        plain_gets.append(f"get:{sidecar}:{docker.SIDECAR_METRICS_PORT}")
    output = engine.containers.run(
        f"{docker.IMAGE}-player",
        ["-c", PROBE.read_text(), *closed, *open_, *plain_gets],
        entrypoint="python3",
        network=project_network(engine, docker.NETWORK),
        remove=True,
    )
    found = json.loads(output.decode().strip().splitlines()[-1])
    assert {target: found[target] for target in open_} == dict.fromkeys(open_, "open")
    assert [target for target in closed if found[target] == "open"] == []
    assert [target for target in plain_gets if found[target] == "metrics"] == []


def bridge(engine, network: str) -> str:
    """The host's bridge interface of a Compose network: where tcpdump sees every frame between its containers."""
    return "br-" + engine.networks.get(project_network(engine, network)).id[:12]


def owner_update_bytes(index: int) -> bytes:
    """What capture_rounds.py makes on owner `index`, recomputed here (stateless: the same on every CPU)."""
    values = tf.random.stateless_uniform([CAPTURE_SIZE], seed=[index, UPDATE_SEED], minval=-4.0, maxval=4.0)
    return values.numpy().tobytes()


def windows(update: bytes, seed: int) -> list[bytes]:
    offsets = np.random.default_rng(seed).choice(len(update) // 4 - WINDOW_BYTES // 4, WINDOWS_PER_OWNER, replace=False)
    return [update[4 * offset : 4 * offset + WINDOW_BYTES] for offset in offsets]


def shard_windows(engine, owner: str, directory: Path) -> list[bytes]:
    return record_windows(container(engine, owner).exec_run(["cat", "/data/train.tfrecord"]).output, directory / owner)


def test_a_capture_of_the_players_network_shows_only_tls_no_update_and_no_seed(compose_cluster, engine, tmp_path):
    """A plaintext and an additive round, and one trained through owner pipelines, captured on the players' bridge
    and, as the control, on data-owner-0's private link, which carries the same calls before TLS; no record of any
    shard crosses either, nor the driver's private link."""
    driver = container(engine, DRIVER)
    driver.exec_run(["rm", "-f", "/tmp/capture-go", "/tmp/capture-stopped"])
    script = copy_into(driver, SCENARIOS / "capture_rounds.py")
    lines = stdout_lines(
        driver.exec_run(["python", script, str(CAPTURE_SIZE), str(UPDATE_SEED)], stream=True, stderr=False).output
    )
    players_pcap, link_pcap = tmp_path / "players.pcap", tmp_path / "link-data-owner-0.pcap"
    driver_pcap = tmp_path / "link-driver.pcap"
    try:
        read_until(lines, "READY")
        with (
            tcpdump(bridge(engine, docker.NETWORK), players_pcap),
            tcpdump(bridge(engine, "link-data-owner-0"), link_pcap),
            tcpdump(bridge(engine, f"link-{DRIVER}"), driver_pcap),
        ):
            driver.exec_run(["touch", "/tmp/capture-go"])
            read_until(lines, "DONE")
    finally:
        driver.exec_run(["touch", "/tmp/capture-go", "/tmp/capture-stopped"])
    seeds = json.loads(read_until(lines, "SEEDS"))
    players, link = tcp_streams(players_pcap), tcp_streams(link_pcap)
    owner_windows = [windows(owner_update_bytes(i), i) for i in range(len(compose_cluster.data_owners))]
    seed_bytes = {bytes.fromhex(seed["bytes"]): seed["owner"] for seed in seeds}
    owners = len(compose_cluster.data_owners)
    assert len(seeds) == owners * (owners - 1) // 2  # one seed per pair of owners

    link_bytes = payload(link)
    found_on_link = sum(window in link_bytes for window in owner_windows[0])
    assert found_on_link >= 0.9 * WINDOWS_PER_OWNER, f"control: only {found_on_link} of data-owner-0's windows on its own link"
    assert all(seed in link_bytes for seed, owner in seed_bytes.items() if owner == "data-owner-0")

    on_the_wire = payload(players)
    assert len(on_the_wire) > 4 * CAPTURE_SIZE * len(compose_cluster.data_owners)  # the updates did cross this network
    assert sum(window in on_the_wire for owner in owner_windows for window in owner) == 0
    assert [owner for seed, owner in seed_bytes.items() if seed in on_the_wire] == []
    record_windows = [window for owner in compose_cluster.data_owners for window in shard_windows(engine, owner.name, tmp_path)]
    to_and_from_driver = payload(tcp_streams(driver_pcap))
    assert len(to_and_from_driver) > 10_000 and len(record_windows) > 100  # the driver did run the rounds
    assert [window for window in record_windows if window in on_the_wire or window in to_and_from_driver] == []
    tls_ports = {docker.SIDECAR_PORT, docker.SIDECAR_METRICS_PORT}  # gRPC and metrics, both mutual TLS
    assert [flow for flow in players if not tls_ports & {flow.source_port, flow.destination_port}] == []
    in_records = sum(map(tls_record_bytes, players.values()))
    captured = sum(len(piece) for pieces in players.values() for piece in pieces)
    assert in_records >= 0.99 * captured, f"{in_records} bytes of {captured} in TLS records"
    assert b"/tensorflow." not in on_the_wire and b"/tensorflow.WorkerService/RecvTensor" in link_bytes
