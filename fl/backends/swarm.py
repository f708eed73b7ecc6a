"""The swarm backend: the players on the nodes of a Docker Swarm this engine manages, the driver on this engine.

`up` renders the docker backend's project, splits it (fl/swarm/stack.py) and places each
player on a node (fl/swarm/placement.py); `docker stack deploy` starts the players and their
sidecars there, and once every task runs healthy, the driver's side starts here with Compose.
The swarm ignores `depends_on`, so readiness is polled task by task. Images reach the
nodes without a registry (`fl swarm up --load`, or `docker load` on each host), so the stack
never asks one (`--resolve-image never`).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from fl.backends import PlayerStatus, UpSettings
from fl.backends.docker import (
    GRAFANA_IMAGE,
    IMAGE,
    DockerBackend,
    _image_exists,
    _prometheus_port,
    compose,
    require_images,
    sidecar_service,
    startup_seconds,
    write_project,
)
from fl.backends.local import DEFAULT_STATE_DIR, player_names
from fl.cluster import Cluster
from fl.errors import FLError
from fl.swarm import placement, stack
from fl.swarm.nodes import docker

STACK_FILE = "stack.yaml"  # beside compose.yaml (this engine's side) in the compose directory
THIS_ENGINE_IMAGES = ("driver", "sidecar", "prometheus")
REJECTED = "Rejected"
REMOVAL_SECONDS = 60.0


def link_mtu() -> int:
    """The MTU of this engine's interface towards the nodes (its swarm address's), which the overlays ride on."""
    address = docker("info", "--format", "{{.Swarm.NodeAddr}}")
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    device = next((line.split()[1] for line in shown.splitlines() if f" {address}/" in line), None)
    if device is None:
        raise FLError(f"no interface of this host has the swarm's address {address}")
    return int(Path(f"/sys/class/net/{device}/mtu").read_text())


def _described(service: str, task: dict) -> str:
    error = f": {task['Error']}" if task["Error"] else ""
    return f"{service} on {task['Node'] or 'no node'} ({task['CurrentState']}{error})"


class SwarmBackend(DockerBackend):
    """The stack `<project>` on the swarm, and the Compose project `<project>` (driver side) on this engine."""

    name = "swarm"

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        super().__init__(state_dir)
        self.stack = self.project

    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        self._placement(settings, shaped_links)

    def _placement(self, settings: UpSettings, shaped_links: bool = False) -> dict[str, str]:
        """Player -> node, after refusing in one line what this backend cannot start."""
        if shaped_links:
            raise FLError("fl bench shapes links on the local and docker backends; the swarm backend has no profiles yet")
        if settings.tls is False:
            raise FLError("--no-tls: the swarm backend's links cross hosts, so they are always mutual TLS; drop --no-tls")
        if settings.data.own_data is not None:
            raise FLError(
                f"--data {settings.data.own_data}: on the swarm backend an owner's files would have to be on its node; "
                "use --backend docker for owners' own data, or let the owners split the public data set"
            )
        super().check(settings)
        if docker("info", "--format", "{{.Swarm.ControlAvailable}}") != "true":
            raise FLError(
                "this engine manages no swarm: `fl swarm up --nodes 3` makes one on this machine; with hosts of your "
                "own, `docker swarm init` here and `docker swarm join` on each (README, Several hosts)"
            )
        return placement.place(player_names(settings.owners), placement.testbed_nodes())

    def up(self, settings: UpSettings) -> Cluster:
        where = self._placement(settings)
        require_images([f"{IMAGE}-{target}" for target in THIS_ENGINE_IMAGES])
        self.record()
        grafana = _image_exists(GRAFANA_IMAGE)
        path = write_project(
            self.directory,
            settings.owners,
            settings.data,
            grafana=grafana,
            prometheus_port=_prometheus_port(),
            backend=self.name,
        )
        stack_file, this_engine = stack.render(yaml.safe_load(path.read_text()), self.directory, self.stack, where, link_mtu())
        header = f"# Rendered by `fl up --backend swarm --owners {settings.owners}`; edit fl/swarm/stack.py instead.\n"
        (self.directory / STACK_FILE).write_text(header + "# the players, on the swarm's nodes\n" + yaml.safe_dump(stack_file))
        path.write_text(header + "# the driver's side, on this engine\n" + yaml.safe_dump(this_engine, sort_keys=False))
        Path("results").mkdir(exist_ok=True)
        docker("stack", "deploy", "--resolve-image", "never", "--prune", "-c", str(self.directory / STACK_FILE), self.stack)
        cluster = Cluster.load(self.cluster_file)
        self._wait_tasks(startup_seconds(cluster) + 120)
        compose(self.project, self.directory, "up", "-d", "--remove-orphans")
        self._wait_healthy(startup_seconds(cluster))
        return cluster

    def _tasks(self) -> dict[str, dict]:
        """Each stack service's current task: its node, state and error."""
        listing = subprocess.run(
            ["docker", "stack", "ps", self.stack, "--no-trunc", "--format", "{{json .}}"], capture_output=True, text=True
        )
        if listing.returncode != 0:
            return {}
        current: dict[str, dict] = {}
        for task in map(json.loads, listing.stdout.splitlines()):
            service = task["Name"].removeprefix(f"{self.stack}_").rsplit(".", 1)[0]
            task["Error"] = task["Error"].strip('"')
            wanted = task["DesiredState"] == "Running"
            if service not in current or (wanted and current[service]["DesiredState"] != "Running"):
                current[service] = task  # the one the swarm wants running, else the newest (listed first)
        return current

    def _wait_tasks(self, timeout: float) -> None:
        """Until every task of the stack runs (a task with a healthcheck runs once healthy). The swarm retries a task
        that exits; one it rejects (no such image on its node, say) ends the wait at once."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self._tasks()
            waiting = {name: task for name, task in tasks.items() if not task["CurrentState"].startswith("Running")}
            if tasks and not waiting:
                return
            rejected = {name: task for name, task in waiting.items() if task["CurrentState"].startswith(REJECTED)}
            if rejected or time.monotonic() > deadline:
                listed = ", ".join(_described(name, task) for name, task in sorted((rejected or waiting).items()))
                raise FLError(f"stack {self.stack} not running: {listed or 'no tasks'}; see `fl logs`")
            time.sleep(2)

    def is_up(self) -> bool:
        return super().is_up() or bool(self._tasks())

    def status(self) -> list[PlayerStatus]:
        cluster = Cluster.load(self.cluster_file)
        tasks = self._tasks()
        rows = []
        for player in cluster.players:
            task = tasks.get(player.name, {"Node": "", "CurrentState": "absent"})
            sidecar = tasks.get(sidecar_service(player.name), {"CurrentState": "absent"})
            running = task["CurrentState"].startswith("Running")
            rows.append(
                PlayerStatus(
                    player=player.name,
                    role=player.role,
                    address=player.address,
                    process="running" if running else task["CurrentState"].split(" ")[0].lower(),
                    where=f"node {task['Node'] or '-'}",
                    server="answering" if running else "not answering",
                    link=f"mutual TLS via {sidecar_service(player.name)} ({sidecar['CurrentState'].split(' ')[0].lower()})",
                )
            )
        return rows

    def restart_player(self, name: str) -> None:
        """A new task for the player on its node (same volume, same name); return once it runs healthy."""
        docker("service", "update", "--force", "--detach", f"{self.stack}_{name}")
        self._wait_tasks(startup_seconds(Cluster.load(self.cluster_file)))

    def _remove(self, volumes: bool) -> list[str]:
        """This engine's side first (it is attached to the stack's overlay), then the stack, until its networks and
        tasks are gone. Players' volumes stay on their nodes even with `volumes` (`docker volume rm` there)."""
        services = sorted({*super()._remove(volumes), *self._tasks()})
        if subprocess.run(["docker", "stack", "rm", self.stack], capture_output=True).returncode == 0:
            deadline = time.monotonic() + REMOVAL_SECONDS
            while left := [*self._stack_networks(), *self._tasks()]:  # tasks stop on their nodes after `stack rm`
                if time.monotonic() > deadline:
                    raise FLError(f"stack {self.stack} still has {' '.join(left)} after {REMOVAL_SECONDS:g} s")
                time.sleep(1)
        return services

    def _stack_networks(self) -> list[str]:
        listed = docker("network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={self.stack}")
        return listed.split()

    @property
    def where(self) -> str:
        return f"stack {self.stack} on the swarm and Compose project {self.project} here, files in {self.directory}"

    def logs(self, lines: int) -> str:
        players = [
            subprocess.run(
                ["docker", "service", "logs", "--tail", str(lines), f"{self.stack}_{service}"], capture_output=True, text=True
            ).stdout
            for service in sorted(self._tasks())
        ]
        return "".join(players) + super().logs(lines)
