"""The docker backend: one container per player plus a driver container, via Docker Compose.

The Compose file is rendered from the same player list as the local backend, so
names and roles agree with the cluster file. Players sit on an internal network
with no published ports; each data owner's shard lives in its own volume, which
no other container mounts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from fl.backends.local import player_names
from fl.cluster import DATA_OWNER, MODEL_OWNER, Cluster, Player
from fl.errors import FLError

PROJECT = "fl-testbed"
PLAYER_PORT = 7000
IMAGE = "fl-testbed"
CLUSTER_FILE_IN_CONTAINER = "/etc/fl/cluster.json"
DATA_DIR_IN_CONTAINER = "/data"
NETWORK = "players"


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) where present, else the standalone `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise FLError("neither `docker compose` nor `docker-compose` is installed; install Docker Compose or use --backend local")


def engine_answers() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def container_cluster(owners: int, dataset: dict) -> Cluster:
    """Each player is its own host `name:7000`; every player keeps its own files in /data."""
    players = [
        Player(name, f"{name}:{PLAYER_PORT}", role, index, DATA_DIR_IN_CONTAINER)
        for index, (name, role) in enumerate(player_names(owners))
    ]
    cluster = Cluster(players=players, backend="docker", extra={"dataset": dataset})
    return Cluster.from_dict(cluster.to_dict())


def render_compose(cluster: Cluster, cluster_file: str, image: str = IMAGE) -> dict:
    cluster_mount = f"{cluster_file}:{CLUSTER_FILE_IN_CONTAINER}:ro"
    dataset = cluster.extra["dataset"]
    services: dict[str, dict] = {}
    volumes: dict[str, dict] = {}
    for player in cluster.players:
        command = f"exec fl player {player.name} --config {CLUSTER_FILE_IN_CONTAINER}"
        service = {
            "image": f"{image}-player",
            "hostname": player.name,
            "networks": [NETWORK],
            "volumes": [cluster_mount],
            "entrypoint": ["sh", "-c"],
            "command": [command],
        }
        if player.role in (DATA_OWNER, MODEL_OWNER):
            volume = f"{player.name}-data"
            volumes[volume] = {}
            service["volumes"].append(f"{volume}:{DATA_DIR_IN_CONTAINER}")
            # SIMULATION ONLY: the owner writes its own shard of the public data set before serving
            prepare = (
                f"fl split --only {player.name} --dataset {dataset['name']} --seed {dataset['seed']} "
                f"--partition {dataset['partition']} --alpha {dataset['alpha']} --config {CLUSTER_FILE_IN_CONTAINER}"
            )
            service["command"] = [f"{prepare} && {command}"]
        services[player.name] = service
    services["driver"] = {
        "image": f"{image}-driver",
        "hostname": "driver",
        "networks": [NETWORK],
        "volumes": [cluster_mount, "./results:/home/fl/results"],
        "depends_on": {player.name: {"condition": "service_healthy"} for player in cluster.players},
    }
    return {
        "services": services,
        "networks": {NETWORK: {"internal": True}},
        "volumes": volumes,
    }


def write_project(directory: Path, owners: int, dataset: dict, image: str = IMAGE) -> Path:
    """Write the cluster file and compose.yaml for `owners` data owners; return the compose file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results").mkdir(exist_ok=True)
    cluster = container_cluster(owners, dataset)
    cluster.save(directory / "cluster.json")
    compose = render_compose(cluster, "./cluster.json", image)
    path = directory / "compose.yaml"
    header = f"# Rendered by `fl up --backend docker --owners {owners}`; edit fl/backends/docker.py instead.\n"
    path.write_text(header + yaml.safe_dump(compose, sort_keys=False))
    return path


def compose(directory: Path, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    command = [*compose_command(), "-p", PROJECT, "-f", str(directory / "compose.yaml"), *args]
    result = subprocess.run(command, capture_output=capture, text=True)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise FLError(f"`{' '.join(command[-len(args) :])}` failed{': ' + detail[0] if detail else ''}")
    return result
