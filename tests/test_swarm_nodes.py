"""Docker-in-Docker swarm nodes on this machine: they join, run a task placed on one of them that a container on
this engine reaches across an overlay, and go again leaving the engine as they found it."""

import os
import subprocess
import sys
import uuid

import pytest

from fl.swarm import nodes

pytestmark = pytest.mark.docker

FL = [sys.executable, "-m", "fl"]
PROBE_IMAGE = "fl-testbed-sidecar"  # small, with Python for an HTTP server; the tests load it into the nodes


def fl_swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FL, "swarm", *args], capture_output=True, text=True, timeout=600)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@pytest.fixture
def two_nodes(images):
    """Two nodes with the probe image; whatever the test leaves, `fl swarm down` removes."""
    assert not nodes.listed(), "swarm nodes left over from an earlier run"
    was = swarm_state()
    started = fl_swarm("up", "--nodes", "2", "--load", PROBE_IMAGE)
    assert started.returncode == 0, started.stderr[-1500:]
    yield was
    nodes.down()


def test_a_task_placed_on_a_node_answers_a_container_of_this_engine_across_an_overlay(two_nodes):
    listing = fl_swarm("status")
    assert listing.returncode == 0, listing.stdout
    engines = {name: nodes.engine_host(name) for name in ("fl-swarm-node-1", "fl-swarm-node-2")}
    assert listing.stdout.split() == [
        word for name, engine in engines.items() for word in (name, "ready", f"DOCKER_HOST={engine}", "fl.testbed=1")
    ]
    for name, engine in engines.items():  # each node's engine, from this host, as a host of its own
        answered = subprocess.run(
            ["docker", "info", "--format", "{{.Name}}"], env={**os.environ, "DOCKER_HOST": engine}, capture_output=True, text=True
        )
        assert answered.stdout.strip() == name, answered.stderr
    network, service = f"fl-probe-{uuid.uuid4().hex[:8]}", "fl-probe-http"
    docker("network", "create", "--driver", "overlay", "--attachable", network)
    try:
        docker(
            "service", "create", "--detach", "--name", service, "--network", network, "--endpoint-mode", "dnsrr",
            "--constraint", "node.hostname==fl-swarm-node-2", "--no-resolve-image", "--entrypoint", "python3.11",
            PROBE_IMAGE, "-m", "http.server", "8000",
        )  # fmt: skip
        fetch = (
            "import time, urllib.request\n"
            "for _ in range(120):\n"
            "    try:\n"
            f"        print(urllib.request.urlopen('http://{service}:8000/', timeout=2).status); break\n"
            "    except OSError: time.sleep(0.5)\n"
        )
        answered = docker("run", "--rm", "--network", network, "--entrypoint", "python3.11", PROBE_IMAGE, "-c", fetch)
        assert answered.stdout.split() == ["200"], answered.stderr[-1500:]
        placed = docker("service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}}")
        assert placed.stdout.split() == ["fl-swarm-node-2"]
    finally:
        docker("service", "rm", service, check=False)
        docker("network", "rm", network, check=False)
    resolving = nodes.containers_resolving_names()
    stopped = fl_swarm("down")
    assert stopped.returncode == 0, stopped.stderr[-1500:]
    assert "swarm: removed fl-swarm-node-1, fl-swarm-node-2" in stopped.stdout
    assert not docker("ps", "-a", "--filter", f"label={nodes.NODE_LABEL}", "-q").stdout.strip()
    if two_nodes == "inactive" and not resolving:  # the engine as it was: out of the swarm, no docker_gwbridge
        assert swarm_state() == "inactive" and "left the swarm" in stopped.stdout
        assert docker("network", "inspect", "docker_gwbridge", check=False).returncode != 0
    elif two_nodes == "inactive":  # other containers resolve names: leaving would break them
        assert swarm_state() == "active" and "kept this engine in the swarm" in stopped.stdout


def test_down_keeps_the_swarm_while_other_containers_resolve_names_and_their_names_still_resolve(two_nodes):
    network = f"fl-probe-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    peers = [f"{network}-{index}" for index in range(2)]
    try:
        for name in peers:
            docker("run", "-d", "--name", name, "--network", network, "--entrypoint", "sleep", PROBE_IMAGE, "600")
        stopped = fl_swarm("down")
        assert stopped.returncode == 0, stopped.stderr[-1500:]
        if two_nodes == "inactive":  # the swarm is the test's own: it stays, and says why
            assert "kept this engine in the swarm: leaving it would break name resolution in" in stopped.stdout
            assert "moby/moby#45144" in stopped.stdout and swarm_state() == "active"
        resolved = docker("exec", peers[0], "getent", "hosts", peers[1], check=False)
        assert resolved.returncode == 0 and peers[1] in resolved.stdout
    finally:
        docker("rm", "--force", *peers, check=False)
        docker("network", "rm", network, check=False)


def test_an_image_that_is_not_there_is_refused_before_any_node_starts():
    was = swarm_state()
    refused = fl_swarm("up", "--nodes", "1", "--load", "fl-testbed-no-such-image")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "fl swarm: error: no image fl-testbed-no-such-image on this engine: build it with `make images`"
    )
    assert not nodes.listed() and swarm_state() == was
