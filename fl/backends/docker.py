"""The docker backend: one container per player plus a driver container, via Docker Compose.

The Compose file is rendered from the same player list as the local backend, so names
and roles agree with the cluster file. With mutual TLS (the default), each player's TF
server and the driver sit alone on a private network (`link-<name>`) with their sidecar
(`<name>-tls`, HAProxy, see fl/mesh/), which alone joins the players' network: on the
private link the sidecar answers to every peer's name, so whatever the TF server dials
leaves through it with this player's certificate, and whatever arrives from the players'
network has passed its handshake and method policy. Each identity's key is mounted into
its own sidecar only. `tls=False` renders the earlier plaintext layout (every TF server
on the players' network), kept for measuring what TLS costs.

Players' networks are internal, no player port is published; each owner's shard lives in
its own volume, which no other container mounts. Prometheus joins the players' network to
scrape the sidecars and a second network to publish its port on the host's loopback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fl import driver_lock
from fl.backends import Backend, DataSettings, PlayerStatus, UpSettings, check_owners
from fl.backends.local import DEFAULT_STATE_DIR, free_ports, player_names, port_free
from fl.cluster import (
    DATA_OWNER,
    DRIVER,
    MODEL_OWNER,
    MONITOR,
    OWN_DATA_DIR,
    OWN_NAMESPACE,
    Cluster,
    DatasetInfo,
    Mesh,
    MetricsEndpoints,
    Player,
)
from fl.data.datasets import OFFLINE
from fl.errors import FLError
from fl.mesh.pki import CA_FILE, IDENTITY_FILE, ClusterPKI
from fl.metrics import dashboard, prometheus

PROJECT_PREFIX = "fl-testbed"
PLAYER_PORT = 7000
SIDECAR_PORT = 7443
SIDECAR_METRICS_PORT = 9401
IMAGE = "fl-testbed"
CLUSTER_FILE_IN_CONTAINER = "/etc/fl/cluster.json"
TLS_DIR_IN_CONTAINER = "/etc/fl/tls"
PROMETHEUS_TLS_DIR = "/run/prometheus-tls"  # where Prometheus's entrypoint copies its identity for the nobody user
DATA_DIR_IN_CONTAINER = "/data"
NETWORK = "players"
MONITORING_NETWORK = "monitoring"
METRICS_PORT = 9400
DRIVER_METRICS_FILE = "/tmp/fl-metrics/driver.prom"
PROMETHEUS_PORT = 9090
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_STORAGE = "/prometheus"  # the prometheus-data volume, owned by nobody in the image
DASHBOARD_DIR = "dashboard"  # in the compose directory: the page Prometheus serves at /user/
GRAFANA_PORT = 3000
GRAFANA_IMAGE = "grafana/grafana-oss:11.3.0"
IMAGE_TARGETS = ("player", "driver", "sidecar", "prometheus")
COMPOSE_DIR = "compose"  # in the state directory: the rendered compose.yaml, cluster.json, prometheus.yml and PKI
PKI_DIR = "pki"  # under COMPOSE_DIR: one directory per identity, each mounted into its own sidecar only
# under COMPOSE_DIR, mounted into the driver only: `fl run`'s copies of scripts (read-only there) and their results
RUNS_DIR = "runs"
RUNS_IN_CONTAINER = "/runs"
# every player imports TensorFlow at once, on two cores here: start-up time grows with the number of players
STARTUP_SECONDS_PER_PLAYER = 40


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) where present, else the standalone `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise FLError("neither `docker compose` nor `docker-compose` is installed; install Docker Compose or use --backend local")


def project_name(state_dir: Path) -> str:
    """One Compose project per state directory, so testbeds of several checkouts (or state dirs) coexist."""
    resolved = Path(state_dir).resolve()
    return f"{PROJECT_PREFIX}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def engine_answers() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def sidecar_service(identity: str) -> str:
    return f"{identity}-tls"


def link_network(identity: str) -> str:
    """The private network between an identity's TF server (or the driver) and its sidecar."""
    return f"link-{identity}"


def container_cluster(
    owners: int,
    dataset: DatasetInfo | None,
    tls: bool = True,
    prometheus_port: int = PROMETHEUS_PORT,
    backend: str = "docker",
) -> Cluster:
    """Each player is its own host `name:7000` and keeps its own files in /data."""
    players = [
        Player(name, f"{name}:{PLAYER_PORT}", role, index, DATA_DIR_IN_CONTAINER)
        for index, (name, role) in enumerate(player_names(owners))
    ]
    identities = [*(player.name for player in players), DRIVER]
    if tls:
        mesh = Mesh({name: sidecar_service(name) for name in identities}, SIDECAR_PORT, SIDECAR_METRICS_PORT)
        scrape_targets = {name: f"{sidecar_service(name)}:{SIDECAR_METRICS_PORT}" for name in identities}
    else:
        mesh = None
        scrape_targets = {name: f"{name}:{METRICS_PORT}" for name in identities}
    metrics = MetricsEndpoints(
        players={player.name: f"{player.name}:{METRICS_PORT}" for player in players},
        scrape_targets=scrape_targets,
        driver=f"{DRIVER}:{METRICS_PORT}",
        driver_textfile=DRIVER_METRICS_FILE,
        prometheus=f"http://127.0.0.1:{prometheus_port}",
        listen_host="0.0.0.0",
        wire_bytes=OWN_NAMESPACE,
    )
    cluster = Cluster(players=players, backend=backend, metrics=metrics, dataset=dataset, mesh=mesh)
    return Cluster.from_dict(cluster.to_dict())


def render_compose(
    cluster: Cluster,
    image: str = IMAGE,
    grafana: bool = False,
    results: Path = Path("results"),
    own_data: Path | None = None,
) -> dict:
    """Paths of generated files are relative to the compose file; the driver runs as the host user so `results`
    stays theirs. `own_data`: each owner's own directory `own_data/<name>` is mounted read-only into its container
    only; else the owners split the public data set `cluster.dataset` themselves."""
    cluster_mount = f"./cluster.json:{CLUSTER_FILE_IN_CONTAINER}:ro"
    dataset = cluster.dataset
    mesh = cluster.mesh
    services: dict[str, dict] = {}
    volumes: dict[str, dict] = {}
    networks: dict[str, dict] = {NETWORK: {"internal": True}, MONITORING_NETWORK: {}}
    for player in cluster.players:
        command = f"exec fl player {player.name} --config {CLUSTER_FILE_IN_CONTAINER}"
        service = {
            "image": f"{image}-player",
            "hostname": player.name,
            "networks": [link_network(player.name)] if mesh else [NETWORK],
            "volumes": [cluster_mount],
            "entrypoint": ["sh", "-c"],
            "command": [command],
            "environment": {"FL_PORT": str(PLAYER_PORT)},
            "healthcheck": _port_answers(PLAYER_PORT, startup_seconds(cluster)),
        }
        if not mesh:  # for `fl bench` network profiles (tc as root via docker exec); with TLS the sidecar's link is shaped
            service["cap_add"] = ["NET_ADMIN"]
        if player.role in (DATA_OWNER, MODEL_OWNER):
            volume = f"{player.name}-data"
            volumes[volume] = {}
            service["volumes"].append(f"{volume}:{DATA_DIR_IN_CONTAINER}")
            if own_data is not None:
                own = (Path(own_data) / player.name).resolve()
                service["volumes"].append(f"{own}:{DATA_DIR_IN_CONTAINER}/{OWN_DATA_DIR}:ro")
            else:
                # SIMULATION ONLY: the owner writes its own shard of the public data set before serving
                prepare = (
                    f"fl split --only {player.name} --dataset {dataset.name} --seed {dataset.seed} "
                    f"--partition {dataset.partition} --alpha {dataset.alpha} --config {CLUSTER_FILE_IN_CONTAINER}"
                )
                service["command"] = [f"{prepare} && {command}"]
        services[player.name] = service
    ready = {player.name: {"condition": "service_healthy"} for player in cluster.players}
    services[DRIVER] = {
        "image": f"{image}-driver",
        "hostname": DRIVER,
        "networks": [link_network(DRIVER)] if mesh else [NETWORK],
        "user": "${FL_UID:-1000}:${FL_GID:-1000}",
        "volumes": [
            cluster_mount,
            f"{results.resolve()}:/home/fl/results",
            f"./{RUNS_DIR}/scripts:{RUNS_IN_CONTAINER}/scripts:ro",
            f"./{RUNS_DIR}/results:{RUNS_IN_CONTAINER}/results",
        ],
        "entrypoint": ["fl", "driver-metrics", "--config", CLUSTER_FILE_IN_CONTAINER],
    }
    if mesh:
        identities = [*(player.name for player in cluster.players), DRIVER]
        for identity in identities:
            networks[link_network(identity)] = {"internal": True}
            services[sidecar_service(identity)] = render_sidecar(cluster, identity, image, cluster_mount)
        ready.update({sidecar_service(player.name): {"condition": "service_healthy"} for player in cluster.players})
    services[DRIVER]["depends_on"] = ready
    prometheus_port = int(cluster.metrics.prometheus.rsplit(":", 1)[1])
    services.update(render_monitoring(image, grafana, tls=mesh is not None, prometheus_port=prometheus_port))
    volumes["prometheus-data"] = {}
    return {"services": services, "networks": networks, "volumes": volumes}


def render_sidecar(cluster: Cluster, identity: str, image: str, cluster_mount: str) -> dict:
    """`identity`'s TLS sidecar: on the players' network as `<identity>-tls`, on its private link as every peer."""
    peers = [player.name for player in cluster.players if player.name != identity]
    return {
        "image": f"{image}-sidecar",
        "hostname": sidecar_service(identity),
        "command": [
            identity,
            "--config",
            CLUSTER_FILE_IN_CONTAINER,
            "--certificate",
            f"{TLS_DIR_IN_CONTAINER}/{IDENTITY_FILE}",
            "--ca",
            f"{TLS_DIR_IN_CONTAINER}/{CA_FILE}",
        ],
        # this identity's key and the CA certificate, nobody else's key, never the CA's key
        "volumes": [cluster_mount, f"./{PKI_DIR}/{identity}:{TLS_DIR_IN_CONTAINER}:ro"],
        "networks": {NETWORK: {}, link_network(identity): {"aliases": peers}},
        "cap_add": ["NET_ADMIN"],  # `fl bench` shapes this link with tc (docker exec as root)
        "depends_on": {identity: {"condition": "service_started"}},
        "healthcheck": _port_answers(SIDECAR_METRICS_PORT, startup_seconds(cluster)),
    }


def startup_seconds(cluster: Cluster) -> int:
    """How long a cluster may take to come up before a silent container counts as unhealthy."""
    return max(300, STARTUP_SECONDS_PER_PLAYER * len(cluster.players))


def _port_answers(port: int, start_period: int) -> dict:
    """bash's /dev/tcp rather than a Python probe: dozens of interpreters starting every few seconds on a loaded
    machine can miss their timeout and mark healthy containers unhealthy (8 owners on 2 cores did not come up
    with Python probes and a fixed start period; they did with these)."""
    return {
        "test": ["CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
        "interval": "3s",
        "timeout": "10s",
        "retries": 10,
        "start_period": f"{start_period}s",
    }


def render_monitoring(image: str, grafana: bool, tls: bool, prometheus_port: int = PROMETHEUS_PORT) -> dict[str, dict]:
    """Prometheus on both networks, its API on the host's loopback; Grafana provisioned from dashboards/.

    With mutual TLS, Prometheus holds its own identity (`prometheus`) and scrapes the sidecars with it.
    """
    ready = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PROMETHEUS_PORT}/-/ready', timeout=2)"
    services = {
        "prometheus": {
            "image": f"{image}-prometheus",
            "networks": [NETWORK, MONITORING_NETWORK],
            "ports": [f"127.0.0.1:{prometheus_port}:{PROMETHEUS_PORT}"],
            "command": prometheus.arguments(
                PROMETHEUS_CONFIG, PROMETHEUS_STORAGE, f"0.0.0.0:{PROMETHEUS_PORT}", dashboard.ASSETS_IN_CONTAINER
            ),
            "volumes": [
                f"./prometheus.yml:{PROMETHEUS_CONFIG}:ro",
                f"./{DASHBOARD_DIR}:{dashboard.ASSETS_IN_CONTAINER}:ro",
                f"prometheus-data:{PROMETHEUS_STORAGE}",
            ],
            "healthcheck": {"test": ["CMD", "python3", "-c", ready], "interval": "3s", "timeout": "3s", "retries": 20},
        }
    }
    if tls:
        services["prometheus"]["volumes"].append(f"./{PKI_DIR}/{MONITOR}:{TLS_DIR_IN_CONTAINER}:ro")
        services["prometheus"]["environment"] = {"FL_TLS_MOUNT": TLS_DIR_IN_CONTAINER, "FL_TLS_COPY": PROMETHEUS_TLS_DIR}
    if grafana:
        services["grafana"] = {
            "image": GRAFANA_IMAGE,
            "networks": [MONITORING_NETWORK],
            "ports": [f"127.0.0.1:${{GRAFANA_PORT:-{GRAFANA_PORT}}}:{GRAFANA_PORT}"],
            "volumes": [
                f"{dashboard.DASHBOARDS / 'provisioning'}:/etc/grafana/provisioning:ro",
                f"{dashboard.DASHBOARDS}:/var/lib/grafana/dashboards:ro",
            ],
            "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
            "depends_on": {"prometheus": {"condition": "service_healthy"}},
        }
    return services


def dataset_settings(data: DataSettings, owners: int) -> DatasetInfo | None:
    """What each owner container needs to prepare its own shard (SIMULATION ONLY), with each shard's size;
    None when the owners bring their own data."""
    if data.own_data is not None:
        return None
    if data.dataset not in OFFLINE:
        raise FLError(f"the docker backend prepares {', '.join(OFFLINE)} inside the owners; {data.dataset!r} is not one")
    return data.shards([name for name, role in player_names(owners) if role == DATA_OWNER])


def write_project(
    directory: Path,
    owners: int,
    data: DataSettings,
    image: str = IMAGE,
    grafana: bool = False,
    tls: bool = True,
    prometheus_port: int = PROMETHEUS_PORT,
    results: Path = Path("results"),
    backend: str = "docker",
) -> Path:
    """Write the cluster file, prometheus.yml and compose.yaml for `owners` data owners; return the compose file.
    `backend`: the one the cluster file names (the swarm backend deploys this project split in two).

    With TLS, the cluster's PKI in `directory/pki/` is created or reused first (`fl certs --rotate` renews it).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cluster = container_cluster(owners, dataset_settings(data, owners), tls, prometheus_port, backend)
    scrape_tls = None
    if cluster.mesh:
        issued = ClusterPKI(directory / PKI_DIR).ensure(identities(cluster))
        if issued:
            print(f"pki: issued certificates for {', '.join(issued)} (CA and keys in {directory / PKI_DIR})")
        identity_file = f"{PROMETHEUS_TLS_DIR}/{IDENTITY_FILE}"
        scrape_tls = {"ca_file": f"{PROMETHEUS_TLS_DIR}/{CA_FILE}", "cert_file": identity_file, "key_file": identity_file}
    cluster.save(directory / "cluster.json")
    for runs in ("scripts", "results"):  # made here, so they belong to the user and not to the engine
        (directory / RUNS_DIR / runs).mkdir(parents=True, exist_ok=True)
    prometheus.write_scrape_config(cluster, directory / "prometheus.yml", scrape_tls)
    dashboard.write_assets(directory / DASHBOARD_DIR)
    compose = render_compose(cluster, image, grafana, results, data.own_data)
    path = directory / "compose.yaml"
    header = f"# Rendered by `fl up --backend docker --owners {owners}`; edit fl/backends/docker.py instead.\n"
    path.write_text(header + yaml.safe_dump(compose, sort_keys=False))
    return path


def identities(cluster: Cluster) -> dict[str, list[str]]:
    """Who gets a certificate, and the names each is reached by: a sidecar as its player and as its own host."""
    names = {identity: [identity, sidecar] for identity, sidecar in cluster.mesh.sidecars.items()}
    return {**names, MONITOR: [MONITOR]}


def compose(project: str, directory: Path, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    command = [*compose_command(), "-p", project, "-f", str(directory / "compose.yaml"), *args]
    environment = {**os.environ, "FL_UID": str(os.getuid()), "FL_GID": str(os.getgid())}
    result = subprocess.run(command, capture_output=capture, text=True, env=environment)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise FLError(f"`{' '.join(command[-len(args) :])}` failed{': ' + detail[0] if detail else ''}")
    return result


def container_name(project: str, service: str) -> str:
    """Compose v1 and v2 both name the first replica <project>_<service>_1 or <project>-<service>-1."""
    for separator in ("-", "_"):
        name = separator.join([project, service, "1"])
        if subprocess.run(["docker", "inspect", name], capture_output=True).returncode == 0:
            return name
    return f"{project}-{service}-1"


def _prometheus_port() -> int:
    """PROMETHEUS_PORT if set, else 9090 when free (another testbed may hold it), else any free port."""
    if "PROMETHEUS_PORT" in os.environ:
        return int(os.environ["PROMETHEUS_PORT"])
    return PROMETHEUS_PORT if port_free(PROMETHEUS_PORT) else free_ports(1)[0]


def _image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def require_images(images: list[str]) -> None:
    missing = [image for image in images if not _image_exists(image)]
    if missing:
        raise FLError(f"no image {', '.join(missing)} on this engine: build it with `make images`")


def _labelled(project: str, *listing: str) -> list[str]:
    """What `docker <listing>` prints for the objects that carry `project`'s Compose label."""
    listed = subprocess.run(
        ["docker", *listing, "--filter", f"label=com.docker.compose.project={project}"], capture_output=True, text=True
    )
    return listed.stdout.split() if listed.returncode == 0 else []


def _inspect(container: str, template: str) -> list[str] | None:
    inspected = subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True)
    return inspected.stdout.split() if inspected.returncode == 0 else None


def _health(container: str) -> str:
    """`healthy`, `unhealthy`, `starting`, or the container's state when it has no healthcheck or is not running."""
    state = _inspect(container, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
    if state is None:
        return "absent"
    return state[1] if state[0] == "running" and len(state) > 1 else state[0]


class DockerBackend(Backend):
    """The Compose project of one state directory: its rendered files in `<state dir>/compose/`."""

    name = "docker"
    driver_is_this_host = False

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        super().__init__(state_dir)
        self.directory = self.state_dir / COMPOSE_DIR
        self.project = project_name(self.state_dir)

    @property
    def cluster_file(self) -> Path:
        return self.directory / "cluster.json"

    @property
    def driver_cluster_file(self) -> str:
        return CLUSTER_FILE_IN_CONTAINER

    def container(self, service: str) -> str:
        return container_name(self.project, service)

    def is_up(self) -> bool:
        """True while containers of the project exist (running or stopped)."""
        return shutil.which("docker") is not None and bool(_labelled(self.project, "ps", "-aq"))

    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        if settings.insecure_randomness:
            raise FLError("--insecure-randomness is for the local backend; the images carry the secure-random op")
        if not engine_answers():
            raise FLError("no Docker engine answers: start Docker, or use --backend local")
        check_owners(settings.owners)
        settings.data.check([name for name, role in player_names(settings.owners) if role in (DATA_OWNER, MODEL_OWNER)])

    def up(self, settings: UpSettings) -> Cluster:
        """Render the project, start every container, return once every healthcheck passes."""
        self.check(settings)
        require_images([f"{IMAGE}-{target}" for target in IMAGE_TARGETS])
        grafana = _image_exists(GRAFANA_IMAGE)
        if not grafana:
            print(
                f"monitoring: NO GRAFANA ({GRAFANA_IMAGE} is not here and cannot be pulled; Debian ships no Grafana): "
                "Prometheus answers every dashboard query; import dashboards/*.json into any Grafana"
            )
        tls = settings.tls is not False
        if not tls:
            print("links: PLAINTEXT (--no-tls): anyone on the players' network can read and place work on every player")
        self.record()
        write_project(
            self.directory, settings.owners, settings.data, grafana=grafana, tls=tls, prometheus_port=_prometheus_port()
        )
        Path("results").mkdir(exist_ok=True)
        compose(self.project, self.directory, "up", "-d", "--remove-orphans")
        cluster = Cluster.load(self.cluster_file)
        self._wait_healthy(startup_seconds(cluster) + 120)
        return cluster

    def _services(self) -> list[str]:
        """The Compose services of the project that have a container, running or not."""
        return sorted(set(_labelled(self.project, "ps", "-a", "--format", '{{.Label "com.docker.compose.service"}}')))

    def _wait_healthy(self, timeout: float) -> None:
        services = self._services()
        deadline = time.monotonic() + timeout
        while True:
            waiting = {service: _health(self.container(service)) for service in services}
            waiting = {service: health for service, health in waiting.items() if health not in ("healthy", "running")}
            if not waiting:
                return
            if time.monotonic() > deadline or any(health in ("exited", "dead", "absent") for health in waiting.values()):
                listed = ", ".join(f"{service} ({health})" for service, health in sorted(waiting.items()))
                raise FLError(f"not healthy after {time.monotonic() - deadline + timeout:.0f}s: {listed}; see `make logs`")
            time.sleep(1)

    def status(self) -> list[PlayerStatus]:
        cluster = Cluster.load(self.cluster_file)
        rows = []
        for player in cluster.players:
            container = self.container(player.name)
            health = _health(container)
            link = "plaintext"
            if cluster.mesh:
                sidecar = sidecar_service(player.name)
                link = f"mutual TLS via {sidecar} ({_health(self.container(sidecar))})"
            rows.append(
                PlayerStatus(
                    player=player.name,
                    role=player.role,
                    address=player.address,
                    process="running" if health in ("healthy", "unhealthy", "starting") else health,
                    where=container,
                    server="answering" if health == "healthy" else "not answering",
                    link=link,
                )
            )
        return rows

    def restart_player(self, name: str) -> None:
        """`docker kill` then `docker start`: the container keeps its volume, its sidecar and its address."""
        container = self.container(name)
        for action in ("kill", "start"):
            done = subprocess.run(["docker", action, container], capture_output=True, text=True)
            if done.returncode != 0:
                raise FLError(f"docker {action} {container} failed: {done.stderr.strip()}")
        self._wait_healthy(STARTUP_SECONDS_PER_PLAYER * 3)

    def down(self, volumes: bool = False) -> list[str]:
        """Remove the project's containers and networks (and, with `volumes`, its volumes: shards, Prometheus's data).

        Works without the rendered files too (a killed `fl up`): whatever carries the project's label goes.
        """
        services = self._remove(volumes)
        self.forget()
        return services

    def _remove(self, volumes: bool) -> list[str]:
        services = self._services()
        if (self.directory / "compose.yaml").exists():
            compose(self.project, self.directory, "down", "--remove-orphans", *(["--volumes"] if volumes else []))
        removals = [(("ps", "-aq"), ("rm", "-f")), (("network", "ls", "-q"), ("network", "rm"))]
        if volumes:
            removals.append((("volume", "ls", "-q"), ("volume", "rm")))
        for listing, removal in removals:
            leftovers = _labelled(self.project, *listing)
            if leftovers and subprocess.run(["docker", *removal, *leftovers], capture_output=True).returncode != 0:
                command = f"docker {' '.join(removal)} {' '.join(leftovers)}"
                raise FLError(f"could not remove what project {self.project} left behind: run `{command}` and see why")
        return services

    @property
    def where(self) -> str:
        return f"Compose project {self.project}, files in {self.directory}"

    def logs(self, lines: int) -> str:
        return compose(self.project, self.directory, "logs", "--tail", str(lines), capture=True).stdout

    def exec(self, argv: list[str], options: Sequence[str] = (), **popen: Any) -> subprocess.Popen:
        return subprocess.Popen(["docker", "exec", *options, self.container(DRIVER), *argv], **popen)

    def interrupt_driver(self) -> None:
        """`docker exec` does not forward signals: send SIGINT to the pid in the driver's lock, inside the container."""
        lock = driver_lock.lock_path(CLUSTER_FILE_IN_CONTAINER, directory="/tmp")
        signal_it = f'pid=$(cat {lock} 2>/dev/null) && [ -n "$pid" ] && kill -INT "$pid"'
        subprocess.run(["docker", "exec", self.container(DRIVER), "sh", "-c", signal_it], capture_output=True)

    def driver_stopped(self) -> str | None:
        name = self.container(DRIVER)
        state = _inspect(name, "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}")
        if state is None:
            return f"the driver container {name} is gone: `fl down` and `fl up` start the cluster again"
        status, exit_code, out_of_memory = state
        if status == "running":
            return None
        cause = " (out of memory)" if out_of_memory == "true" else " (killed)" if exit_code == "137" else ""
        return (
            f"the driver container {name} stopped{cause} during the run ({status}, exit code {exit_code}), so the model "
            f"is as of its last checkpoint: `docker start {name}` starts it again (or `fl up --state-dir {self.state_dir}` "
            "with the options the cluster was started with), then `--resume` goes on from that checkpoint"
        )

    def reload_sidecars(self, cluster: Cluster) -> list[str]:
        """HAProxy re-reads its certificates on SIGUSR2 (new connections use them; open ones finish on the old)."""
        reloaded = []
        for identity in cluster.mesh.sidecars.values():
            container = self.container(identity)
            if _health(container) in ("healthy", "starting", "unhealthy"):
                subprocess.run(["docker", "kill", "-s", "USR2", container], check=True, capture_output=True)
                reloaded.append(identity)
        return reloaded

    def shaped_links(self, cluster: Cluster) -> list[tuple[str, str]]:
        """(container, address) of each player's interface on the players' network: where `fl bench` shapes traffic."""
        links = []
        for player in cluster.players:
            container = self.container(sidecar_service(player.name) if cluster.mesh else player.name)
            template = "{{range $name, $network := .NetworkSettings.Networks}}{{$name}}={{$network.IPAddress}} {{end}}"
            addresses = dict(entry.split("=", 1) for entry in _inspect(container, template) or [])
            address = next((ip for name, ip in addresses.items() if name.endswith(f"_{NETWORK}")), None)
            if address is None:
                raise FLError(f"{container} is not on the players' network; is the cluster up (`fl status`)?")
            links.append((container, address))
        return links
