"""The swarm backend on three Docker-in-Docker nodes of this machine: the players are spread so that no two data
owners share a node, training across the nodes reaches what it reaches on one engine, and `fl down` removes the
stack and this engine's side."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from containers import REPO, SCENARIOS
from pcap import VXLAN_PORT, payload, tcp_streams, tcpdump, tls_record_bytes
from trust import record_windows

from fl.backends import docker
from fl.backends.swarm import SwarmBackend
from fl.cluster import DRIVER
from fl.swarm import nodes

pytestmark = pytest.mark.docker

FL = [sys.executable, "-m", "fl"]
STATE_DIR = REPO / ".fl-swarm-test"
NODES = 3
OWNERS = 3


ATTACK = SCENARIOS / "attack_from_compute_server.py"


def fl(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([*FL, *args, "--state-dir", str(STATE_DIR)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def swarm_cluster(images):
    assert not nodes.listed(), "swarm nodes left over from an earlier run"
    joined = subprocess.run([*FL, "swarm", "up", "--nodes", str(NODES)], capture_output=True, text=True, timeout=1200)
    assert joined.returncode == 0, joined.stderr[-1500:]
    try:
        started = fl("up", "--backend", "swarm", "--owners", str(OWNERS))
        assert started.returncode == 0, started.stdout[-1500:] + started.stderr[-1500:]
        yield SwarmBackend(STATE_DIR)
    finally:
        fl("down", "--volumes")
        nodes.down()


def status_rows() -> dict[str, str]:
    """Player -> its line in `fl status`."""
    shown = fl("status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return {line.split()[0]: line for line in shown.stdout.splitlines()[2:]}


def placement(rows: dict[str, str]) -> dict[str, str]:
    """Player -> the node its `fl status` line says it runs on."""
    return {player: row.split(" node ", 1)[1].split()[0] for player, row in rows.items()}


def in_task(node: str, service: str, argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`argv` inside the container of `service`'s task, on the node that runs it."""
    label = f"label=com.docker.swarm.service.name={SwarmBackend(STATE_DIR).stack}_{service}"
    task = subprocess.run(["docker", "exec", node, "docker", "ps", "-q", "--filter", label], capture_output=True, text=True)
    assert task.stdout.strip(), f"no task of {service} on {node}"
    command = ["docker", "exec", "-i", node, "docker", "exec", "-i", task.stdout.split()[0], *argv]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=300)


def markers(output: bytes) -> list[str]:
    return [line for line in output.decode(errors="replace").splitlines() if re.fullmatch(r"CONNECTED|READ \d+|WROTE", line)]


def test_status_names_each_players_node_and_no_two_data_owners_share_one(swarm_cluster):
    rows = status_rows()
    where = placement(rows)
    assert set(where.values()) == {nodes.node_name(index) for index in range(1, NODES + 1)}
    assert len({where[f"data-owner-{index}"] for index in range(OWNERS)}) == OWNERS
    assert all("answering" in row and "not answering" not in row for row in rows.values()), rows
    assert all(f"mutual TLS via {player}-tls (running)" in row for player, row in rows.items()), rows


@pytest.mark.parametrize("aggregation", ["additive", "pond"])
def test_training_across_the_nodes_reaches_the_accuracy_of_one_engine(swarm_cluster, aggregation):
    result = REPO / "results" / f"swarm-{aggregation}.json"
    trained = fl("train", "--aggregation", aggregation, "--epochs", "10", "--json", f"results/{result.name}")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    summary = json.loads(result.read_text())
    assert summary["backend"] == "swarm" and summary["test_accuracy"] >= 0.95, summary["test_accuracy"]


def test_a_compute_server_cannot_read_an_owners_data_on_another_node_and_the_driver_can(swarm_cluster):
    """The compute-server attack across hosts: from server0's task, connect to data-owner-0 on another node as a
    driver would; the control is the same script run by the driver, on this engine."""
    where = placement(status_rows())
    assert where["server0"] != where["data-owner-0"]
    attack = ["python", "-", "data-owner-0", "/data/train.tfrecord", "file"]
    refused = in_task(where["server0"], "server0", attack, ATTACK.read_bytes())
    assert markers(refused.stdout) in ([], ["CONNECTED"]) and refused.returncode != 0, refused.stdout
    assert b"status: 403" in refused.stderr, refused.stderr.decode(errors="replace")[-1500:]
    allowed = subprocess.run(
        ["docker", "exec", "-i", swarm_cluster.container(DRIVER), *attack], input=ATTACK.read_bytes(), capture_output=True
    )
    in_task(where["data-owner-0"], "data-owner-0", ["rm", "-f", "/data/planted-by-attacker"])
    assert allowed.returncode == 0, allowed.stderr.decode(errors="replace")[-1500:]
    assert [marker.split()[0] for marker in markers(allowed.stdout)] == ["CONNECTED", "READ", "WROTE"]


def test_a_capture_on_a_nodes_link_shows_only_tls_and_no_record_of_its_owner(swarm_cluster, tmp_path):
    """What leaves data-owner-1's node during training, captured on the node's own interface (VXLAN between the
    nodes, unwrapped): TLS records only, no gRPC method in the clear, none of data-owner-1's records."""
    node = placement(status_rows())["data-owner-1"]
    shard = in_task(node, "data-owner-1", ["cat", "/data/train.tfrecord"]).stdout
    windows = record_windows(shard, tmp_path / "data-owner-1.tfrecord")
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", node], capture_output=True, text=True).stdout)
    capture = tmp_path / f"{node}.pcap"
    with tcpdump("eth0", capture, f"udp port {VXLAN_PORT}", network_of=pid):
        trained = fl("train", "--aggregation", "additive", "--epochs", "2")
    assert trained.returncode == 0, trained.stdout[-1500:] + trained.stderr[-1500:]
    streams = tcp_streams(capture)
    on_the_wire = payload(streams)
    assert len(on_the_wire) > 100_000 and len(windows) > 50  # the rounds did cross this link; the shard was read
    tls_ports = {docker.SIDECAR_PORT, docker.SIDECAR_METRICS_PORT}
    assert [flow for flow in streams if not tls_ports & {flow.source_port, flow.destination_port}] == []
    in_records = sum(map(tls_record_bytes, streams.values()))
    captured = sum(len(piece) for pieces in streams.values() for piece in pieces)
    assert in_records >= 0.99 * captured, f"{in_records} bytes of {captured} in TLS records"
    assert b"/tensorflow." not in on_the_wire
    assert [window for window in windows if window in on_the_wire] == []


def test_fl_down_removes_the_stack_and_this_engines_side(swarm_cluster):
    stopped = fl("down", "--volumes")
    assert stopped.returncode == 0, stopped.stderr
    stacks = subprocess.run(["docker", "stack", "ls", "--format", "{{.Name}}"], capture_output=True, text=True).stdout
    assert swarm_cluster.stack not in stacks.split()
    labelled = ["--filter", f"label=com.docker.stack.namespace={swarm_cluster.stack}", "-q"]
    for listing in (["service", "ls"], ["network", "ls"], ["config", "ls"], ["secret", "ls"]):
        assert subprocess.run(["docker", *listing, *labelled], capture_output=True, text=True).stdout == "", listing
    assert not swarm_cluster.is_up(), subprocess.run(
        ["docker", "stack", "ps", swarm_cluster.stack], capture_output=True, text=True
    ).stdout
