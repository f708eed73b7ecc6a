"""A federation of kits on three Docker-in-Docker nodes, each node a host of its own with its own engine: every party
starts its kit with Compose against its node's engine, nothing else, and the driver's kit trains across the nodes;
an outsider on the hosts' network is refused at a party's published port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trust import other_ca_identity, outsider_call

from fl.backends.docker import compose_command
from fl.cluster import DRIVER
from fl.mesh.pki import CA_FILE, IDENTITY_FILE
from fl.swarm import nodes

pytestmark = pytest.mark.docker

FL = [sys.executable, "-m", "fl"]
NODES = 3
# node -> its parties and the port each publishes; the driver publishes none. No two data owners share a node.
PARTIES = {
    "fl-swarm-node-1": {"model-owner": 7443, "data-owner-0": 7444, "server2": 7445, DRIVER: None},
    "fl-swarm-node-2": {"data-owner-1": 7443, "server0": 7444},
    "fl-swarm-node-3": {"data-owner-2": 7443, "server1": 7444},
}
DRIVER_NODE = "fl-swarm-node-1"
READY_SECONDS = 420


def on_node(node: str, *argv: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command of this host acting on `node`'s engine, as a party acts on its own host's."""
    environment = {**os.environ, "DOCKER_HOST": nodes.engine_host(node)}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=environment, timeout=timeout)


def node_address(node: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", node], capture_output=True, text=True, check=True
    ).stdout.strip()


def driver_fl(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return on_node(DRIVER_NODE, *FL, *args, "--state-dir", str(KITS / DRIVER), timeout=timeout)


KITS = Path("/tmp/fl-kit-federation-test")  # the same path on this host and inside the nodes: Compose mounts by it


@pytest.fixture(scope="module")
def federation(images):
    assert not nodes.listed(), "swarm nodes left over from an earlier run"
    subprocess.run(["rm", "-rf", str(KITS)], check=True)
    joined = subprocess.run([*FL, "swarm", "up", "--nodes", str(NODES)], capture_output=True, text=True, timeout=1200)
    assert joined.returncode == 0, joined.stderr[-1500:]
    try:
        nodes.load_images(["fl-testbed-driver"], into=[DRIVER_NODE])
        addresses = [
            f"--address={party}={node_address(node)}:{port}"
            for node, parties in PARTIES.items()
            for party, port in parties.items()
            if port is not None
        ]
        written = subprocess.run([*FL, "kit", "--out", str(KITS), *addresses], capture_output=True, text=True)
        assert written.returncode == 0, written.stderr
        for node, parties in PARTIES.items():  # each party: its directory onto its host, then Compose there
            subprocess.run(["docker", "exec", node, "mkdir", "-p", str(KITS)], check=True)
            for party in parties:
                subprocess.run(["docker", "cp", str(KITS / party), f"{node}:{KITS}/"], check=True, capture_output=True)
                started = on_node(node, *compose_command(), "up", "-d", cwd=KITS / party)
                assert started.returncode == 0, f"{party}: {started.stderr[-1500:]}"
        yield KITS
    finally:
        nodes.down()
        subprocess.run(["rm", "-rf", str(KITS)], check=False)


def wait_until_every_party_answers() -> str:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        shown = driver_fl("status", timeout=120)
        if shown.returncode == 0 or time.monotonic() > deadline:
            return shown.stdout + shown.stderr
        time.sleep(5)


def test_the_drivers_kit_trains_across_the_parties_kits_on_three_hosts(federation):
    shown = wait_until_every_party_answers()
    assert "kit backend (the driver's kit in" in shown, shown
    rows = {line.split()[0]: line for line in shown.splitlines()[2:]}
    for node, parties in PARTIES.items():
        for party, port in parties.items():
            if port is not None:
                assert f" {node_address(node)}:{port} " in rows[party] and "not answering" not in rows[party], shown
    trained = driver_fl("train", "--aggregation", "additive", "--epochs", "10")
    assert trained.returncode == 0, trained.stdout[-1500:] + trained.stderr[-2500:]
    accuracy = float(re.search(r"additive: test accuracy (\d\.\d+)", trained.stdout).group(1))
    assert accuracy >= 0.95, trained.stdout[-1500:]


def test_an_outsider_on_the_hosts_network_is_refused_at_a_partys_published_port(federation, tmp_path):
    import docker as docker_sdk

    engine = docker_sdk.from_env()  # this host's engine: its default bridge is the network the nodes share
    kit = federation / "data-owner-0"
    at = (node_address(DRIVER_NODE), PARTIES[DRIVER_NODE]["data-owner-0"])
    ca = kit / "pki" / "data-owner-0" / CA_FILE

    def call(identity: Path | None) -> dict:
        return outsider_call(engine, tmp_path, identity, ca_file=ca, address=at, network="bridge")

    none, impostor = call(None), call(other_ca_identity(tmp_path, DRIVER))
    assert "alert certificate required" in none["handshake"] and none["grpc"].startswith("UNAVAILABLE"), none
    assert "alert unknown ca" in impostor["handshake"] and impostor["grpc"].startswith("UNAVAILABLE"), impostor
    peer = call(federation / "server0" / "pki" / "server0" / IDENTITY_FILE)  # a party, not the driver: control
    assert peer["handshake"].startswith("accepted") and "403" in peer["grpc"], peer
