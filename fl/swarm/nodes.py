"""Docker-in-Docker nodes joined to a swarm that this machine's engine manages.

Each node is a container running Debian's dockerd (images/swarm-node.Dockerfile), its
images on an anonymous volume of its own with overlay2 (removed with the node). A node
gets every capability but CAP_SYS_RESOURCE, which
this engine itself lacks (`--privileged` fails here with "unable to apply caps"). This
engine is the swarm's manager, advertised on docker0's address, which every node reaches.
`down` leaves the engine as `up` found it: when `up` started the swarm (a label on the
manager says so), the engine leaves it and the docker_gwbridge network goes too, unless
containers run on networks of their own: leaving a swarm breaks name resolution in those
(moby/moby#45144, seen on this engine), so the swarm is kept until they have stopped.

Each node's engine also answers on a unix socket on this host (`engine_host`), so a command
here can act on one node as on a host of its own, e.g. `DOCKER_HOST=... docker compose up -d`
for a party's kit.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fl.backends.docker import require_images
from fl.errors import FLError

IMAGE = "fl-testbed-swarm-node"
NODE_PREFIX = "fl-swarm-node-"
NODE_LABEL = "fl.swarm-node"  # on each node's container, and (fl.testbed) on its swarm node
TESTBED_LABEL = "fl.testbed"
STARTED_LABEL = "fl.swarm-started-by"  # on the manager, when `up` started the swarm
SWARM_PORT = 2377
READY_SECONDS = 60.0
ENGINE_SOCKETS = Path(tempfile.gettempdir()) / "fl-swarm-nodes"  # one directory per node, holding its engine's socket
ENGINE_DIR_IN_NODE = "/fl-engine"
# what a node's dockerd needs from the engine (see the module's docstring)
NODE_RUN_OPTIONS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
)  # fmt: skip


@dataclass(frozen=True)
class Removed:
    nodes: list[str]
    left_swarm: bool
    kept_swarm_because: str | None = None  # why this engine stays in a swarm `up` started


@dataclass(frozen=True)
class SwarmNode:
    name: str  # its container's name, its hostname and its swarm node's hostname
    state: str  # the swarm's view: ready, down, unknown, or absent (not joined)
    labels: dict[str, str]


def docker(*args: str, node: str | None = None) -> str:
    """A docker command on this engine, or inside `node`; its failure is one line naming the command."""
    command = ["docker", *(["exec", node, "docker"] if node else []), *args]
    ran = subprocess.run(command, capture_output=True)
    if ran.returncode != 0:
        detail = ran.stderr.decode(errors="replace").strip().splitlines()
        where = f" on {node}" if node else ""
        raise FLError(f"`docker {' '.join(args)}`{where} failed: {detail[-1] if detail else f'exit {ran.returncode}'}")
    return ran.stdout.decode(errors="replace").strip()


def node_name(index: int) -> str:
    return f"{NODE_PREFIX}{index}"


def up(count: int) -> list[SwarmNode]:
    """`count` nodes, numbered from 1, joined to this engine's swarm as workers labelled for the testbed."""
    if count < 1:
        raise FLError(f"--nodes {count}: at least 1")
    require_images([IMAGE])
    existing = listed()
    if existing:
        raise FLError(f"swarm nodes are already up ({', '.join(existing)}): `fl swarm down` first")
    manager = _manager_address()
    try:  # nothing half made: a node that fails takes the others down with it
        token = docker("swarm", "join-token", "-q", "worker")
        for index in range(1, count + 1):
            name = node_name(index)
            sockets = ENGINE_SOCKETS / name
            sockets.mkdir(parents=True, exist_ok=True)
            docker(
                "run", "-d", "--name", name, "--hostname", name, "--label", f"{NODE_LABEL}=1", *NODE_RUN_OPTIONS,
                "-v", f"{sockets}:{ENGINE_DIR_IN_NODE}", IMAGE,
                "-H", "unix:///var/run/docker.sock", "-H", f"unix://{ENGINE_DIR_IN_NODE}/docker.sock",
            )  # fmt: skip
        for index in range(1, count + 1):
            _join(node_name(index), token, manager)
    except FLError:
        down()
        raise
    return status()


def _join(name: str, token: str, manager: str) -> None:
    _wait(lambda: _daemon_answers(name), f"{name}'s dockerd did not answer within {READY_SECONDS:g} s")
    docker("swarm", "join", "--token", token, f"{manager}:{SWARM_PORT}", node=name)
    _wait(lambda: _swarm_state(name) == "ready", f"{name} did not become ready in the swarm within {READY_SECONDS:g} s")
    docker("node", "update", "--label-add", f"{TESTBED_LABEL}=1", name)


def engine_host(name: str) -> str:
    """The DOCKER_HOST by which this host's docker commands act on node `name`'s engine."""
    return f"unix://{ENGINE_SOCKETS / name / 'docker.sock'}"


def load_images(images: list[str], into: list[str] | None = None) -> None:
    """Every image into every node (or the nodes `into`), with `docker save` once and `docker load` on each: no
    registry needed."""
    with tempfile.TemporaryFile() as archive:
        saved = subprocess.run(["docker", "save", *images], stdout=archive, stderr=subprocess.PIPE, text=False)
        if saved.returncode != 0:
            raise FLError(f"`docker save {' '.join(images)}` failed: {saved.stderr.decode(errors='replace').strip()}")
        for name in listed() if into is None else into:
            archive.seek(0)
            loaded = subprocess.run(["docker", "exec", "-i", name, "docker", "load", "-q"], stdin=archive, capture_output=True)
            if loaded.returncode != 0:
                raise FLError(f"loading {' '.join(images)} into {name} failed: {loaded.stderr.decode(errors='replace').strip()}")


def down() -> Removed:
    """Remove the nodes from the swarm and the engine; leave the swarm if `up` started it and leaving is harmless."""
    removed = []
    for name in listed():
        if _swarm_state(name) != "absent":
            docker("node", "rm", "--force", name)
        docker("rm", "--force", "--volumes", name)
        shutil.rmtree(ENGINE_SOCKETS / name, ignore_errors=True)
        removed.append(name)
    if not (_swarm_active() and _manager_labels().get(STARTED_LABEL) == "fl"):
        return Removed(removed, left_swarm=False)
    resolving = containers_resolving_names()
    if resolving:
        return Removed(
            removed,
            left_swarm=False,
            kept_swarm_because=(
                f"leaving it would break name resolution in {len(resolving)} running containers (moby/moby#45144), "
                f"{', '.join(resolving[:3])}{' ...' if len(resolving) > 3 else ''}; `fl swarm down` again once they stop"
            ),
        )
    _leave()
    return Removed(removed, left_swarm=True)


def containers_resolving_names() -> list[str]:
    """Running containers on a network with the engine's name resolution (any but bridge, host, none)."""
    listing = docker("ps", "--format", "{{.Names}} {{.Networks}}").splitlines()
    named = [line.split(" ", 1) for line in listing if " " in line]
    return sorted(name for name, networks in named if set(networks.split(",")) - {"bridge", "host", "none"})


def listed() -> list[str]:
    """The node containers on this engine, by name, in order."""
    names = docker("ps", "-a", "--filter", f"label={NODE_LABEL}", "--format", "{{.Names}}").split()
    return sorted(names, key=lambda name: int(name.removeprefix(NODE_PREFIX)))


def status() -> list[SwarmNode]:
    nodes = []
    for name in listed():
        state = _swarm_state(name)
        nodes.append(SwarmNode(name, state, _labels_of(name) if state != "absent" else {}))
    return nodes


def _manager_address() -> str:
    """docker0's address, where the nodes reach this engine; the swarm started here if it is not active yet."""
    bridge = docker("network", "inspect", "bridge", "--format", '{{index .Options "com.docker.network.bridge.name"}}')
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True).stdout.split()
    if "inet" not in shown:
        raise FLError(f"the engine's bridge {bridge or '(unnamed)'} has no IPv4 address for the nodes to reach it by")
    address = shown[shown.index("inet") + 1].split("/")[0]
    if not _swarm_active():
        docker("swarm", "init", "--advertise-addr", address)
        try:
            docker("node", "update", "--label-add", f"{STARTED_LABEL}=fl", _manager_id())
        except FLError:
            _leave()
            raise
    elif docker("info", "--format", "{{.Swarm.ControlAvailable}}") != "true":
        raise FLError("this engine is a worker of another swarm; the testbed's nodes join a swarm this engine manages")
    return address


def _swarm_active() -> bool:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}") == "active"


def _manager_id() -> str:
    return docker("info", "--format", "{{.Swarm.NodeID}}")


def _manager_labels() -> dict[str, str]:
    return _labels_of(_manager_id())


def _leave() -> None:
    """This engine out of the swarm, and the bridge the swarm made gone."""
    docker("swarm", "leave", "--force")
    if subprocess.run(["docker", "network", "inspect", "docker_gwbridge"], capture_output=True).returncode == 0:
        docker("network", "rm", "docker_gwbridge")


def _labels_of(node: str) -> dict[str, str]:
    text = docker("node", "inspect", node, "--format", "{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}} {{end}}")
    return dict(pair.split("=", 1) for pair in text.split())


def _swarm_state(name: str) -> str:
    if not _swarm_active():
        return "absent"
    inspect = ["docker", "node", "inspect", name, "--format", "{{.Status.State}}"]
    inspected = subprocess.run(inspect, capture_output=True, text=True)
    return inspected.stdout.strip() if inspected.returncode == 0 else "absent"


def _daemon_answers(name: str) -> bool:
    return subprocess.run(["docker", "exec", name, "docker", "version"], capture_output=True).returncode == 0


def _wait(condition, failure: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise FLError(failure)
        time.sleep(0.5)
