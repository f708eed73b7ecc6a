"""The docker backend: one container per player plus a driver container, via Docker Compose.

The Compose file is rendered from the same player list as the local backend, so
names and roles agree with the cluster file. Players sit on an internal network
with no published ports; each data owner's shard lives in its own volume, which
no other container mounts. Prometheus joins the players' network to scrape them
and a second network to publish its port (and Grafana's) on the host's loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from fl.backends.local import player_names
from fl.cluster import DATA_OWNER, MODEL_OWNER, Cluster, Player
from fl.data.datasets import SCHEMAS
from fl.errors import FLError
from fl.metrics import prometheus

PROJECT = "fl-testbed"
PLAYER_PORT = 7000
IMAGE = "fl-testbed"
CLUSTER_FILE_IN_CONTAINER = "/etc/fl/cluster.json"
DATA_DIR_IN_CONTAINER = "/data"
NETWORK = "players"
MONITORING_NETWORK = "monitoring"
METRICS_PORT = 9400
DRIVER_METRICS_FILE = "/tmp/fl-metrics/driver.prom"
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
GRAFANA_IMAGE = "grafana/grafana-oss:11.3.0"


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
    metrics = {
        "players": {player.name: f"{player.name}:{METRICS_PORT}" for player in players},
        "driver": f"driver:{METRICS_PORT}",
        "driver_textfile": DRIVER_METRICS_FILE,
        "prometheus": f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', PROMETHEUS_PORT)}",
    }
    cluster = Cluster(players=players, backend="docker", extra={"dataset": dataset, "metrics": metrics})
    return Cluster.from_dict(cluster.to_dict())


def render_compose(cluster: Cluster, image: str = IMAGE, grafana: bool = False) -> dict:
    """Paths are relative to compose/; the driver runs as the host user so results/ stays theirs."""
    cluster_mount = f"./cluster.json:{CLUSTER_FILE_IN_CONTAINER}:ro"
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
            "environment": {"FL_PORT": str(PLAYER_PORT)},
            # for `fl bench` network profiles (tc as root via docker exec); the player runs as a user without it
            "cap_add": ["NET_ADMIN"],
            # TF takes a while to import when seven containers start on two cores
            "healthcheck": {
                "test": ["CMD", "python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {PLAYER_PORT}), 1)"],
                "interval": "3s",
                "timeout": "2s",
                "retries": 5,
                "start_period": "300s",
            },
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
        "user": "${FL_UID:-1000}:${FL_GID:-1000}",
        "volumes": [cluster_mount, "../results:/home/fl/results"],
        "entrypoint": ["fl", "driver-metrics", "--config", CLUSTER_FILE_IN_CONTAINER],
        "depends_on": {player.name: {"condition": "service_healthy"} for player in cluster.players},
    }
    services.update(render_monitoring(image, grafana))
    volumes["prometheus-data"] = {}
    return {
        "services": services,
        "networks": {NETWORK: {"internal": True}, MONITORING_NETWORK: {}},
        "volumes": volumes,
    }


def render_monitoring(image: str, grafana: bool) -> dict[str, dict]:
    """Prometheus on both networks, its API on the host's loopback; Grafana provisioned from dashboards/."""
    ready = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PROMETHEUS_PORT}/-/ready', timeout=2)"
    services = {
        "prometheus": {
            "image": f"{image}-prometheus",
            "networks": [NETWORK, MONITORING_NETWORK],
            "ports": [f"127.0.0.1:${{PROMETHEUS_PORT:-{PROMETHEUS_PORT}}}:{PROMETHEUS_PORT}"],
            "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"],
            "healthcheck": {"test": ["CMD", "python3", "-c", ready], "interval": "3s", "timeout": "3s", "retries": 20},
        }
    }
    if grafana:
        services["grafana"] = {
            "image": GRAFANA_IMAGE,
            "networks": [MONITORING_NETWORK],
            "ports": [f"127.0.0.1:${{GRAFANA_PORT:-{GRAFANA_PORT}}}:{GRAFANA_PORT}"],
            "volumes": [
                "../dashboards/provisioning:/etc/grafana/provisioning:ro",
                "../dashboards:/var/lib/grafana/dashboards:ro",
            ],
            "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
            "depends_on": {"prometheus": {"condition": "service_healthy"}},
        }
    return services


IMAGE_TARGETS = ("player", "driver", "prometheus")
COMPOSE_DIR = Path("compose")  # the rendered compose.yaml, cluster.json and prometheus.yml


def is_up() -> bool:
    """True while containers of the project exist (running or stopped)."""
    return shutil.which("docker") is not None and bool(_labelled("ps", "-aq"))


def up(owners: int, dataset_name: str = "digits", seed: int = 0) -> Cluster:
    """Render the project, start every container, return once all players are healthy."""
    if not engine_answers():
        raise FLError("no Docker engine answers: start Docker, or use --backend local")
    dataset = dataset_settings(dataset_name, seed)
    missing = [f"{IMAGE}-{target}" for target in IMAGE_TARGETS if not _image_exists(f"{IMAGE}-{target}")]
    if missing:
        raise FLError(f"image(s) {', '.join(missing)} not built: run `make images` first")
    directory = COMPOSE_DIR
    grafana = _image_exists(GRAFANA_IMAGE)
    if not grafana:
        print(
            f"monitoring: NO GRAFANA ({GRAFANA_IMAGE} is not here and cannot be pulled; Debian ships no Grafana): "
            "Prometheus answers every dashboard query; import dashboards/*.json into any Grafana"
        )
    write_project(directory, owners, dataset, grafana=grafana)
    Path("results").mkdir(exist_ok=True)
    compose(directory, "up", "-d", "--remove-orphans")
    return Cluster.load(directory / "cluster.json")


def dataset_settings(dataset_name: str, seed: int = 0) -> dict:
    """What each owner container needs to prepare its own shard (SIMULATION ONLY)."""
    if dataset_name not in SCHEMAS:
        raise FLError(f"the docker backend prepares {', '.join(SCHEMAS)} inside the owners; {dataset_name!r} is not one")
    return {"name": dataset_name, **SCHEMAS[dataset_name], "partition": "iid", "alpha": 0.5, "seed": seed}


def status() -> list[dict]:
    directory = COMPOSE_DIR
    cluster = Cluster.load(directory / "cluster.json")
    rows = []
    for player in cluster.players:
        inspected = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                container_name(player.name),
            ],
            capture_output=True,
            text=True,
        )
        state_text = inspected.stdout.split() if inspected.returncode == 0 else ["absent"]
        rows.append(
            {
                "player": player.name,
                "role": player.role,
                "address": player.address,
                "pid": container_name(player.name),
                "process": state_text[0],
                "server": "answering" if state_text[1:] == ["healthy"] else "not answering",
            }
        )
    return rows


def down() -> list[str]:
    """Remove the containers, networks and volumes of the project; return the services that were there.

    Works without the rendered files too (a project started from another checkout, or
    left behind by a killed run): whatever carries the project's label goes.
    """
    services = sorted(set(_labelled("ps", "-a", "--format", '{{.Label "com.docker.compose.service"}}')))
    if (COMPOSE_DIR / "compose.yaml").exists():
        compose(COMPOSE_DIR, "down", "--volumes", "--remove-orphans")
    for listing, removal in (
        (("ps", "-aq"), ("rm", "-f")),
        (("network", "ls", "-q"), ("network", "rm")),
        (("volume", "ls", "-q"), ("volume", "rm")),
    ):
        leftovers = _labelled(*listing)
        if leftovers and subprocess.run(["docker", *removal, *leftovers], capture_output=True).returncode != 0:
            command = f"docker {' '.join(removal)} {' '.join(leftovers)}"
            raise FLError(f"could not remove what project {PROJECT} left behind: run `{command}` and see why")
    return services


def _labelled(*listing: str) -> list[str]:
    """What `docker <listing>` prints for the objects that carry this project's Compose label."""
    listed = subprocess.run(
        ["docker", *listing, "--filter", f"label=com.docker.compose.project={PROJECT}"], capture_output=True, text=True
    )
    return listed.stdout.split() if listed.returncode == 0 else []


def run_in_driver(argv: list[str]) -> int:
    return compose(COMPOSE_DIR, "exec", "-T", "driver", *argv, check=False).returncode


def container_name(service: str) -> str:
    """Compose v1 and v2 both name the first replica <project>_<service>_1 or <project>-<service>-1."""
    for separator in ("-", "_"):
        name = separator.join([PROJECT, service, "1"])
        if subprocess.run(["docker", "inspect", name], capture_output=True).returncode == 0:
            return name
    return f"{PROJECT}-{service}-1"


def _image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def write_project(directory: Path, owners: int, dataset: dict, image: str = IMAGE, grafana: bool = False) -> Path:
    """Write the cluster file, prometheus.yml and compose.yaml for `owners` data owners; return the compose file."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = container_cluster(owners, dataset)
    cluster.save(directory / "cluster.json")
    prometheus.write_scrape_config(cluster, directory / "prometheus.yml")
    compose = render_compose(cluster, image, grafana)
    path = directory / "compose.yaml"
    header = f"# Rendered by `fl up --backend docker --owners {owners}`; edit fl/backends/docker.py instead.\n"
    path.write_text(header + yaml.safe_dump(compose, sort_keys=False))
    return path


def compose(directory: Path, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    command = [*compose_command(), "-p", PROJECT, "-f", str(directory / "compose.yaml"), *args]
    environment = {**os.environ, "FL_UID": str(os.getuid()), "FL_GID": str(os.getgid())}
    result = subprocess.run(command, capture_output=capture, text=True, env=environment)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise FLError(f"`{' '.join(command[-len(args) :])}` failed{': ' + detail[0] if detail else ''}")
    return result
